"""`raysys select` / `raysys align` end to end on real data, with the real sentence encoder."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from conftest import run_cli

from raysys.pools.load import load_pool


# `select` and `align` start no Ray (no strategy here needs the model's embeddings): they run
# in this process (conftest.run_cli), with the encoder loaded once, not in a new interpreter each
def _select(tmp_path, name, *args):
    out = tmp_path / f"{name}.json"
    r = run_cli("select", "--out", out, *args, in_process=True)
    assert r.returncode == 0, r.stderr
    return json.loads(out.read_text()), r


def test_select_with_ratio_strata_and_exclusion(niv2_scored, tmp_path):
    pool, scores = niv2_scored
    first, r = _select(tmp_path, "r1", "--scores", scores, "--pool", pool, "--budget", "6", "--cls-ratio", "0.5",
                       "--length-strata")
    tasks = {t.task_id: t for t in load_pool(str(pool)).tasks}
    assert len(first["task_ids"]) == 6 and len(set(first["task_ids"])) == 6
    n_cls = sum(tasks[t].is_classification for t in first["task_ids"])
    n_gen_pool = sum(not t.is_classification for t in tasks.values())
    assert n_cls == 6 - min(3, n_gen_pool)  # half and half, the classification side making up a shortfall
    assert "selected 6 of 16" in r.stdout
    second, _ = _select(tmp_path, "r2", "--scores", scores, "--pool", pool, "--budget", "6", "--exclude",
                        tmp_path / "r1.json")
    assert not set(first["task_ids"]) & set(second["task_ids"]) and second["n_excluded"] == 6
    # the engine's ranking is the scores file's, highest prompt uncertainty first
    u = dict(zip(pq.read_table(scores).column("task_id").to_pylist(),
                 pq.read_table(scores).column("prompt_uncertainty").to_pylist()))
    ranked = sorted((t for t in u if t not in first["task_ids"]), key=lambda t: -u[t])
    assert [u[t] for t in second["task_ids"]] == [u[t] for t in ranked[:6]]


def test_a_token_budget_and_the_length_strategy_count_the_training_tokens(niv2_scored, tiny_model_dir, tiny_lm,
                                                                         tmp_path):
    """Each task's training tokens counted here from its training examples (prompt cut to
    its last max_source_tokens, target to its first max_target_tokens, then EOS)."""
    from raysys.config import TrainConfig
    from raysys.training.data import training_examples

    pool, scores = niv2_scored
    (tmp_path / "train.yaml").write_text("instances_per_task: 3\nmax_source_tokens: 200\nmax_target_tokens: 8\n")
    tasks = list(load_pool(str(pool)).tasks)
    cfg = TrainConfig(instances_per_task=3, max_source_tokens=200, max_target_tokens=8)
    tok = tiny_lm.tokenizer
    tokens, response = {}, {}
    for t in tasks:
        rows = training_examples(tasks, [t.task_id], cfg)
        tgt = [len(tok(r["target"], add_special_tokens=False).input_ids[:8]) + 1 for r in rows]
        tokens[t.task_id] = sum(len(tok(r["prompt"]).input_ids[-200:]) for r in rows) + sum(tgt)
        response[t.task_id] = sum(tgt) / len(tgt)
    budget = sum(sorted(tokens.values())[:6])
    common = ["--pool", pool, "--model", tiny_model_dir, "--train-config", tmp_path / "train.yaml"]
    sel, _ = _select(tmp_path, "tok", "--scores", scores, *common, "--budget", str(budget), "--budget-unit", "tokens")
    assert sel["selected_train_tokens"] == sum(tokens[t] for t in sel["task_ids"]) <= budget
    assert all(row["train_tokens"] == tokens[row["task_id"]] for row in sel["tasks"])
    u = dict(zip(pq.read_table(scores).column("task_id").to_pylist(),
                 pq.read_table(scores).column("prompt_uncertainty").to_pylist()))
    want, room = [], budget
    for t in sorted(u, key=lambda t: -u[t]):  # the most uncertain first, each taken while it fits
        if tokens[t] <= room:
            want.append(t)
            room -= tokens[t]
    assert sel["task_ids"] == want
    longest, _ = _select(tmp_path, "len", *common, "--strategy", "length", "--budget", "4")
    assert [response[t] for t in longest["task_ids"]] == pytest.approx(sorted(response.values(), reverse=True)[:4])


def test_similarity_finds_the_target_tasks(shared_data, tmp_path):
    seeds = shared_data / "self_instruct" / "seed_tasks.jsonl"
    tasks = load_pool(str(seeds)).tasks
    picked = [tasks[10], tasks[99], tasks[150]]
    # paraphrased targets: each should retrieve its own task first (per target, in turn)
    (tmp_path / "targets.txt").write_text("\n".join(t.instruction.rstrip(".") + ", please." for t in picked))
    sel, _ = _select(tmp_path, "sim", "--pool", seeds, "--strategy", "similarity", "--targets",
                     tmp_path / "targets.txt", "--budget", "3", "--similarity-mode", "per-target")
    assert sel["task_ids"] == [t.task_id for t in picked]
    div, _ = _select(tmp_path, "div", "--pool", seeds, "--scores", _uniform_scores(tasks, tmp_path),
                     "--strategy", "uncertainty-diverse", "--budget", "20", "--diversity-threshold", "0.5")
    assert len(div["task_ids"]) == 20


def _uniform_scores(tasks, tmp_path):
    import pyarrow as pa

    n = len(tasks)
    path = tmp_path / "scores.parquet"
    pq.write_table(pa.table({"task_id": [t.task_id for t in tasks], "prompt_uncertainty": [1.0 / (i + 1) for i in
                                                                                           range(n)],
                             "prediction_probability": [0.5] * n}), path)
    return path


@pytest.mark.parametrize("args, message", [
    (["--strategy", "nope"], "unknown strategy 'nope'"),
    (["--strategy", "prompt-uncertainty"], "give --scores"),
    (["--scores", "missing.parquet"], "missing.parquet: no such scores file"),
    (["--strategy", "similarity", "--pool", "P"], "needs --targets"),
    (["--strategy", "random", "--budget", "0", "--pool", "P"], "budget must be >= 1"),
    (["--strategy", "random", "--budget-unit", "tokens", "--pool", "P"], "give --pool and --model"),
    (["--strategy", "length", "--pool", "P"], "the length strategy counts the tasks' training tokens"),
    (["--strategy", "random", "--budget-unit", "words"], "budget_unit must be one of"),
])
def test_select_mistakes_are_clear_errors(niv2_scored, tmp_path, args, message):
    pool, _ = niv2_scored
    args = [str(pool) if a == "P" else a for a in args]
    r = run_cli("select", "--out", tmp_path / "s.json", *args, in_process=True)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "s.json").exists()


def test_align_cli_writes_an_encoder_and_resumes(shared_data, tmp_path):
    pool = shared_data / "self_instruct" / "seed_tasks.jsonl"
    args = ["align", "--pool", pool, "--out", tmp_path / "enc", "--epochs", "1", "--heldout-fraction", "0.9",
            "--batch-size", "8"]
    r = run_cli(*args, in_process=True)
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "enc" / "raysys_align.json").read_text())
    assert report["n_train"] == 17 and report["n_heldout"] == 158 and "retrieval" in r.stdout
    assert (tmp_path / "enc" / "modules.json").is_file()
    r = run_cli(*args, in_process=True)
    assert r.returncode == 0 and "up to date" in r.stdout
    sel, _ = _select(tmp_path, "enc", "--pool", pool, "--strategy", "similarity", "--targets", pool, "--budget", "2",
                     "--encoder", tmp_path / "enc")
    assert len(sel["task_ids"]) == 2
