"""The active loop: its plans (pure), its rounds driven by fake collaborators (no Ray),
the Ray Tune driver with the fakes (results, rerun, a killed driver resumed), and the
fail-fast resource check."""
from __future__ import annotations

import json
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

from raysys.config import LoopConfig, SelectConfig, SynthConfig, TrainConfig
from raysys.errors import RaysysError
from raysys.loop.plan import Universe, draw_sets, plan_trials, remaining, round_budget, selection_seed
from raysys.loop.rounds import RECORD, base_round, latest_state, run_round, run_trial, start_state
from raysys.pools.canonical import write_parquet_tasks
from raysys.pools.markov import generate

sys.path.insert(0, str(Path(__file__).parent))
from loop_fakes import FakeStages, calls, make_base, model_id  # noqa: E402

TESTS = Path(__file__).parent


def small_cfg(work: Path, pool: str, **kw) -> LoopConfig:
    base = dict(work_dir=str(work), pool=pool, strategies=("prompt-uncertainty", "random"), seeds=(0, 1),
                schedule=(4, 8, 12), validation_tasks=3, test_tasks=5, actors=1,
                train=TrainConfig(workers=1, micro_batch_size=1, batch_size=1))
    base.update(kw)
    return LoopConfig(**base)


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> tuple[str, Universe]:
    tasks = generate(SynthConfig(rules=40, examples_per_rule=2, unseen_rules=6, seed=3))
    path = tmp_path_factory.mktemp("loop-pool") / "pool.parquet"
    write_parquet_tasks(tasks, path)
    test = [t.task_id for t in tasks if t.metadata["split"] == "unseen"][:5]
    return str(path), Universe(tuple(t.task_id for t in tasks), tuple(test))


def run_sequential(cfg: LoopConfig, stages, universe: Universe, base: str, work: Path) -> dict:
    """The loop without Ray: each seed's round 0, then every trial's rounds; the reports."""
    reports: dict[tuple[str, int], list[dict]] = {}
    for seed in cfg.seeds:
        base_round(cfg, base, draw_sets(universe, seed, cfg), universe, stages, work, say=lambda m: None)
    for strategy in cfg.strategies:
        for seed in cfg.seeds:
            rec = json.loads((work / f"seed-{seed}" / "round-0" / RECORD).read_text())
            got = reports.setdefault((strategy, seed), [])
            run_trial(cfg, start_state(strategy, rec), base, draw_sets(universe, seed, cfg), universe, stages, work,
                      lambda record, state: got.append(record), fresh=True, say=lambda m: None)
    return reports


# ---- plans ---------------------------------------------------------------------------------

def test_draw_sets_are_disjoint_seeded_and_avoid_test_tasks(pool, tmp_path):
    _, uni = pool
    cfg = small_cfg(tmp_path, "")
    a, a2, b = draw_sets(uni, 0, cfg), draw_sets(uni, 0, cfg), draw_sets(uni, 1, cfg)
    assert a == a2 and a != b
    assert len(a.initial) == 4 and len(a.validation) == 3 and not set(a.initial) & set(a.validation)
    assert not (set(a.initial) | set(a.validation)) & set(uni.test_ids)
    left = remaining(uni, a, a.initial, cfg, 1)
    assert len(left) == len(uni.pool_ids) - 5 - 4 - 3
    sub = remaining(uni, a, a.initial, replace(cfg, candidates=10), 1)
    assert len(sub) == 10 and set(sub) <= set(left)
    assert sub == remaining(uni, a, a.initial, replace(cfg, candidates=10), 1)
    assert selection_seed(0, 1) != selection_seed(0, 2) != selection_seed(1, 1)
    with pytest.raises(RaysysError, match="the loop needs"):
        draw_sets(uni, 0, replace(cfg, schedule=(4, 100)))


