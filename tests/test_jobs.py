"""`ray job submit` against a real head: a local `ray start --head` bound to loopback
(token auth off with RAY_AUTH_MODE=disabled for the head and the client), the repo as
the job's working dir, the loop job entrypoint on a shipped config, real parts."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import NOISE, start_head

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture()
def head(tmp_path):
    """A Ray head of its own for the job (conftest.start_head), stopped after the test."""
    h = start_head(tmp_path / "head.log")
    yield h.url, h.env
    h.stop()


def _wait(client, sub: str, timeout: float = 480):
    """The job's final status, asked every second: a busy head's dashboard may drop a
    request now and then (the job runs on regardless), so a failed ask is asked again."""
    from ray.job_submission import JobStatus

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            status = client.get_job_status(sub)
            if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
                return status, client.get_job_logs(sub)
        except Exception:  # noqa: BLE001, S110 - the dashboard's HTTP errors, a closed connection: ask again
            pass
        time.sleep(1)
    pytest.fail(f"job {sub} did not finish in {timeout:.0f} s")


@pytest.mark.ray
def test_ray_job_submit_runs_the_loop_on_a_local_head(head, tmp_path):
    """Submitted with --no-wait, then followed by the job client (status, logs), as a
    scheduler would: the log stream of a waiting `ray job submit` can drop when the
    machine is busy (other tests beside this one), the job itself does not."""
    url, env = head
    work = tmp_path / "loop"
    sub = f"raysys-test-{os.getpid()}"
    for attempt in range(6):  # the head's job agent registers some seconds after its dashboard answers
        r = subprocess.run(
            [str(BIN / "ray"), "job", "submit", "--no-wait", "--address", url, "--submission-id", f"{sub}-{attempt}",
             "--working-dir", str(ROOT), "--", "python", "jobs/loop.py", "--config", "jobs/configs/loop_tiny.yaml",
             f"work_dir={work}", "train.workers=1"],  # one Ray Train worker: tests/test_training.py runs two
            env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
        if r.returncode == 0 or "No available agent to submit job" not in r.stdout + r.stderr:
            break
        time.sleep(5)
    sub = f"{sub}-{attempt}"
    assert r.returncode == 0, "\n".join(line for line in (r.stdout + r.stderr).splitlines()
                                        if "packaging.py" not in line)[-5000:]
    from ray.job_submission import JobStatus, JobSubmissionClient

    status, logs = _wait(JobSubmissionClient(url), sub)
    assert status == JobStatus.SUCCEEDED, logs[-5000:]
    r = subprocess.CompletedProcess(r.args, 0, logs, "")  # the job's terminal: what `ray job logs` shows
    assert "prompt-uncertainty" in r.stdout and "results.parquet" in r.stdout
    # the job's terminal: the trial's per-round lines relayed, Ray's and the libraries' output in the log
    assert "[prompt-uncertainty seed 0] round 1: training the base model on 8 tasks" in r.stdout, r.stdout
    assert f"log: {work / 'raysys.log'}" in r.stdout and (work / "raysys.log").is_file()
    noisy = [line for line in r.stdout.splitlines() if any(n in line for n in NOISE)]
    assert not noisy, noisy
    rows = pq.read_table(work / "results.parquet").to_pylist()
    assert [(x["strategy"], x["seed"], x["round"], x["n_tasks"]) for x in rows] == [
        ("prompt-uncertainty", 0, 0, 4), ("prompt-uncertainty", 0, 1, 8)]
    assert all(x["test_rougeL"] is not None for x in rows)
    # each round's tokens are its stages' own counts, summed here from their files
    r1 = work / "prompt-uncertainty" / "seed-0" / "round-1"
    assert rows[1]["score_tokens"] == sum(pq.read_table(r1 / "scores" / "scores.parquet").column("tokens").to_pylist())
    assert rows[1]["eval_tokens"] == sum(t["tokens"] for f in r1.glob("eval-*.json")
                                         for t in json.loads(f.read_text())["per_task"]) > 0
    report = json.loads((r1 / "model" / "raysys_train.json").read_text())
    assert rows[1]["train_tokens"] == sum(e["trained_tokens"] for e in report["epochs"]) > 0  # every worker's
    # FLOPs: 2 x parameters per token read (scoring, evaluation with the base and the trained
    # model), 6 x parameters per trained token (the trained model's parameters, LoRA included)
    from raysys.models import count_parameters, load_model

    base = count_parameters(load_model(rows[0]["model_dir"]).model)
    trained = report["epochs"][0]["parameters"]
    assert trained >= base  # the base model's, plus adapters when LoRA trained it
    assert rows[1]["score_flops"] == pytest.approx(2 * base * rows[1]["score_tokens"])
    assert rows[1]["train_flops"] == pytest.approx(6 * trained * rows[1]["train_tokens"])
    assert rows[1]["eval_flops"] == pytest.approx(sum(2 * count_parameters(load_model(
        json.loads(f.read_text())["model"]).model) * json.loads(f.read_text())["tokens"] for f in r1.glob("eval-*.json")))
    assert rows[0]["score_tokens"] == 0 and rows[0]["model"] == "tiny"
    assert json.loads((work / "loop.json").read_text())["work_dir"] == str(work)
    assert (work / "results.csv").is_file() and (work / "curves.png").stat().st_size > 5_000
