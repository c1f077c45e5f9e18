"""Evaluation: Rouge-L against the rouge-score package on hand-checked cases, exact match,
the cls/gen aggregation, and evaluate_pool on the actor pool with resumable parts."""
from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from rouge_score import rouge_scorer

from raysys.config import EvalConfig, GenerationConfig, PromptConfig, SynthConfig
from raysys.evaluation.metrics import aggregate, exact_match, rouge_l
from raysys.pools.load import load_pool
from raysys.pools.synthetic import write_synthetic_pool


@pytest.mark.parametrize("pred, refs, expected", [
    ("the cat sat on the mat", ["the cat sat on the mat"], 100.0),
    ("the cat sat", ["the cat sat on the mat"], 100 * 2 * (1.0 * 0.5) / 1.5),  # P 3/3, R 3/6, LCS 3
    ("dogs running", ["dog runs"], 100.0),  # the Porter stemmer: dogs -> dog, running -> run, runs -> run
    ("A", ["B", "a"], 100.0),  # best over references; lower-cased by the default tokenizer
    ("", ["something"], 0.0),
    ("mat the on sat cat the", ["the cat sat on the mat"], 100 * 3 / 6),  # LCS "the on the": 3 of 6 each
])
def test_rouge_l_hand_checked(pred, refs, expected):
    assert rouge_l(pred, refs) == pytest.approx(expected, abs=1e-9)
    direct = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    assert rouge_l(pred, refs) == pytest.approx(100 * max(direct.score(r, pred)["rougeL"].fmeasure for r in refs))


def test_exact_match():
    assert exact_match(" abc\n", ["x", "abc"]) == 100.0
    assert exact_match("Abc", ["abc"]) == 0.0 and exact_match("a bc", ["abc"]) == 0.0


def test_aggregate_pools_instances_by_task_type():
    rows = [
        {"task_id": "c1", "is_classification": True, "n_instances": 2, "rougeL": 100.0, "exact_match": 50.0,
         "n_answered": 2, "nll": 1.0, "n_labeled": 2, "label_accuracy": 50.0},
        {"task_id": "c2", "is_classification": True, "n_instances": 3, "rougeL": 50.0, "exact_match": 0.0,
         "n_answered": 1, "nll": 2.0, "n_labeled": 0, "label_accuracy": None},
        {"task_id": "g1", "is_classification": False, "n_instances": 4, "rougeL": 25.0, "exact_match": 0.0,
         "n_answered": 4, "nll": 3.0, "n_labeled": 0, "label_accuracy": None},
        {"task_id": "u1", "is_classification": None, "n_instances": 1, "rougeL": 90.0, "exact_match": 100.0,
         "n_answered": 1, "nll": None, "n_labeled": 0, "label_accuracy": None},
    ]
    m = aggregate(rows)
    # Rouge-L over the answered instances, NLL over those with a likelihood, accuracy over the labeled ones
    assert m["rougeL"]["classification"] == pytest.approx(250 / 3)
    assert m["rougeL"]["generative"] == pytest.approx(25.0)
    assert m["rougeL"]["overall"] == pytest.approx(440 / 8)  # unknown-type tasks count in overall only
    assert m["exact_match"]["overall"] == pytest.approx(200 / 8)
    assert m["nll"]["overall"] == pytest.approx((2 * 1 + 3 * 2 + 4 * 3) / 9) and m["nll"]["generative"] == 3.0
    assert m["label_accuracy"]["overall"] == 50.0 and m["label_accuracy"]["generative"] is None
    assert m["n_instances"] == {"overall": 10, "classification": 5, "generative": 4}
    assert m["n_answered"] == {"overall": 8, "classification": 3, "generative": 4}
    assert m["n_labeled"]["overall"] == 2
    assert aggregate([])["rougeL"]["overall"] is None


@torch.inference_mode()
def reference_logprobs(lm, prompt: str, target: str, max_prompt: int) -> list[float]:
    """Plain transformers, one prompt at a time: the log-probability of each target token
    (end of sequence included) after the prompt's last max_prompt tokens."""
    tok = lm.tokenizer
    p_ids = tok(prompt).input_ids[-max_prompt:]
    t_ids = tok(target, add_special_tokens=False).input_ids + [tok.eos_token_id]
    logits = lm.model(input_ids=torch.tensor([p_ids + t_ids])).logits[0].double()
    logp = torch.log_softmax(logits[len(p_ids) - 1: len(p_ids) - 1 + len(t_ids)], dim=-1)
    return [float(logp[i, t]) for i, t in enumerate(t_ids)]


