"""The task scorer against a straightforward reference: one example at a time, plain
forward passes with full logits, greedy decoding by argmax, the formulas written out."""
from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch

from raysys.config import GenerationConfig, ScoringConfig, SynthConfig
from raysys.models import count_parameters
from raysys.perturb import perturb_prompt_parts
from raysys.pools.load import load_pool
from raysys.pools.markov import generate
from raysys.prompts import format_prompt
from raysys.schema import Instance, Task
from raysys.scoring.items import label_set, sample_instances
from raysys.scoring.reference import reference_mean_logprobs
from raysys.scoring.scorer import TaskScorer

CFG = ScoringConfig(instances=3, perturbations=3, generation=GenerationConfig(max_new_tokens=6), seed=1)


@torch.inference_mode()
def greedy(lm, prompt: str, max_new: int) -> str:
    tok = lm.tokenizer
    ids = tok(prompt).input_ids
    out: list[int] = []
    if lm.kind == "seq2seq":
        dec = [lm.model.config.decoder_start_token_id]
        for _ in range(max_new):
            logits = lm.model(input_ids=torch.tensor([ids]), decoder_input_ids=torch.tensor([dec])).logits
            nxt = int(logits[0, -1].argmax())
            if nxt == tok.eos_token_id:
                break
            dec.append(nxt)
            out.append(nxt)
    else:
        for _ in range(max_new):
            nxt = int(lm.model(input_ids=torch.tensor([ids + out])).logits[0, -1].argmax())
            if nxt == tok.eos_token_id:
                break
            out.append(nxt)
    return tok.decode(out, skip_special_tokens=True)


def reference_scores(lm, task: Task, cfg: ScoringConfig) -> dict:
    insts = sample_instances(task, cfg.instances, cfg.seed)
    parts = perturb_prompt_parts(task.task_id, task.instruction, task.demonstrations, cfg.perturbations,
                                 rate=cfg.drop_rate, seed=cfg.seed)
    ys, p = [], np.zeros((len(insts), cfg.perturbations + 1))
    for i, inst in enumerate(insts):
        prompts = [format_prompt(cfg.prompt.template, d, inst.input, demos, cfg.prompt.demonstrations) for d, demos in parts]
        y = greedy(lm, prompts[0], cfg.generation.max_new_tokens)
        ys.append(y)
        p[i] = np.exp(reference_mean_logprobs(lm.model, lm.tokenizer, lm.kind, prompts, [y] * len(prompts)))
    u = sum(abs(p[i, j] - p[i, 0]) for i in range(len(insts)) for j in range(1, cfg.perturbations + 1))
    return {"answers": ys, "p": p, "U": u / (len(insts) * cfg.perturbations), "PP": p[:, 0].mean(),
            "PPL": np.mean(1.0 / p[:, 0])}


@pytest.fixture(scope="module")
def tasks(shared_data):
    niv2 = [t for t in load_pool(shared_data / "niv2").tasks if t.task_id in {
        "task1393_superglue_copa_text_completion", "task648_answer_generation"}]
    synth = generate(SynthConfig(rules=2, examples_per_rule=5, seed=3, demonstrations=2))
    return niv2 + synth


@pytest.mark.parametrize("model", ["tiny_lm", "tiny_t5"])
def test_scorer_matches_reference(model, tasks, request):
    lm = request.getfixturevalue(model)
    scorer = TaskScorer("", CFG, loaded=lm, device="cpu")
    rows, details = scorer.score(tasks, details=True)
    for task, row in zip(tasks, rows):
        ref = reference_scores(lm, task, CFG)
        assert row["task_id"] == task.task_id
        assert abs(row["prompt_uncertainty"] - ref["U"]) < 1e-7
        assert abs(row["prediction_probability"] - ref["PP"]) < 1e-7
        assert math.isclose(row["perplexity"], ref["PPL"], rel_tol=1e-5)
        assert row["n_instances"] == min(CFG.instances, len(task.instances))
        mine = [d for d in details if d["task_id"] == task.task_id]
        assert [d["target"] for d in mine if d["perturbation"] == 0] == ref["answers"]
        got_p = np.array([d["p"] for d in mine]).reshape(len(ref["answers"]), CFG.perturbations + 1)
        assert np.max(np.abs(got_p - ref["p"])) < 1e-6
    assert rows[0]["is_classification"] is True and rows[0]["n_labels"] == 2