def test_a_schedule_of_tokens_fills_each_round_to_its_total(pool, tmp_path):
    """budget_unit tokens: round 0 takes the seed's random order while each task's tokens
    fit the first total; each later round selects what is left to the next total."""
    path, uni = pool
    costs = {t: float(10 + i % 7) for i, t in enumerate(uni.trainable())}
    tok = Universe(uni.pool_ids, uni.test_ids, costs)
    cfg = small_cfg(tmp_path / "w", path, select=SelectConfig(budget_unit="tokens"), schedule=(40, 80, 120),
                    strategies=("random",), seeds=(0,))
    sets = draw_sets(tok, 0, cfg)
    assert sets.validation == draw_sets(uni, 0, small_cfg(tmp_path, path)).validation  # as by tasks
    order = np.random.default_rng([0, 0x5EED]).permutation(len(uni.trainable()))
    want, left = [], 40.0
    for i in order[3:]:
        t = uni.trainable()[i]
        if costs[t] <= left:
            want.append(t)
            left -= costs[t]
    assert list(sets.initial) == want and 40 - 16 < tok.cost(sets.initial) <= 40
    fakes = FakeStages(str(tmp_path / "calls.jsonl"))
    base = make_base(tmp_path / "base")
    base_round(cfg, base, sets, tok, fakes, tmp_path / "w", say=lambda m: None)
    rec = json.loads((tmp_path / "w" / "seed-0" / "round-0" / RECORD).read_text())
    state = run_round(cfg, start_state("random", rec), base, sets, tok, fakes, tmp_path / "w", say=lambda m: None)
    asked = [c for c in calls(fakes.log) if c["op"] == "select"]
    assert [c["budget"] for c in asked] == [int(80 - tok.cost(sets.initial))]
    assert state.trained[: len(sets.initial)] == sets.initial
    some = list(sets.initial) + [t for t in uni.trainable() if t not in sets.initial][:3]
    assert round_budget(tok, cfg, some, 2) == int(120 - tok.cost(some))
    assert round_budget(tok, cfg, uni.trainable(), 2) == 1  # past the total: still a step
    with pytest.raises(RaysysError, match="training tokens outside the 3 validation"):
        draw_sets(tok, 0, replace(cfg, schedule=(40, 10**6)))


def test_the_driver_counts_every_trainable_tasks_tokens_for_a_schedule_of_tokens(pool, tmp_path):
    from transformers import AutoTokenizer

    from raysys.loop.driver import prepare
    from raysys.models import prompt_template
    from raysys.pools.load import load_pool
    from raysys.training.data import encode, training_examples

    path, _ = pool
    cfg = small_cfg(tmp_path / "w", path, select=SelectConfig(budget_unit="tokens"), schedule=(100, 200))
    prep = prepare(cfg, say=lambda m: None)
    trainable = prep.universe.trainable()
    assert set(prep.universe.costs) == set(trainable) and len(trainable) == len(prep.universe.pool_ids) - 5
    tok = AutoTokenizer.from_pretrained(prep.model)
    template = prompt_template(prep.model, cfg.train.prompt.template, cfg.train.prompt.chat_body, False)
    tasks = list(load_pool(path).tasks)
    for t in [x for x in tasks if x.task_id in set(trainable)][:5]:  # prompt and target tokens of its examples
        want = sum(len(encode(tok, "causal", r["prompt"], r["target"], cfg.train)[0])
                   for r in training_examples(tasks, [t.task_id], cfg.train, template))
        assert prep.universe.costs[t.task_id] == want > 0
    assert prepare(small_cfg(tmp_path / "w2", path), say=lambda m: None).universe.costs is None


@pytest.mark.parametrize("cluster, kw, want", [
    ({"CPU": 2}, {}, (4, 1, 2.0, 0)),  # 2 actors/workers + 1: one trial at a time, all CPUs
    ({"CPU": 16}, {}, (4, 4, 4.0, 0)),
    ({"CPU": 16}, {"max_concurrent_trials": 2}, (4, 2, 8.0, 0)),
    ({"CPU": 16, "GPU": 8}, {"actors": 2, "train": TrainConfig(workers=4)}, (4, 2, 8.0, 4)),
    ({"CPU": 8, "GPU": 8}, {"actors": 1, "train": TrainConfig(workers=1)}, (4, 4, 2.0, 1)),
])
def test_plan_trials(cluster, kw, want, tmp_path):
    cfg = replace(LoopConfig(work_dir=str(tmp_path)), **kw)
    p = plan_trials(cluster, cfg)
    assert (p.trials, p.concurrent, p.cpus_per_trial, p.gpus_per_trial) == want


