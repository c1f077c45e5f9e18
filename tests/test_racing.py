"""Perturbation racing: the bound and the rule against direct computations, a race in one
process against a full run on a tiny model, and `raysys score --racing` on a local Ray
cluster (its output, details and resume after a killed driver)."""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import processes, run_cli, synthetic_pool
from hypothesis import given, settings
from hypothesis import strategies as st

from raysys.config import GenerationConfig, ScoringConfig
from raysys.scoring import race_rule
from raysys.scoring.race_rounds import in_process, race
from raysys.scoring.scorer import TaskScorer


def test_schedule():
    assert race_rule.schedule(10, 3) == [3, 5, 7, 10]
    assert race_rule.schedule(20, 3) == [3, 5, 7, 10, 15, 20]
    assert race_rule.schedule(4, 3) == [3, 4]
    assert race_rule.schedule(2, 5) == [2]


def test_interval_is_the_finite_population_t_interval():
    d = np.array([0.1, 0.3, 0.2])
    lo, hi = race_rule.interval(d, 10, 0.05)
    # t_{2, 0.975} = 4.302653 (tables); s = 0.1; finite-population factor sqrt(7 / 9)
    half = 4.302653 * 0.1 / math.sqrt(3) * math.sqrt(7 / 9)
    assert lo == pytest.approx(0.2 - half, abs=1e-6) and hi == pytest.approx(0.2 + half, abs=1e-6)
    assert race_rule.interval(np.array([0.1, 0.3, 0.2, 0.4]), 4, 0.05) == (0.25, 0.25)  # m = K: exact
    assert race_rule.interval(np.array([0.2, 0.2, 0.2]), 10, 0.05) == pytest.approx((0.2, 0.2), abs=1e-12)  # no spread


def test_trigamma_inverse():
    from scipy.special import polygamma

    for x in (1e-8, 0.01, 0.3, 1.0, 7.5, 1e3, 1e8):
        assert float(polygamma(1, race_rule.trigamma_inverse(x))) == pytest.approx(x, rel=1e-6)


def test_moderated_interval_by_hand():
    d = np.array([0.1, 0.3, 0.2])
    # prior CV^2 0.25 with 6 df: s~^2 = (6 * 0.25 * 0.2^2 + 2 * 0.01) / 8 = 0.01; t_{8, 0.975} = 2.306004
    lo, hi = race_rule.moderated_interval(d, 10, 0.05, 0.25, 6.0)
    half = 2.306004 * math.sqrt(0.01 / 3) * math.sqrt(7 / 9)
    assert lo == pytest.approx(0.2 - half, abs=1e-6) and hi == pytest.approx(0.2 + half, abs=1e-6)
    # d0 infinite: the prior's variance (0.25 * 0.04) and the normal quantile 1.959964
    lo, hi = race_rule.moderated_interval(d, 10, 0.05, 0.25, math.inf)
    assert hi - 0.2 == pytest.approx(1.959964 * math.sqrt(0.01 / 3) * math.sqrt(7 / 9), abs=1e-6)
    # no spread of its own still gets the prior's width; m = K is exact
    lo, hi = race_rule.moderated_interval(np.array([0.2, 0.2, 0.2]), 10, 0.05, 0.25, 6.0)
    assert hi - 0.2 == pytest.approx(2.306004 * math.sqrt(6 * 0.01 / 8 / 3) * math.sqrt(7 / 9), abs=1e-6)
    assert race_rule.moderated_interval(np.array([0.1, 0.3, 0.2, 0.4]), 4, 0.05, 0.25, 6.0) == (0.25, 0.25)


def _hierarchical(rng, tasks: int, k: int, c2: float, d0: float) -> list[np.ndarray]:
    """Each task's k deviations: U_t ~ U(0.05, 0.5), sigma_t^2 = c2 U_t^2 d0 / chi2(d0), normal."""
    u = rng.uniform(0.05, 0.5, tasks)
    sigma = np.sqrt(c2 * u ** 2 * d0 / rng.chisquare(d0, tasks))
    return [ut + st * rng.standard_normal(k) for ut, st in zip(u, sigma)]


def test_relative_prior_recovers_the_generating_prior():
    """Deviations drawn from the hierarchical model the moderated rule assumes: the moment
    fit finds its prior CV^2 and degrees of freedom; with one CV for all, d0 is infinite."""
    rng = np.random.default_rng(0)
    ds = [d[:5] for d in _hierarchical(rng, 20_000, 5, 0.01, 8.0)]
    c2, d0 = race_rule.relative_prior(ds)
    assert c2 == pytest.approx(0.01, rel=0.1) and d0 == pytest.approx(8.0, rel=0.3)
    same = [u + 0.1 * u * rng.standard_normal(5) for u in rng.uniform(0.05, 0.5, 5_000)]
    c2, d0 = race_rule.relative_prior(same)
    assert c2 == pytest.approx(0.01, rel=0.1) and d0 > 200
    assert race_rule.relative_prior(ds[:2]) is None  # too few tasks: the t rule
    lo, hi = race_rule.intervals(ds[:2], 10, 0.05, "moderated")
    assert (lo, hi) == (pytest.approx([race_rule.interval(d, 10, 0.05)[0] for d in ds[:2]]),
                        pytest.approx([race_rule.interval(d, 10, 0.05)[1] for d in ds[:2]]))


