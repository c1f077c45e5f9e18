"""Evaluation: Rouge-L against the rouge-score package on hand-checked cases, exact match,
the cls/gen aggregation, and evaluate_pool on the actor pool with resumable parts."""
from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest
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
        {"task_id": "c1", "is_classification": True, "n_instances": 2, "rougeL_sum": 200.0, "exact_match_sum": 100.0},
        {"task_id": "c2", "is_classification": True, "n_instances": 1, "rougeL_sum": 50.0, "exact_match_sum": 0.0},
        {"task_id": "g1", "is_classification": False, "n_instances": 4, "rougeL_sum": 100.0, "exact_match_sum": 0.0},
        {"task_id": "u1", "is_classification": None, "n_instances": 1, "rougeL_sum": 90.0, "exact_match_sum": 100.0},
    ]
    m = aggregate(rows)
    assert m["rougeL"]["classification"] == pytest.approx(250 / 3)
    assert m["rougeL"]["generative"] == pytest.approx(25.0)
    assert m["rougeL"]["overall"] == pytest.approx(440 / 8)  # unknown-type tasks count in overall only
    assert m["exact_match"]["overall"] == pytest.approx(200 / 8) and m["n_instances"] == {
        "overall": 8, "classification": 3, "generative": 4}
    assert aggregate([])["rougeL"]["overall"] is None


@pytest.mark.ray
def test_evaluate_pool_matches_a_direct_computation_and_resumes(tiny_model_dir, tiny_lm, tmp_path):
    import ray

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
        # the local cluster's processes were told where its dashboard is; this process keeps no trace
        assert "RAY_API_SERVER_ADDRESS" not in os.environ
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
    for d in det:
        want[d["task_id"]] += len(tiny_lm.tokenizer(d["prompt"]).input_ids) + new_tokens(tiny_lm, d["prompt"], 6)
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