@pytest.mark.parametrize("cluster, kw, message", [
    ({"CPU": 1}, {}, "needs at least 1.5 CPUs"),
    ({"CPU": 16, "GPU": 2}, {"train": TrainConfig(workers=4)}, "needs 4 GPUs"),
    ({"CPU": 16, "GPU": 8}, {"max_concurrent_trials": 3, "train": TrainConfig(workers=4)}, "at most 2"),
    ({"CPU": 6}, {"max_concurrent_trials": 3}, "at most 2"),
])
def test_plan_trials_fails_fast(cluster, kw, message, tmp_path):
    with pytest.raises(RaysysError, match=message):
        plan_trials(cluster, replace(LoopConfig(work_dir=str(tmp_path)), **kw))


def test_config_checks(tmp_path):
    from raysys.errors import ConfigError
    from raysys.loop.driver import prepare

    for kw, msg in [({"schedule": (10, 5)}, "increasing"), ({"seeds": (1, 1)}, "without repeats"),
                    ({"train_from": "scratch"}, "train_from")]:
        with pytest.raises(ConfigError, match=msg):
            LoopConfig(work_dir=str(tmp_path), **kw)
    for strategies, msg in [(("nope", "nix"), "unknown strategies"), (("random", "similarity"), "needs targets"),
                            (("rds",), "rds strategy needs targets")]:  # checked before anything starts
        with pytest.raises(ConfigError, match=msg):
            prepare(LoopConfig(work_dir=str(tmp_path / "w"), strategies=strategies))
    assert not (tmp_path / "w").exists()


def test_loop_taskmap_agrees_with_the_category_selections_when_shares_change(pool, tmp_path):
    """The loop draws its Task Map with the shares it selects by (select.taskmap): with
    shares other than the defaults, the ambiguous / easy / difficult selections of a round
    are exactly the tasks the map puts in those categories."""
    import numpy as np
    import pyarrow as pa

    from raysys.config import SelectConfig, TaskMapConfig
    from raysys.loop.results import draw_taskmap
    from raysys.loop.rounds import round_dir
    from raysys.stages import RayStages, StageSettings

    path, uni = pool
    ids = list(uni.pool_ids[:30])
    rng = np.random.default_rng(7)
    shares = TaskMapConfig(ambiguous_share=0.2, easy_share=0.25)
    cfg = small_cfg(tmp_path / "w", path, strategies=("ambiguous", "easy", "difficult"), seeds=(0,), schedule=(4, 8),
                    select=SelectConfig(taskmap=shares))
    scores = round_dir(tmp_path / "w", "ambiguous", 0, 1) / "scores" / "scores.parquet"
    scores.parent.mkdir(parents=True)
    pq.write_table(pa.table({"task_id": ids, "prompt_uncertainty": rng.permutation(30) / 30.0,
                             "prediction_probability": rng.permutation(30) / 30.0}), scores)
    tm = draw_taskmap(cfg, tmp_path / "w", cfg.seeds[0])
    counts = {r["category"]: r["tasks"] for r in tm["counts"]}
    assert counts == {"Ambiguous": 6, "Easy": 6, "Difficult": 18}  # 0.2 x 30, then 0.25 x 24
    stages = RayStages(StageSettings.of(cfg), path, path)
    for strategy, category in (("ambiguous", "Ambiguous"), ("easy", "Easy"), ("difficult", "Difficult")):
        picked = stages.select(strategy, counts[category], 0, ids, str(scores), tmp_path / strategy)
        assert set(picked) == {t for t, c in tm["categories"].items() if c == category}, strategy


# ---- the rounds, with fakes ------------------------------------------------------------------

