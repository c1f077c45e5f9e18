"""Errors at the boundary: every count or share flag out of range, and every broken model
folder, is refused by the driver in one line with exit 2 before anything starts (checked
in-process through `main([...])`); a failure inside an actor reaches the terminal as one
line, its traceback in the log; two raysys commands on one machine at once both finish,
into the same or different outputs (real subprocesses, each with its own local Ray)."""
from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import run_cli, synthetic_pool


def _one_line_exit_2(r: subprocess.CompletedProcess, *needles: str, stages: bool = False) -> str:
    """Exit 2, no traceback, one `raysys: error:` line holding `needles`; before it nothing
    (refused before any stage) or, with `stages`, the stages' own lines."""
    lines = [line for line in r.stderr.splitlines() if line.strip() and not line.startswith("log: ")
             and not line.startswith("raysys: Ray's and the libraries' output")]
    assert r.returncode == 2, (r.returncode, r.stderr)
    if stages:
        lines = [line for line in lines if line.startswith("raysys: error:")]
    assert len(lines) == 1 and lines[0].startswith("raysys: error:"), r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


RUN = ["--pool", "p.parquet", "--model", "m", "--out", "o.parquet"]


@pytest.mark.parametrize("argv, needle", [
    (["score", *RUN, "--actors", "0"], "--actors: must be >= 1"),
    (["score", *RUN, "--actors", "-3"], "--actors"),
    (["score", *RUN, "--actors", "two"], "not an integer"),
    (["score", *RUN, "--gpus-per-actor", "-1"], "--gpus-per-actor"),
    (["score", *RUN, "--gpus-per-actor", "nan"], "--gpus-per-actor"),
    (["eval", "--pool", "p", "--model", "m", "--out", "o.json", "--actors", "0"], "--actors"),
    (["select", "--strategy", "random", "--budget", "2", "--pool", "p", "--out", "s.json", "--show", "-1"], "--show"),
    (["score", *RUN, "--top", "-1"], "--top"),
    (["pool", "show", "p", "--n", "0"], "--n"),
    (["train", "--model", "m", "--plan", "--gpus", "0"], "--gpus"),
    (["score", *RUN, "--instances", "0"], "instances"),
    (["score", *RUN, "--tasks-per-batch", "0"], "batch sizes must be >= 1"),
    (["score", *RUN, "--seed", "-1"], "seeds must be integers >= 0"),
    (["train", "--model", "m", "--pool", "p", "--tasks", "t.json", "--out", "o", "--batch-size", "0"], "batch_size"),
    (["loop", "actors=-1"], "actors"),
    (["loop", "seeds=[0,-1]"], "seeds"),
    (["experiment", "novelty", "seeds=[-2]"], "seeds"),
])
def test_out_of_range_counts_are_one_line(argv, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _one_line_exit_2(run_cli(*argv, in_process=True), needle)
    assert not list(tmp_path.rglob("raysys.log")) or "loop" in argv  # refused before any stage started


def _broken(tiny: Path, tmp: Path, how: str) -> Path:
    m = tmp / how
    shutil.copytree(tiny, m)
    if how == "config":
        (m / "config.json").write_text('{"model_type": "llama", ')
    elif how == "no-model-type":
        (m / "config.json").write_text("[1, 2]")
    elif how == "truncated":
        f = m / "model.safetensors"
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    elif how == "pickled":
        (m / "model.safetensors").unlink()

        class Payload:  # what a malicious pytorch_model.bin runs when unpickled
            def __reduce__(self):
                return (Path.touch, (tmp / "PWNED",))

        with open(m / "pytorch_model.bin", "wb") as f:
            pickle.dump(Payload(), f)
    elif how == "no-weights":
        (m / "model.safetensors").unlink()
    return m


@pytest.mark.parametrize("how, needle", [
    ("config", "config.json: malformed JSON"),
    ("no-model-type", "not a model config"),
    ("truncated", "model.safetensors: not a whole safetensors file"),
    ("pickled", "pytorch_model.bin: pickled weights"),
    ("no-weights", "no weights"),
])
@pytest.mark.parametrize("verb", ["score", "eval"])
def test_a_broken_model_folder_is_refused_by_the_driver(how, needle, verb, tiny_model_dir, tmp_path):
    from raysys.console import stop_log

    pool, _ = synthetic_pool(tmp_path, rules=2, examples_per_rule=1, unseen_rules=0)
    model = _broken(tiny_model_dir, tmp_path, how)
    out = tmp_path / ("scores.parquet" if verb == "score" else "metrics.json")
    try:
        r = run_cli(verb, "--pool", pool, "--model", model, "--out", out, in_process=True)
    finally:
        stop_log()
    _one_line_exit_2(r, needle)
    assert not (tmp_path / "PWNED").exists()  # no pickled code ran
    assert not out.exists() and not Path(f"{out}.parts").exists()  # nothing started


def test_a_failure_inside_an_actor_is_one_line_with_the_traceback_in_the_log(tiny_model_dir, tmp_path):
    """The model folder passes the driver's checks but its tokenizer is corrupt: the actor
    fails to build its worker; the terminal shows one line naming the worker and the model."""
    pool, _ = synthetic_pool(tmp_path, rules=2, examples_per_rule=1, unseen_rules=0)
    model = tmp_path / "bad-tokenizer"
    shutil.copytree(tiny_model_dir, model)
    (model / "tokenizer.json").write_text("{")
    out = tmp_path / "out" / "scores.parquet"
    r = run_cli("score", "--pool", pool, "--model", model, "--out", out, "--template", "tk", "--perturbations", "1",
                "--max-new-tokens", "2", in_process=False)
    line = _one_line_exit_2(r, "score worker", str(model), stages=True)
    assert "Traceback" in (out.parent / "raysys.log").read_text(), line


def test_two_commands_on_one_machine_at_once(tiny_model_dir, tmp_path):
    """Two `raysys score` runs started together, each starting its own local Ray, into the
    same output (the harder case: they share its parts folder). Both finish; the output
    holds every task once, with the numbers of a run alone."""
    pool, tasks = synthetic_pool(tmp_path, rules=6, examples_per_rule=2, unseen_rules=0)
    out = tmp_path / "same" / "scores.parquet"
    env = {**os.environ, "RAY_ADDRESS": ""}
    args = ["score", "--pool", str(pool), "--model", str(tiny_model_dir), "--perturbations", "2",
            "--max-new-tokens", "4", "--tasks-per-batch", "3"]
    procs = [subprocess.Popen([sys.executable, "-m", "raysys.cli", *args, "--out", str(out)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err
    got = pq.read_table(out).to_pydict()
    assert sorted(got["task_id"]) == sorted(t.task_id for t in tasks)  # every task once
    from raysys.config import GenerationConfig, ScoringConfig
    from raysys.pools.load import load_pool
    from raysys.scoring.scorer import TaskScorer

    cfg = ScoringConfig(perturbations=2, generation=GenerationConfig(max_new_tokens=4))
    rows, _ = TaskScorer(str(tiny_model_dir), cfg).score(list(load_pool(str(pool)).tasks))
    alone = {r["task_id"]: r["prompt_uncertainty"] for r in rows}
    assert dict(zip(got["task_id"], got["prompt_uncertainty"])) == pytest.approx(alone, abs=1e-6)
