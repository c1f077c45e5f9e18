"""The Ray Data scoring pipeline on a local Ray cluster: complete output equal to the
in-process scorer, resume, a killed actor, a killed driver, and the CLI."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace

import pyarrow.parquet as pq
import pytest
from conftest import assert_readable, processes, synthetic_pool

from raysys.config import GenerationConfig, ScoringConfig, SynthConfig
from raysys.pools.markov import generate
from raysys.scoring.pipeline import score_pool
from raysys.scoring.scorer import TaskScorer

pytestmark = pytest.mark.ray
CFG = ScoringConfig(instances=2, perturbations=2, generation=GenerationConfig(6), tasks_per_batch=3)


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return synthetic_pool(tmp_path_factory.mktemp("pool"), rules=30, examples_per_rule=3, seed=11, unseen_rules=3)


def check_complete(out, tasks):
    table = pq.read_table(out)
    ids = table.column("task_id").to_pylist()
    assert ids == [t.task_id for t in tasks]  # every task once, in pool order
    return table


def test_pipeline_matches_in_process_and_resumes(ray_local, pool, tiny_model_dir, tiny_lm, tmp_path):
    path, tasks = pool
    out, details = tmp_path / "scores.parquet", tmp_path / "details.parquet"
    run = score_pool(str(path), str(tiny_model_dir), str(out), CFG, actors=2, details=str(details), progress=False)
    assert (run.n_tasks, run.n_scored_now, run.n_resumed) == (33, 33, 0)
    table = check_complete(out, tasks)
    rows, _ = TaskScorer("", CFG, loaded=tiny_lm).score(tasks)
    for got, want in zip(table.to_pylist(), rows):
        assert abs(got["prompt_uncertainty"] - want["prompt_uncertainty"]) < 1e-7
        assert abs(got["prediction_probability"] - want["prediction_probability"]) < 1e-7
        assert got["model"] == str(tiny_model_dir) and got["n_perturbations"] == CFG.perturbations
    d = pq.read_table(details)
    assert d.num_rows == sum(min(2, len(t.instances)) for t in tasks) * (CFG.perturbations + 1)
    assert set(d.column("perturbation").to_pylist()) == {0, 1, 2}
    before = out.read_bytes()
    again = score_pool(str(path), str(tiny_model_dir), str(out), CFG, actors=2, details=str(details), progress=False)
    assert (again.n_scored_now, again.n_resumed) == (0, 33)  # nothing redone
    assert out.read_bytes() == before  # the same merge, byte for byte


def test_within_keep_actors_the_pool_outlives_a_call_and_keeps_its_model(ray_local, pool, tiny_model_dir,
                                                                         tmp_path):
    """Within keep_actors (a command, a loop trial), two calls of the same shape run on the
    same actors (the same processes), which load the model once; another model folder is
    loaded anew; training releases the pool, and so does the end of keep_actors. Outside
    it, a call's actors end with the call."""
    import shutil

    import ray

    from raysys import actors
    from raysys.cluster import keep_actors
    from raysys.evaluation.evaluate import evaluate_pool

    path, tasks = pool

    def gone() -> bool:
        deadline = time.time() + 30
        while processes("TaskBatch") and time.time() < deadline:
            time.sleep(0.2)
        return not processes("TaskBatch") and not actors._POOLS

    score_pool(str(path), str(tiny_model_dir), str(tmp_path / "a.parquet"), CFG, actors=1, progress=False)
    assert gone()  # no keep_actors: the call's actors ended with it
    with keep_actors():
        score_pool(str(path), str(tiny_model_dir), str(tmp_path / "b.parquet"), CFG, actors=1, progress=False)
        handles = [h for hs in actors._POOLS.values() for h in hs]
        pids = {p.pid for p in processes("TaskBatch")}
        assert len(handles) == 1 and len(pids) == 1
        score_pool(str(path), str(tiny_model_dir), str(tmp_path / "c.parquet"), replace(CFG, seed=CFG.seed + 1),
                   actors=1, progress=False)
        assert [h for hs in actors._POOLS.values() for h in hs] == handles
        assert {p.pid for p in processes("TaskBatch")} == pids
        stats = ray.get([h.stats.remote() for h in handles])
        assert [s["batches"] for s in stats] == [2 * -(-len(tasks) // CFG.tasks_per_batch)]
        assert [s["models loaded"] for s in stats] == [1]  # the config changed, the model did not
        assert [s["workers built"] for s in stats] == [2]
        score_pool(str(path), str(tiny_model_dir), str(tmp_path / "bf16.parquet"), replace(CFG, dtype="bfloat16"),
                   actors=1, progress=False)  # another dtype: the weights loaded anew
        assert [s["models loaded"] for s in ray.get([h.stats.remote() for h in handles])] == [2]
        copy = shutil.copytree(tiny_model_dir, tmp_path / "model")  # another folder: loaded anew
        evaluate_pool(str(path), str(copy), str(tmp_path / "eval.json"), actors=1, progress=False)
        assert [s["models loaded"] for s in ray.get([h.stats.remote() for h in handles])] == [3]
        assert pq.read_table(tmp_path / "c.parquet").column("task_id").to_pylist() == [t.task_id for t in tasks]
        actors.release_pools()  # what training does first
        assert gone()
        score_pool(str(path), str(tiny_model_dir), str(tmp_path / "d.parquet"), CFG, actors=1, progress=False)
        assert actors._POOLS
    assert gone()  # the end of keep_actors


def test_killed_actor_is_restarted_and_output_is_complete(ray_local, pool, tiny_model_dir, tmp_path):
    path, tasks = pool
    out = tmp_path / "scores.parquet"
    cfg = ScoringConfig(instances=3, perturbations=3, generation=GenerationConfig(24), tasks_per_batch=2, seed=5)
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(run=score_pool(
        str(path), str(tiny_model_dir), str(out), cfg, actors=2, progress=False)))
    worker.start()
    parts = out.parent / "scores.parquet.parts"
    killed = None
    deadline = time.time() + 240
    while time.time() < deadline and killed is None:
        if list(parts.glob("*/scores-*.parquet")) and processes("TaskBatch"):
            killed = processes("TaskBatch")[0]
            killed.send_signal(signal.SIGKILL)
        time.sleep(0.2)
    worker.join(timeout=300)
    assert killed is not None and "run" in result
    check_complete(out, tasks)
    n_rows = sum(pq.read_metadata(p).num_rows for p in parts.glob("*/scores-*.parquet"))
    assert n_rows >= len(tasks)  # a batch may be redone after the kill; the output has each task once


def test_killed_driver_then_rerun_finishes_the_rest(pool, tiny_model_dir, tmp_path):
    path, tasks = pool
    out = tmp_path / "scores.parquet"
    cmd = [sys.executable, "-m", "raysys.cli", "score", "--pool", str(path), "--model", str(tiny_model_dir),
           "--out", str(out), "--instances", "3", "--perturbations", "3", "--max-new-tokens", "24",
           "--tasks-per-batch", "2", "--actors", "1", "--seed", "9"]
    env = {**os.environ, "RAY_ADDRESS": ""}
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    parts = out.parent / "scores.parquet.parts"
    deadline = time.time() + 240
    while time.time() < deadline and len(list(parts.glob("*/scores-*.parquet"))) < 2 and proc.poll() is None:
        time.sleep(0.2)
    if proc.poll() is not None:
        pytest.fail(f"the driver ended (exit {proc.returncode}) before it could be killed:\n"
                    + proc.stderr.read().decode()[-3000:])
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes it started
    proc.wait()
    deadline = time.time() + 60  # an actor may finish the batch in hand before Ray reaps it
    while processes("TaskBatch", session=proc.pid) and time.time() < deadline:
        time.sleep(0.2)
    done_before = sum(pq.read_metadata(p).num_rows for p in parts.glob("*/scores-*.parquet"))
    assert 0 < done_before < len(tasks) and not out.exists()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"({done_before} already done)" in r.stderr
    log = assert_readable(r, tmp_path / "raysys.log")
    assert "View the dashboard" not in log  # scoring runs no Ray Train: its local cluster has no dashboard
    assert f"  scoring: {len(tasks)}/{len(tasks)} tasks" in r.stderr  # the bar's last word (not on a TTY: no bar)
    check_complete(out, tasks)
    n_rows = sum(pq.read_metadata(p).num_rows for p in parts.glob("*/scores-*.parquet"))
    assert n_rows == len(tasks)  # finished tasks were not scored again
    assert "most prompt-uncertain" in r.stdout


def test_non_parquet_pool_is_converted_and_an_edited_pool_is_a_new_run(ray_local, tiny_model_dir, tmp_path):
    from raysys.pools.canonical import write_jsonl_tasks

    tasks = generate(SynthConfig(rules=4, examples_per_rule=2, seed=2))
    pool = tmp_path / "pool.jsonl"
    write_jsonl_tasks(tasks, pool)
    cfg = ScoringConfig(instances=1, perturbations=1, generation=GenerationConfig(3), tasks_per_batch=2)
    out = tmp_path / "s.parquet"
    score_pool(str(pool), str(tiny_model_dir), str(out), cfg, actors=1, progress=False)
    check_complete(out, tasks)
    other = generate(SynthConfig(rules=3, examples_per_rule=2, seed=7))
    time.sleep(0.01)
    write_jsonl_tasks(other, pool)  # same path and settings, new content: a new run, not stale scores
    run = score_pool(str(pool), str(tiny_model_dir), str(out), cfg, actors=1, progress=False)
    assert (run.n_resumed, run.n_scored_now) == (0, 3)
    check_complete(out, other)