def test_rounds_follow_the_schedule_and_share_round_zero(pool, tmp_path):
    path, uni = pool
    cfg = small_cfg(tmp_path / "w", path)
    fakes = FakeStages(str(tmp_path / "calls.jsonl"))
    base = make_base(tmp_path / "base")
    reports = run_sequential(cfg, fakes, uni, base, tmp_path / "w")
    log = calls(fakes.log)
    # round 0: trained once per seed, from the base model, however many strategies
    r0 = [c for c in log if c["op"] == "train" and c["at"].endswith("round-0")]
    assert sorted(c["at"] for c in r0) == ["seed-0/round-0", "seed-1/round-0"] and {c["model"] for c in r0} == {"base"}
    for (strategy, seed), recs in reports.items():
        sets = draw_sets(uni, seed, cfg)
        assert [r["round"] for r in recs] == [0, 1, 2]
        assert [r["n_tasks"] for r in recs] == list(cfg.schedule)
        assert recs[0]["selected"] == list(sets.initial)
        assert recs[0]["test_rougeL"] == reports[(cfg.strategies[0], seed)][0]["test_rougeL"]  # the shared base
        trained = list(sets.initial)
        for r in recs[1:]:
            assert len(r["selected"]) == 4 and not set(r["selected"]) & (set(trained) | set(sets.validation)
                                                                         | set(uni.test_ids))
            trained += r["selected"]
            # train_from=base: the base model trained on every task so far (the fake's id says so)
            assert model_id(r["model"]) == _fake_id("base", trained)
    # the scores-ranked strategy picks the most uncertain candidates; random gets its picks scored
    rec = reports[("prompt-uncertainty", 0)][1]
    scores = pq.read_table(tmp_path / "w/prompt-uncertainty/seed-0/round-1/scores/scores.parquet").to_pydict()
    u = dict(zip(scores["task_id"], scores["prompt_uncertainty"]))
    assert len(u) == len(uni.pool_ids) - 5 - 4 - 3  # the whole remaining pool was scored
    assert sorted(rec["selected"]) == sorted(sorted(u, key=lambda t: -u[t])[:4])
    assert rec["selected_prompt_uncertainty"] == pytest.approx(np.mean([u[t] for t in rec["selected"]]))
    rnd = reports[("random", 0)][1]
    s2 = pq.read_table(tmp_path / "w/random/seed-0/round-1/scores-selected/scores.parquet").to_pydict()
    assert sorted(s2["task_id"]) == sorted(rnd["selected"])
    assert rnd["selected_prompt_uncertainty"] == pytest.approx(np.mean(s2["prompt_uncertainty"]))
    assert not [c for c in log if c["op"] == "score" and c["at"].startswith("random")
                and c["n"] != 4]  # random scores only what it picked


def test_a_second_random_arm_draws_its_own_tasks(pool, tmp_path):
    """random-2 in the loop: random with draws of its own every round (its selection seed
    offset), so random-2 - random is the noise floor; the paired differences hold it."""
    from raysys.loop.results import paired_differences

    path, uni = pool
    cfg = small_cfg(tmp_path / "w", path, strategies=("random", "random-2"))
    fakes = FakeStages(str(tmp_path / "calls.jsonl"))
    reports = run_sequential(cfg, fakes, uni, make_base(tmp_path / "base"), tmp_path / "w")
    log = calls(fakes.log)
    for seed in cfg.seeds:
        a, b = reports[("random", seed)], reports[("random-2", seed)]
        assert a[0]["selected"] == b[0]["selected"]  # round 0 is shared
        assert a[1]["selected"] != b[1]["selected"] and len(b[1]["selected"]) == 4
        seeds = {c["at"].split("/")[0]: c["seed"] for c in log if c["op"] == "select"
                 and c["at"].endswith(f"seed-{seed}/round-1")}
        assert seeds == {"random": selection_seed(seed, 1), "random-2": selection_seed(seed, 1, 1)}
        assert {c["strategy"] for c in log if c["op"] == "select"} == {"random"}  # the strategy random-2 runs
    rows = [r for recs in reports.values() for r in recs]
    floor = [p for p in paired_differences(rows) if p["strategy"] == "random-2" and p["key"] == "test_nll"]
    assert [p["round"] for p in floor] == [1, 2] and all(p["pairs"] == 2 for p in floor)