def test_likelihood_and_label_accuracy_equal_a_one_at_a_time_computation(tiny_lm, shared_data):
    """Real NIV2 tasks (MMLU-style letters: a label set; a generative task): each instance's
    NLL and most likely label against plain transformers, one prompt at a time; answers
    only on the first answer_instances; per-task means over the instances measured."""
    from raysys.evaluation.evaluator import Evaluator
    from raysys.scoring.items import label_set

    tasks = {t.task_id: t for t in load_pool(str(shared_data / "niv2")).tasks}
    chosen = [tasks["task664_mmmlu_answer_generation_abstract_algebra"],
              tasks["task957_e2e_nlg_text_generation_generate"]]
    cfg = EvalConfig(instances=4, answer_instances=1, generation=GenerationConfig(3, max_prompt_tokens=96),
                     prompt=PromptConfig(demonstrations=0))
    ev = Evaluator("", cfg, loaded=tiny_lm, device="cpu")
    rows, det = ev.process(chosen, details=True)
    assert len(det) == 8 and sum(d["prediction"] is not None for d in det) == 2
    labels = {t.task_id: label_set(t, cfg.max_labels) for t in chosen}
    assert len(labels[chosen[0].task_id]) == 4
    for d in det:
        lp = reference_logprobs(tiny_lm, d["prompt"], d["references"][0], ev.runner.max_prompt)
        assert d["nll"] == pytest.approx(-sum(lp) / len(lp), abs=1e-5) and d["target_tokens"] == len(lp)
        cand = labels[d["task_id"]]
        if cand:
            totals = [sum(reference_logprobs(tiny_lm, d["prompt"], c, ev.runner.max_prompt)) for c in cand]
            best = cand[int(np.argmax(totals))]
            assert d["label_prediction"] == best
            assert d["label_correct"] == (100.0 if best.lower() in [o.lower() for o in d["references"]] else 0.0)
        else:
            assert d["label_prediction"] is None and d["label_correct"] is None
    for r in rows:
        mine = [d for d in det if d["task_id"] == r["task_id"]]
        assert r["nll"] == pytest.approx(np.mean([d["nll"] for d in mine]))
        assert (r["n_instances"], r["n_answered"]) == (4, 1)
        assert r["rougeL"] == next(d["rougeL"] for d in mine if d["prediction"] is not None)
    assert rows[0]["n_labeled"] == 4 and rows[0]["label_accuracy"] == pytest.approx(
        np.mean([d["label_correct"] for d in det if d["task_id"] == rows[0]["task_id"]]))
    assert rows[1]["n_labeled"] == 0 and rows[1]["label_accuracy"] is None
    # likelihood alone: no decode, the same NLLs
    quiet, _ = Evaluator("", EvalConfig(instances=4, answer_instances=0, generation=cfg.generation, prompt=cfg.prompt),
                         loaded=tiny_lm, device="cpu").process(chosen)
    assert [r["nll"] for r in quiet] == pytest.approx([r["nll"] for r in rows]) and quiet[0]["rougeL"] is None


@pytest.mark.ray
def test_evaluate_pool_matches_a_direct_computation_and_resumes(tiny_model_dir, tiny_lm, tmp_path, monkeypatch):
    import ray

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)  # as a user's shell has it (the tests set it)

    from raysys.evaluation.evaluate import evaluate_pool
    from raysys.evaluation.evaluator import Evaluator

    path = tmp_path / "pool.parquet"
    write_synthetic_pool(SynthConfig(rules=10, examples_per_rule=3, seed=2), path)
    tasks = list(load_pool(str(path)).tasks)
    cfg = EvalConfig(instances=2, generation=GenerationConfig(6), prompt=PromptConfig(demonstrations=0),
                     tasks_per_batch=3)
    ids = [t.task_id for t in tasks[:7]]
    try:
        m = evaluate_pool(str(path), str(tiny_model_dir), str(tmp_path / "metrics.json"), cfg, task_ids=ids,
                          actors=2, details=str(tmp_path / "answers.parquet"), num_cpus=2, progress=False)
        # the local cluster's processes were told where its dashboard is, and to let their
        # OpenMP threads sleep when they wait; this process keeps no trace of either
        assert ray.get(ray.remote(lambda: os.environ.get("OMP_WAIT_POLICY")).remote()) == "PASSIVE"
        assert "RAY_API_SERVER_ADDRESS" not in os.environ and "OMP_WAIT_POLICY" not in os.environ
    finally:
        ray.shutdown()
    assert m["n_tasks"] == 7 and [r["task_id"] for r in m["per_task"]] == ids
    # independent: the same answers computed in-process, metrics by hand
    rows, det = Evaluator("", cfg, loaded=tiny_lm, device="cpu").process(tasks[:7], details=True)
    answers = pq.read_table(tmp_path / "answers.parquet").to_pylist()
    assert sorted((a["task_id"], a["instance_id"], a["prediction"]) for a in answers) == \
        sorted((d["task_id"], d["instance_id"], d["prediction"]) for d in det)
    overall = sum(rouge_l(d["prediction"], d["references"]) for d in det) / len(det)
    assert m["rougeL"]["overall"] == pytest.approx(overall) and m["n_instances"]["overall"] == 14
    assert m["rougeL"]["classification"] is None  # synthetic rewriting tasks are generative
    # tokens by hand: each prompt as generation reads it, plus the tokens greedy decoding generates
    from test_scorer import new_tokens

    want = {t: 0 for t in ids}
    for d in det:  # generation, then the likelihood forward of the prompt and its reference (with EOS)
        n_prompt = len(tiny_lm.tokenizer(d["prompt"]).input_ids)
        want[d["task_id"]] += n_prompt + new_tokens(tiny_lm, d["prompt"], 6)
        want[d["task_id"]] += n_prompt + len(tiny_lm.tokenizer(d["references"][0], add_special_tokens=False).input_ids) + 1
    assert {r["task_id"]: r["tokens"] for r in m["per_task"]} == want and m["tokens"] == sum(want.values())
    from raysys.models import count_parameters

    n = count_parameters(tiny_lm.model)
    assert {r["task_id"]: r["flops"] for r in m["per_task"]} == {t: 2.0 * n * w for t, w in want.items()}
    assert m["flops"] == pytest.approx(2.0 * n * sum(want.values()))
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["exact_match"] == m["exact_match"]
    # a rerun finds every task done and evaluates nothing again
    again = evaluate_pool(str(path), str(tiny_model_dir), str(tmp_path / "metrics.json"), cfg, task_ids=ids,
                          actors=2, details=str(tmp_path / "answers.parquet"), num_cpus=2, progress=False)
    assert again["rougeL"] == m["rougeL"]