def test_bfloat16_weights_score_as_a_bfloat16_model_does(tasks, tiny_model_dir, tiny_lm):
    """dtype=bfloat16: the worker loads the weights in bfloat16 (float32 is the CPU's
    default), and each p is the likelihood of its answer under the bfloat16 model computed
    one at a time (log-probabilities in float32 from bfloat16 logits), within what
    batching changes in bfloat16; the numbers are not float32's, and the run is another."""
    from raysys.models import load_model
    from raysys.runs.keys import run_id

    bf16 = dataclasses.replace(CFG, dtype="bfloat16")
    scorer = TaskScorer(str(tiny_model_dir), bf16, device="cpu")
    assert next(scorer.runner.lm.model.parameters()).dtype == torch.bfloat16
    assert next(TaskScorer(str(tiny_model_dir), CFG, device="cpu").runner.lm.model.parameters()).dtype == torch.float32
    lm = load_model(str(tiny_model_dir), dtype="bfloat16", device="cpu")
    _, details = scorer.score(tasks, details=True)
    _, f32 = TaskScorer("", CFG, loaded=tiny_lm, device="cpu").score(tasks, details=True)
    got, ref = np.array([d["p"] for d in details]), []
    for task in tasks:
        parts = perturb_prompt_parts(task.task_id, task.instruction, task.demonstrations, CFG.perturbations,
                                     rate=CFG.drop_rate, seed=CFG.seed)
        mine = [d for d in details if d["task_id"] == task.task_id]
        answers = [d["target"] for d in mine if d["perturbation"] == 0]
        for inst, y in zip(sample_instances(task, CFG.instances, CFG.seed), answers):
            prompts = [format_prompt(CFG.prompt.template, d, inst.input, demos, CFG.prompt.demonstrations)
                       for d, demos in parts]
            ref.extend(np.exp(reference_mean_logprobs(lm.model, lm.tokenizer, lm.kind, prompts, [y] * len(prompts))))
    # bfloat16 keeps about 3 significant digits: log p within 1e-2 (measured: 2e-3)
    assert np.max(np.abs(np.log(got) - np.log(ref))) < 1e-2
    assert np.max(np.abs(got - np.array([d["p"] for d in f32]))) > 1e-6  # not float32's numbers
    assert run_id(bf16, "m", "pool.parquet", False) != run_id(CFG, "m", "pool.parquet", False)
    with pytest.raises(Exception, match="dtype must be one of"):
        ScoringConfig(dtype="float16")


def test_float32_answers_scored_by_bfloat16_forwards(tasks, tiny_lm):
    """forward_dtype=bfloat16 with float32 weights: the greedy answers are float32's
    exactly (the same decode), every p is the likelihood of that answer under a bfloat16
    copy of the weights computed one at a time, the float32 model stays float32, and the
    run is another."""
    from raysys.runs.keys import run_id

    mixed = dataclasses.replace(CFG, forward_dtype="bfloat16")
    scorer = TaskScorer("", mixed, loaded=tiny_lm, device="cpu")
    _, details = scorer.score(tasks, details=True)
    _, f32 = TaskScorer("", CFG, loaded=tiny_lm, device="cpu").score(tasks, details=True)
    assert next(tiny_lm.model.parameters()).dtype == torch.float32
    assert [d["target"] for d in details] == [d["target"] for d in f32]  # float32's answers
    b16 = copy.deepcopy(tiny_lm.model).to(torch.bfloat16)
    got, ref = np.array([d["p"] for d in details]), []
    for d in details:
        ref.extend(np.exp(reference_mean_logprobs(b16, tiny_lm.tokenizer, tiny_lm.kind, [d["prompt"]], [d["target"]])))
    assert np.max(np.abs(np.log(got) - np.log(ref))) < 1e-2
    assert np.max(np.abs(got - np.array([d["p"] for d in f32]))) > 1e-6  # not float32's numbers
    assert run_id(mixed, "m", "pool.parquet", False) != run_id(CFG, "m", "pool.parquet", False)
    with pytest.raises(Exception, match="forward_dtype must be"):
        ScoringConfig(forward_dtype="auto")