def _fake_id(model: str, tasks) -> str:
    import hashlib

    return hashlib.sha256(json.dumps([model, sorted(tasks)]).encode()).hexdigest()[:12]


def test_train_from_previous_continues_on_the_new_tasks(pool, tmp_path):
    path, uni = pool
    cfg = small_cfg(tmp_path / "w", path, train_from="previous", strategies=("random",), seeds=(0,))
    fakes = FakeStages(str(tmp_path / "calls.jsonl"))
    recs = run_sequential(cfg, fakes, uni, make_base(tmp_path / "base"), tmp_path / "w")[("random", 0)]
    prev = model_id(recs[0]["model"])
    for r in recs[1:]:
        assert model_id(r["model"]) == _fake_id(prev, r["selected"])
        prev = model_id(r["model"])


def test_a_trial_continues_from_its_last_finished_round(pool, tmp_path):
    """Round 1 finished, then a crash: the state on disk takes the trial on to the same end."""
    path, uni = pool
    cfg = small_cfg(tmp_path / "a", path, strategies=("prompt-uncertainty",), seeds=(0,))
    base = make_base(tmp_path / "base")
    whole = run_sequential(cfg, FakeStages(str(tmp_path / "a.jsonl")), uni, base, tmp_path / "a")
    cfg_b = replace(cfg, work_dir=str(tmp_path / "b"))
    fakes = FakeStages(str(tmp_path / "b.jsonl"))
    sets = draw_sets(uni, 0, cfg_b)
    rec0 = base_round(cfg_b, base, sets, uni, fakes, tmp_path / "b", say=lambda m: None)
    run_round(cfg_b, start_state("prompt-uncertainty", rec0), base, sets, uni, fakes, tmp_path / "b",
              say=lambda m: None)
    state = latest_state(tmp_path / "b", "prompt-uncertainty", 0, cfg_b.rounds)
    assert state.round == 1
    got = []
    run_trial(cfg_b, state, base, sets, uni, fakes, tmp_path / "b", lambda r, s: got.append(r), fresh=False,
              say=lambda m: None)
    assert [r["round"] for r in got] == [2]
    assert [c["at"] for c in calls(fakes.log) if c["op"] == "train"].count("prompt-uncertainty/seed-0/round-1") == 1
    assert got[0]["selected"] == whole[("prompt-uncertainty", 0)][2]["selected"]


# ---- on Ray Tune -----------------------------------------------------------------------------

def _selections(work: Path, cfg: LoopConfig) -> dict:
    out = {}
    for s in cfg.strategies:
        for seed in cfg.seeds:
            for r in range(1, cfg.rounds):
                out[(s, seed, r)] = json.loads((work / s / f"seed-{seed}" / f"round-{r}" / RECORD).read_text())["selected"]
    return out