@pytest.mark.parametrize("rule", ["t", "moderated"])
def test_interval_coverage_on_the_model_it_assumes(rule):
    """From the first 3 of K = 10 deviations, the share of tasks whose bounds contain the
    mean of all 10 (the full run's U) is about 1 - delta; the moderated bounds are narrower."""
    rng = np.random.default_rng(1)
    full = _hierarchical(rng, 4_000, 10, 0.09, 6.0)
    lo, hi = race_rule.intervals([d[:3] for d in full], 10, 0.05, rule)
    u = np.array([d.mean() for d in full])
    assert 0.93 < np.mean((lo <= u) & (u <= hi)) < 0.975
    t_lo, t_hi = race_rule.intervals([d[:3] for d in full], 10, 0.05, "t")
    if rule == "moderated":
        assert np.median(hi - lo) < 0.8 * np.median(t_hi - t_lo)


def test_decide_by_hand():
    # bounds: a [0.8, 0.9], b [0.5, 0.7], c [0.45, 0.6], d [0.0, 0.1]; top 2
    lo, hi = [0.8, 0.5, 0.45, 0.0], [0.9, 0.7, 0.6, 0.1]
    assert race_rule.decide(lo, hi, 2) == ["in", "open", "open", "out"]  # b and c overlap
    assert race_rule.decide(lo, hi, 1) == ["in", "out", "out", "out"]
    assert race_rule.decide(lo, hi, 3) == ["in", "in", "in", "out"]  # d is surely below three
    assert race_rule.decide(lo, hi, 4) == ["in"] * 4
    # decided tasks keep their status; the places left shrink
    assert race_rule.decide(lo, hi, 2, ["out", "open", "open", "open"]) == ["out", "in", "in", "out"]
    # ties after the last round are ranked by (-U, task_id)
    assert race_rule.finish(["open"] * 3, [0.5, 0.5, 0.2], ["b", "a", "c"], 1) == ["out", "in", "out"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=2, max_size=40, unique=True), st.data())
def test_intervals_that_hold_never_misplace_a_task(u, data):
    """Whenever every interval contains its task's full-run U, each task decided in is in
    the true top B and each decided out is not, whatever the widths."""
    budget = data.draw(st.integers(1, len(u)))
    lo = [x - data.draw(st.floats(0, 0.5)) for x in u]
    hi = [x + data.draw(st.floats(0, 0.5)) for x in u]
    ids = [f"t{i:02d}" for i in range(len(u))]
    status = race_rule.decide(lo, hi, budget)
    truth = race_rule.top_b(u, ids, budget)
    assert all(ids[i] in truth for i, s in enumerate(status) if s == "in")
    assert all(ids[i] not in truth for i, s in enumerate(status) if s == "out")
    assert sum(s == "in" for s in status) <= budget
    final = race_rule.finish(status, u, ids, budget)  # exact values at the end: the full run's top B
    assert {ids[i] for i, s in enumerate(final) if s == "in"} == truth


CFG = ScoringConfig(instances=3, perturbations=6, generation=GenerationConfig(6), tasks_per_batch=4, racing=4,
                    racing_first=2)


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return synthetic_pool(tmp_path_factory.mktemp("pool"), rules=14, examples_per_rule=4, seed=5, unseen_rules=2)