@torch.inference_mode()
def new_tokens(lm, prompt: str, max_new: int) -> int:
    """Tokens greedy decoding generates for the prompt, the end of sequence included."""
    ids, n = lm.tokenizer(prompt).input_ids, 0
    for _ in range(max_new):
        nxt = int(lm.model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
        n += 1
        if nxt == lm.tokenizer.eos_token_id:
            break
        ids.append(nxt)
    return n


def test_token_counts_by_hand(tasks, tiny_lm):
    """A task's `tokens`: each greedy answer's prompt and generated tokens, then every
    scored sequence's prompt and target (end of sequence included): perturbed prompts,
    label items (entropy) and the answer alone (IFD), counted here one by one."""
    scorer = TaskScorer("", CFG, loaded=tiny_lm, device="cpu")
    rows, _ = scorer.score(tasks)
    tok = tiny_lm.tokenizer

    def n(text: str) -> int:
        return len(tok(text).input_ids)

    def n_target(text: str) -> int:
        return len(tok(text, add_special_tokens=False).input_ids) + 1

    for task, row in zip(tasks, rows):
        parts = perturb_prompt_parts(task.task_id, task.instruction, task.demonstrations, CFG.perturbations,
                                     rate=CFG.drop_rate, seed=CFG.seed)
        labels = label_set(task, CFG.max_labels) if task.is_classification else []
        want = 0
        for inst in sample_instances(task, CFG.instances, CFG.seed):
            prompts = [format_prompt(CFG.prompt.template, d, inst.input, demos, CFG.prompt.demonstrations)
                       for d, demos in parts]
            y = greedy(tiny_lm, prompts[0], CFG.generation.max_new_tokens)
            want += n(prompts[0]) + new_tokens(tiny_lm, prompts[0], CFG.generation.max_new_tokens)
            want += sum(n(p) + n_target(y) for p in prompts)
            want += sum(n(prompts[0]) + n_target(label) for label in labels)
            want += n(scorer.alone_prompt) + n_target(y)  # IFD
        assert row["tokens"] == want, task.task_id
        assert row["flops"] == 2 * count_parameters(tiny_lm.model) * want  # 2 x parameters per token read
    assert rows[0]["n_labels"] == 2  # the label items were counted


def test_drop_rate_zero_gives_zero_uncertainty(tasks, tiny_lm):
    rows, _ = TaskScorer("", dataclasses.replace(CFG, drop_rate=0.0), loaded=tiny_lm).score(tasks)
    assert all(r["prompt_uncertainty"] == 0.0 for r in rows)
    rows, _ = TaskScorer("", CFG, loaded=tiny_lm).score(tasks)
    assert all(r["prompt_uncertainty"] > 0.0 for r in rows)


def test_entropy_and_ifd_against_reference(tasks, tiny_lm):
    task = tasks[0]  # COPA: labels "1"/"2"
    cfg = dataclasses.replace(CFG, perturbations=0)
    row = TaskScorer("", cfg, loaded=tiny_lm).score([task])[0][0]
    labels = label_set(task, cfg.max_labels)
    assert sorted(labels) == sorted({o for i in task.instances for o in i.outputs})
    ents, ifds = [], []
    for inst in sample_instances(task, cfg.instances, cfg.seed):
        prompt = format_prompt(cfg.prompt.template, task.instruction, inst.input, task.demonstrations,
                               cfg.prompt.demonstrations)
        lab = reference_mean_logprobs(tiny_lm.model, tiny_lm.tokenizer, "causal", [prompt] * len(labels), labels)
        q = np.exp(lab) / np.exp(lab).sum()
        ents.append(-(q * np.log(q)).sum())
        y = greedy(tiny_lm, prompt, cfg.generation.max_new_tokens)
        cond, alone = reference_mean_logprobs(tiny_lm.model, tiny_lm.tokenizer, "causal", [prompt, ""], [y, y])
        ifds.append(math.exp(alone - cond))  # PPL(y|x) / PPL(y) = exp(-cond) / exp(-alone)
    assert math.isclose(row["classification_entropy"], np.mean(ents), rel_tol=1e-5)
    assert math.isclose(row["ifd"], np.mean(ifds), rel_tol=1e-5)


def test_instance_sampling():
    task = Task("t", "Do.", tuple(Instance(str(i), str(i), ("o",)) for i in range(30)))
    a = sample_instances(task, 10, 0)
    assert a == sample_instances(task, 10, 0) and a != sample_instances(task, 10, 1)
    assert len({i.id for i in a}) == 10 and [int(i.id) for i in a] == sorted(int(i.id) for i in a)
    assert sample_instances(task, 50, 0) == list(task.instances)


def test_long_prompts_drop_demonstrations_first(tiny_lm):
    from raysys.schema import Demonstration

    cfg = dataclasses.replace(CFG, generation=GenerationConfig(6, max_prompt_tokens=300), instances=2)
    long_demo = Demonstration("x" * 200, "y")
    fits_with_one = Task("demos", "Copy the input.", tuple(Instance(str(i), "ab", ("ab",)) for i in range(2)),
                         demonstrations=(Demonstration("short", "s"), long_demo))
    too_long = Task("definition", "Copy the input. " + "very " * 100, (Instance("0", "ab", ("ab",)),))
    rows, details = TaskScorer("", cfg, loaded=tiny_lm).score([fits_with_one, too_long], details=True)
    shown = [d["prompt"] for d in details if d["task_id"] == "demos"]
    assert all("Positive Example 1" in p and "Positive Example 2" not in p for p in shown)
    assert all(len(tiny_lm.tokenizer(p).input_ids) <= 300 for p in shown)
    assert rows[0]["n_truncated"] == 0 and rows[0]["prompt_uncertainty"] > 0
    assert rows[1]["n_truncated"] == 1


def test_scoring_the_answers_of_another_scoring(tasks, tiny_lm, tmp_path):
    """answers_from: model B scores the answers model A gave (stored in A's scores), every
    p_ij and U against the plain reference computed on A's answers; A's greedy answers
    round-trip through the `answers` column; missing answers are a clear error."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from raysys.config import TinyConfig
    from raysys.errors import InvalidFile
    from raysys.models import init_tiny, load_model
    from raysys.scoring.answers import read_answers

    rows_a, details_a = TaskScorer("", CFG, loaded=tiny_lm, device="cpu").score(tasks, details=True)
    scores_a = tmp_path / "a.parquet"
    pq.write_table(pa.Table.from_pylist(rows_a), scores_a)
    given = {(d["task_id"], d["instance_id"]): d["target"] for d in details_a if d["perturbation"] == 0}
    assert read_answers(scores_a) == given and len(given) == sum(r["n_instances"] for r in rows_a)
    other = load_model(str(init_tiny(tmp_path / "b", TinyConfig(hidden_size=64, layers=2, seed=7))))
    cfg = dataclasses.replace(CFG, answers_from=str(scores_a))
    rows_b, details_b = TaskScorer("", cfg, loaded=other, device="cpu").score(tasks, details=True)
    for task, row in zip(tasks, rows_b):
        insts = sample_instances(task, cfg.instances, cfg.seed)
        parts = perturb_prompt_parts(task.task_id, task.instruction, task.demonstrations, cfg.perturbations,
                                     rate=cfg.drop_rate, seed=cfg.seed)
        p = np.zeros((len(insts), cfg.perturbations + 1))
        for i, inst in enumerate(insts):
            prompts = [format_prompt(cfg.prompt.template, d, inst.input, demos, cfg.prompt.demonstrations)
                       for d, demos in parts]
            y = given[(task.task_id, inst.id)]
            p[i] = np.exp(reference_mean_logprobs(other.model, other.tokenizer, other.kind, prompts, [y] * len(prompts)))
        u = np.abs(p[:, 1:] - p[:, :1]).mean()
        assert abs(row["prompt_uncertainty"] - u) < 1e-7 and abs(row["prediction_probability"] - p[:, 0].mean()) < 1e-7
        assert [a["answer"] for a in row["answers"]] == [given[(task.task_id, i.id)] for i in insts]
        assert row["rds_embedding"] is None  # nothing was decoded
    assert [d["target"] for d in details_b if d["perturbation"] == 0] == [d["target"] for d in details_a
                                                                          if d["perturbation"] == 0]
    # a task the file did not score, and a file without answers: errors naming the file
    pq.write_table(pa.Table.from_pylist(rows_a[1:]), tmp_path / "fewer.parquet")
    with pytest.raises(InvalidFile, match=f"fewer.parquet: task '{tasks[0].task_id}' instance"):
        TaskScorer("", dataclasses.replace(CFG, answers_from=str(tmp_path / "fewer.parquet")), loaded=other,
                   device="cpu").score(tasks)
    pq.write_table(pa.Table.from_pylist([{k: v for k, v in r.items() if k != "answers"} for r in rows_a]),
                   tmp_path / "old.parquet")
    with pytest.raises(InvalidFile, match="old.parquet: no answers column"):
        read_answers(tmp_path / "old.parquet")


def test_the_decode_recorder_by_hand():
    """Recorder: per step the raw argmax and the log-softmax at it and at EOS (id 0); an
    answer's likelihood is the mean over its tokens and EOS; a step that chose another
    token than the argmax, or steps that stop short, give None."""
    from raysys.models.runner import Recorder

    rec = Recorder(eos=0)
    steps = [torch.tensor([[0.0, 2.0, 1.0], [1.0, 0.0, 3.0]]), torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.0, 5.0]])]
    for s in steps:
        assert rec(None, s) is s  # the scores pass unchanged
    lsm = [torch.log_softmax(s.double(), dim=-1) for s in steps]
    ids, mean = rec.likelihood(0, [1])  # row 0: token 1, then EOS (step 2's argmax)
    assert ids == [1, 0] and mean == pytest.approx(float(lsm[0][0, 1] + lsm[1][0, 0]) / 2, abs=1e-6)
    ids, mean = rec.likelihood(1, [2])  # row 1: token 2, then EOS's log-prob though 2 wins again
    assert ids == [2, 0] and mean == pytest.approx(float(lsm[0][1, 2] + lsm[1][1, 0]) / 2, abs=1e-6)
    assert rec.likelihood(0, [2]) is None  # not the argmax: a logits processor chose it
    assert rec.likelihood(0, [1, 0]) is None  # no step after the answer: no EOS log-prob