@pytest.mark.ray
def test_tune_driver_runs_every_trial_writes_results_and_reruns_nothing(pool, tmp_path):
    import loop_fakes
    import ray
    import ray.cloudpickle

    from raysys.loop.driver import run_loop

    path, uni = pool
    ray.cloudpickle.register_pickle_by_value(loop_fakes)  # trials run in other processes
    cfg = small_cfg(tmp_path / "w", path)
    cfg = replace(cfg, model=replace(cfg.model, path=make_base(tmp_path / "base")))
    fakes = FakeStages(str(tmp_path / "calls.jsonl"))
    try:
        out = run_loop(cfg, fakes, num_cpus=8, say=lambda m: None)
        ref = run_sequential(cfg, FakeStages(str(tmp_path / "ref.jsonl")), uni, cfg.model.path, tmp_path / "ref")
        rows = out["rows"]
        assert len(rows) == 2 * 2 * 3
        for row in rows:
            want = ref[(row["strategy"], row["seed"])][row["round"]]
            for k in ("n_tasks", "test_rougeL", "val_loss", "selected_prompt_uncertainty"):
                assert row[k] == want[k], (row["strategy"], row["seed"], row["round"], k)
        table = pq.read_table(out["table"]).to_pylist()
        assert [(r["strategy"], r["seed"], r["round"]) for r in table] == [
            (s, seed, r) for s in cfg.strategies for seed in cfg.seeds for r in range(3)]
        assert (tmp_path / "w/results.csv").read_text().splitlines()[0].startswith('"model","strategy","seed","round"')
        for k in ("curves", "uncertainty", "taskmap"):
            assert Path(out[k]).stat().st_size > 5_000
        # the summary is the mean and sample std over seeds
        s = next(r for r in out["summary"] if r["strategy"] == "random" and r["round"] == 2)
        vals = [r["test_rougeL"] for r in rows if r["strategy"] == "random" and r["round"] == 2]
        assert s["test_rougeL"] == pytest.approx(np.mean(vals)) and s["test_rougeL_std"] == pytest.approx(np.std(vals, ddof=1))
        # the paired difference: prompt uncertainty - random, same seed and round
        from raysys.loop.results import render as results_text

        for key in ("test_nll", "test_rougeL"):  # the likelihood first, then Rouge-L
            p = next(x for x in out["paired"] if x["strategy"] == "prompt-uncertainty" and x["round"] == 2
                     and x["key"] == key)
            by = {(r["strategy"], r["seed"]): r[key] for r in rows if r["round"] == 2}
            diffs = [by[("prompt-uncertainty", s)] - by[("random", s)] for s in cfg.seeds]
            assert p["differences"] == pytest.approx(diffs) and p["mean"] == pytest.approx(np.mean(diffs))
        assert [p["key"] for p in out["paired"]] == ["test_nll"] * 2 + ["test_rougeL"] * 2
        assert json.loads((tmp_path / "w" / "summary.json").read_text())["paired"][1]["round"] == 2
        text = results_text(out["summary"], out["paired"])
        assert "paired prompt-uncertainty - random, round 2, test_nll" in text and "95 % CI" in text
        n_calls = len(calls(fakes.log))
        again = run_loop(cfg, fakes, num_cpus=8, say=lambda m: None)  # finished: nothing is redone
        assert len(calls(fakes.log)) == n_calls and again["rows"] == rows
        with pytest.raises(RaysysError, match="other settings"):
            run_loop(replace(cfg, schedule=(4, 8)), fakes, num_cpus=8, say=lambda m: None)
        with pytest.raises(RaysysError, match="needs at least"):
            run_loop(replace(cfg, work_dir=str(tmp_path / "big"), actors=40), fakes, say=lambda m: None)
        # the same loop in two pieces (--seeds-now), the second in a "new checkout" that kept
        # only the first piece's records (no Tune folder, no models): the same rows
        import shutil

        def same(rs):  # a row's numbers, not where its model lies or how long it took
            return [{k: v for k, v in r.items() if k not in ("model_dir", "seconds")} for r in rs]

        pieces, said = replace(cfg, work_dir=str(tmp_path / "w2")), []
        first = run_loop(pieces, fakes, num_cpus=8, say=said.append, seeds_now=[cfg.seeds[0]])
        assert same(first["rows"]) == same(r for r in rows if r["seed"] == cfg.seeds[0])
        assert any(f"results over 1 of the config's 2 seeds (seeds {cfg.seeds[0]})" in m for m in said)
        for path in sorted((tmp_path / "w2").rglob("*"), reverse=True):
            if path.name.startswith("tune") or path.name == "model":
                shutil.rmtree(path, ignore_errors=True)
        n_calls = len(calls(fakes.log))
        second = run_loop(pieces, fakes, num_cpus=8, say=lambda m: None, seeds_now=[cfg.seeds[1]])
        assert same(second["rows"]) == same(rows)
        redone = calls(fakes.log)[n_calls:]
        assert redone and all(f"seed-{cfg.seeds[1]}" in c["at"] for c in redone)  # the first seed's: not redone
        with pytest.raises(RaysysError, match="--seeds-now must name seeds of the config"):
            run_loop(pieces, fakes, num_cpus=8, say=lambda m: None, seeds_now=[99])
    finally:
        ray.shutdown()