def test_race_in_process_matches_the_full_run(pool, tiny_lm):
    _, tasks = pool
    scorer = TaskScorer("", CFG, loaded=tiny_lm)
    result = race([t.task_id for t in tasks], CFG, in_process(scorer, tasks))
    full, full_details = scorer.score(tasks, True)
    full_u = {r["task_id"]: r["prompt_uncertainty"] for r in full}
    rows = {r["task_id"]: r for r in result.rows}
    p_full = {(d["task_id"], d["instance_id"], d["perturbation"]): d["p"] for d in full_details}
    for d in result.details:  # every prompt racing scored is the full run's prompt, with its p
        assert d["p"] == pytest.approx(p_full[(d["task_id"], d["instance_id"], d["perturbation"])], abs=1e-6)
    assert len(result.details) == sum(r["n_instances"] * (r["n_perturbations"] + 1) for r in result.rows)
    raced_to_k = [t for t, r in rows.items() if r["n_perturbations"] == CFG.perturbations]
    assert raced_to_k and all(not rows[t]["decided_early"] for t in raced_to_k)
    for t in raced_to_k:  # the full run's U
        assert rows[t]["prompt_uncertainty"] == pytest.approx(full_u[t], abs=1e-6)
    for t, r in rows.items():  # an early task's U is the mean over the perturbations it got
        ps = np.array([[p_full[(t, d["instance_id"], j)] for j in range(r["n_perturbations"] + 1)]
                       for d in full_details if d["task_id"] == t and d["perturbation"] == 0])
        assert r["prompt_uncertainty"] == pytest.approx(np.mean(np.abs(ps[:, 1:] - ps[:, :1])), abs=1e-6)
        want = {k: v for k, v in next(f for f in full if f["task_id"] == t).items()
                if k in ("prediction_probability", "perplexity", "ifd", "n_instances")}
        assert {k: r[k] for k in want} == pytest.approx(want, rel=1e-6)  # float32 forwards in other batches
    chosen = {t for t, r in rows.items() if r["racing_selected"]}
    assert len(chosen) == CFG.racing
    assert result.forwards < result.forwards_full  # fewer perturbed forwards than the full run
    assert result.forwards == sum(r["n_instances"] * r["n_perturbations"] for r in result.rows)
    # replayed offline from the full run's details (benchmarks/bench_race_replay.py), the race
    # decides as it did live: the same perturbations spent and the same top B
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_race_replay

    ids, k, run_round = bench_race_replay.replay(full_details)
    assert ids == [t.task_id for t in tasks] and k == CFG.perturbations
    again = race(ids, CFG, run_round)
    assert [(r["task_id"], r["n_perturbations"], r["racing_selected"]) for r in again.rows] == [
        (r["task_id"], r["n_perturbations"], r["racing_selected"]) for r in result.rows]
    assert again.forwards == result.forwards and again.rounds == result.rounds
    assert bench_race_replay.full_u(full_details) == pytest.approx(full_u, abs=1e-9)
    moderated = race(ids, replace(CFG, racing_rule="moderated"), run_round)  # decides no worse here
    assert moderated.forwards <= result.forwards and {r["task_id"] for r in moderated.rows if r["racing_selected"]} \
        == race_rule.top_b([full_u[t] for t in ids], ids, CFG.racing)
    wide = replace(CFG, racing_delta=1e-12)  # bounds so wide that nothing is decided before K
    exact = race([t.task_id for t in tasks], wide, in_process(TaskScorer("", wide, loaded=tiny_lm), tasks))
    assert {r["task_id"] for r in exact.rows if r["racing_selected"]} == race_rule.top_b(
        [full_u[t.task_id] for t in tasks], [t.task_id for t in tasks], CFG.racing)


@pytest.mark.ray
def test_racing_cli_resumes_after_a_killed_driver(pool, tiny_model_dir, tiny_lm, tmp_path):
    path, tasks = pool
    out, details = tmp_path / "scores.parquet", tmp_path / "details.parquet"
    args = ["score", "--pool", str(path), "--model", str(tiny_model_dir), "--out", str(out), "--details", str(details),
            "--instances", "3", "--perturbations", "3", "--max-new-tokens", "6", "--tasks-per-batch", "4",
            "--racing", "4", "--racing-first", "2", "--actors", "1"]
    env = {**os.environ, "RAY_ADDRESS": ""}
    proc = subprocess.Popen([sys.executable, "-m", "raysys.cli", *args], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    parts = out.parent / "scores.parquet.parts"

    def rows(round_: int) -> int:
        return sum(pq.read_metadata(p).num_rows for p in parts.glob(f"*/round-{round_}/scores-*.parquet"))

    # kill it once round 1 is done (round 2, which may finish in a moment, may have begun):
    # waiting for a batch of round 2 left the race finished before the kill now and then
    deadline = time.time() + 240
    while time.time() < deadline and rows(0) < len(tasks) and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 60
    while processes("TaskBatch", session=proc.pid) and time.time() < deadline:
        time.sleep(0.2)
    assert not out.exists()
    round0 = rows(0)
    assert round0 == len(tasks)
    r = run_cli(*args, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"({len(tasks)} already done)" in r.stderr  # round 0 not redone
    assert sum(pq.read_metadata(p).num_rows for p in parts.glob("*/round-0/scores-*.parquet")) == round0
    assert "racing:" in r.stderr and "top 4" in r.stdout
    table = pq.read_table(out).to_pylist()
    assert [row["task_id"] for row in table] == [t.task_id for t in tasks]
    assert sum(row["racing_selected"] for row in table) == 4
    # the same race as in one process, task by task
    cfg = replace(CFG, perturbations=3)  # rounds at 2 and 3 perturbations
    scorer = TaskScorer("", cfg, loaded=tiny_lm)
    want = {row["task_id"]: row for row in race([t.task_id for t in tasks], cfg, in_process(scorer, tasks)).rows}
    for row in table:
        w = want[row["task_id"]]
        assert (row["n_perturbations"], row["racing_selected"]) == (w["n_perturbations"], w["racing_selected"])
        assert row["prompt_uncertainty"] == pytest.approx(w["prompt_uncertainty"], abs=1e-6)
    d = pq.read_table(details)
    assert d.num_rows == sum(row["n_instances"] * (row["n_perturbations"] + 1) for row in table)