SCRIPT = """
import sys
from dataclasses import replace
from pathlib import Path
sys.path.insert(0, {tests!r})
from loop_fakes import FakeStages
from raysys.config import LoopConfig
from raysys.config.mapping import from_mapping
from raysys.io import read_json
from raysys.loop.driver import prepare, run_loop
cfg = from_mapping(LoopConfig, read_json({cfg!r}))
run_loop(cfg, FakeStages({log!r}, slow_round=int(sys.argv[1]), delay=120.0), num_cpus=8)
"""


@pytest.mark.ray
def test_killed_driver_resumes_without_redoing_finished_rounds(pool, tmp_path):
    from raysys.config.mapping import to_dict
    from raysys.io import write_json

    path, uni = pool
    cfg = small_cfg(tmp_path / "w", path)
    cfg = replace(cfg, model=replace(cfg.model, path=make_base(tmp_path / "base")))
    write_json(tmp_path / "cfg.json", to_dict(cfg))
    log = tmp_path / "calls.jsonl"
    script = tmp_path / "drive.py"
    script.write_text(SCRIPT.format(tests=str(TESTS), cfg=str(tmp_path / "cfg.json"), log=str(log)))
    paths = [str(TESTS), os.environ.get("PYTHONPATH")]  # a checkout given by PYTHONPATH stays first after the tests
    env = {**os.environ, "RAY_ADDRESS": "", "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    proc = subprocess.Popen([sys.executable, str(script), "2"], start_new_session=True, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    started = set()
    while time.time() < deadline and len(started) < 4 and proc.poll() is None:
        started = {c["at"] for c in calls(log) if c["op"] == "train" and c["at"].endswith("round-2")}
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes it started
    out = proc.communicate()[0].decode(errors="replace")
    assert len(started) == 4, out[-3000:]  # every trial finished round 1 and was inside round 2
    before = calls(log)
    r = subprocess.run([sys.executable, str(script), "-1"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    after = calls(log)[len(before):]
    redone = {c["at"] for c in after} & {c["at"] for c in before if not c["at"].endswith("round-2")}
    assert not redone  # rounds 0 and 1 finished before the kill: nothing of them ran again
    assert {c["at"] for c in after if c["op"] == "train"} == started
    ref = tmp_path / "ref"
    run_sequential(replace(cfg, work_dir=str(ref)), FakeStages(str(tmp_path / "ref.jsonl")), uni, cfg.model.path, ref)
    assert _selections(tmp_path / "w", cfg) == _selections(ref, cfg)
    assert len(pq.read_table(tmp_path / "w" / "results.parquet")) == 12


def test_split_aggregates_equal_a_direct_mean_over_instances():
    from raysys.evaluation.metrics import aggregate, flat_metrics

    rows = [{"task_id": "a", "is_classification": True, "n_instances": 2, "rougeL": 50.0, "exact_match": 50.0},
            {"task_id": "b", "is_classification": False, "n_instances": 4, "rougeL": 25.0, "exact_match": 0.0},
            {"task_id": "c", "is_classification": None, "n_instances": 1, "rougeL": 100.0, "exact_match": 100.0}]
    m = flat_metrics(aggregate(rows))
    # instance-weighted means: overall (2*50 + 4*25 + 100) / 7; per type only its tasks
    assert m["rougeL"] == pytest.approx(300 / 7) and m["exact_match"] == pytest.approx(200 / 7)
    assert m["rougeL_classification"] == 50.0 and m["rougeL_generative"] == 25.0
    assert m["exact_match_generative"] == 0.0
    assert flat_metrics(aggregate(rows[1:2]))["rougeL_classification"] is None


def test_in_process_stages_score_select_and_evaluate(pool, tiny_model_dir, tmp_path):
    """actors=0: scoring and evaluation in the trial's own process (no Ray needed), with
    validation and test tasks evaluated in one pass and split afterwards."""
    from raysys.config import EvalConfig, GenerationConfig, ScoringConfig
    from raysys.evaluation.evaluator import Evaluator
    from raysys.evaluation.metrics import aggregate, flat_metrics
    from raysys.pools.load import load_pool
    from raysys.stages import RayStages, StageSettings

    path, uni = pool
    cfg = small_cfg(tmp_path / "w", path, actors=0,
                    generation=GenerationConfig(4), scoring=ScoringConfig(instances=1, perturbations=2),
                    evaluation=EvalConfig(instances=1))
    st = RayStages(StageSettings.of(cfg), path, path)
    ids = list(uni.pool_ids[:6])
    scores = st.score(str(tiny_model_dir), ids, tmp_path / "s" / "scores.parquet")
    t = pq.read_table(scores).to_pydict()
    assert t["task_id"] == ids and all(0 <= u for u in t["prompt_uncertainty"])
    mtime = Path(scores).stat().st_mtime_ns
    assert st.score(str(tiny_model_dir), ids, tmp_path / "s" / "scores.parquet") == scores and Path(scores).stat().st_mtime_ns == mtime
    picked = st.select("prompt-uncertainty", 2, 0, ids, scores, tmp_path / "s")
    u = dict(zip(t["task_id"], t["prompt_uncertainty"]))
    assert sorted(u[p] for p in picked) == sorted(u.values())[-2:]
    splits = {"validation": ids[:3], "test": list(uni.test_ids[:2])}
    got = st.evaluate(str(tiny_model_dir), splits, tmp_path / "e")
    tasks = {x.task_id: x for x in load_pool(path).tasks}
    ev = Evaluator(str(tiny_model_dir), cfg.evaluation)
    for split, want_ids in splits.items():
        rows, _ = ev.process([tasks[i] for i in want_ids])
        assert got[split] == pytest.approx(flat_metrics(aggregate(rows)))


def test_keep_finished_lists_the_small_files_of_finished_seeds(tmp_path, capsys):
    """jobs/keep_finished.py on a loop's work dir: the settings and, for each seed whose
    every strategy recorded every round, every file of its rounds but the model's weights
    (its training report kept), the training checkpoints, score parts and Tune folders; an
    unfinished seed contributes nothing."""
    from raysys.config.mapping import to_dict
    from raysys.io import write_json
    from raysys.loop.rounds import round_dir, seed_dir

    sys.path.insert(0, str(TESTS.parent / "jobs"))
    import keep_finished

    work = tmp_path / "w"
    cfg = small_cfg(work, "pool.parquet")
    write_json(work / "loop.json", to_dict(cfg))
    want = {work / "loop.json"}
    for seed in cfg.seeds:
        folders = [seed_dir(work, seed)] + [round_dir(work, a, seed, r) for a in cfg.strategies for r in (1, 2)]
        for i, d in enumerate(folders):
            if seed == 1 and i == len(folders) - 1:
                continue  # seed 1's last round never finished
            for name in (RECORD, "eval-0.json", "model/raysys_train.json", "model/adapter.safetensors",
                         "model.train/ckpt/state.pt", "scores/scores.parquet", "scores/scores.parquet.parts/p.parquet"):
                (d / name).parent.mkdir(parents=True, exist_ok=True)
                (d / name).write_text("x")
                if seed == 0 and not name.startswith(("model/adapter", "model.train", "scores/scores.parquet.parts")):
                    want.add(d / name)
    (work / "tune" / "exp").mkdir(parents=True)
    (work / "tune" / "exp" / "state.json").write_text("x")
    assert set(keep_finished.finished_folders(work)) == {seed_dir(work, 0)} | {
        round_dir(work, a, 0, r) for a in cfg.strategies for r in (1, 2)}
    keep_finished.main([str(work)])
    assert {Path(line) for line in capsys.readouterr().out.split()} == want
