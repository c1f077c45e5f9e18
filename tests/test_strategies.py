"""The strategy comparison (`raysys experiment strategies`): the held-out split and the
candidate draws, every arm selecting to the same token budget from one scoring of its
seed's candidates (real scoring and selection with the tiny model; training and
evaluation stand-ins whose numbers follow from what they were given), the rows and the
summary against numpy/scipy, resuming, and one real run through the CLI."""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import NOISE, run_cli
from scipy import stats as sps

from raysys.config.experiments import StrategiesConfig
from raysys.errors import ConfigError, RaysysError
from raysys.experiments.comparison import draw, selection_seed, split_heldout
from raysys.selection.arms import arm


def test_the_heldout_split_and_the_draws():
    ids = [f"t{i:02d}" for i in range(10)]
    dev, test = split_heldout(ids, 0.3)
    assert len(dev) == 3 and len(test) == 7 and not set(dev) & set(test) and set(dev) | set(test) == set(ids)
    assert split_heldout(ids, 0.3) == (dev, test) and dev == sorted(dev, key=ids.index)
    assert [len(x) for x in split_heldout(ids[:2], 0.01)] == [len(x) for x in split_heldout(ids[:2], 0.99)] == [1, 1]
    a, b = draw(ids, 4, 0, "candidates"), draw(ids, 4, 1, "candidates")
    assert len(a) == 4 and a != b and draw(ids, 4, 0, "candidates") == a and draw(ids, 0, 5, "x") == ids
    with pytest.raises(ConfigError, match="candidates = 11 but only 10"):
        draw(ids, 11, 0, "candidates")
    assert selection_seed(3, "random") == 6 and selection_seed(3, "random-2") == 7
    assert arm("similarity-test") == ("similarity", 0) and arm("rds-test") == ("rds", 0) and arm("rds") == ("rds", 0)
    assert StrategiesConfig(strategies=("random", "similarity-test")).strategies[1] == "similarity-test"
    with pytest.raises(ConfigError, match="without repeats of"):
        StrategiesConfig(strategies=("random", "length-test"))
    with pytest.raises(ConfigError, match="random among them"):
        StrategiesConfig(strategies=("length", "ifd"))
    with pytest.raises(ConfigError, match="likelihood must be on"):
        StrategiesConfig(evaluation=replace(StrategiesConfig().evaluation, likelihood=False))


def _h(*parts) -> float:
    return int.from_bytes(hashlib.sha256(json.dumps(parts).encode()).digest()[:8], "big") / 2**64


def _stand_in_stages(calls: list, aimed: dict | None = None):
    """The real scoring (in this process) and selection; training writes the task list;
    evaluation gives an NLL known from the trained tasks. `aimed`: each arm's targets file."""
    aimed = {} if aimed is None else aimed
    from raysys.stages import RayStages, StageSettings

    class Stages(RayStages):
        def score(self, model, task_ids, out):
            calls.append(("score", str(out)))
            return super().score(model, task_ids, out)

        def select(self, *args, **kw):
            calls.append(("select", str(args[-1])))
            aimed[Path(args[-1]).name] = self.settings.targets
            return super().select(*args, **kw)

        def train(self, model, task_ids, out, *, val_ids=(), cfg=None):
            calls.append(("train", str(out)))
            out.mkdir(parents=True, exist_ok=True)
            (out / "tasks.json").write_text(json.dumps(list(task_ids)))
            return str(out), {"train_loss": _h("loss", list(task_ids))}

        def evaluate(self, model, splits, out_dir):
            calls.append(("evaluate", str(out_dir)))
            p = Path(model, "tasks.json")
            trained = json.loads(p.read_text()) if p.is_file() else []
            return {"test": {"nll": 3.0 - _h(trained), "label_accuracy": None, "rougeL": 100 * _h("r", trained),
                             "exact_match": 0.0}}

    def make(cfg, pool, heldout_pool, dev_file):
        return Stages(StageSettings.of(cfg, targets=str(dev_file)), pool, heldout_pool)

    return make


def test_every_arm_selects_to_the_same_budget_and_the_summary_follows_the_rows(tmp_path):
    from raysys.experiments.comparison_run import run_strategies

    cfg = StrategiesConfig(work_dir=str(tmp_path / "w"), synth=replace(StrategiesConfig().synth, rules=60),
                           heldout_tasks=8, candidates=40, budget=3000, seeds=(0, 1, 2))
    calls: list = []
    out = run_strategies(cfg, _stand_in_stages(calls), say=lambda m: None)
    rows = out["rows"]
    arms = ("base", *cfg.strategies)
    assert [(r["seed"], r["strategy"]) for r in rows] == [(s, a) for s in cfg.seeds for a in arms]
    assert sum(op == "score" for op, _ in calls) == 3  # one scoring per seed, shared by every arm
    assert sum(op == "evaluate" for op, _ in calls) == 1 + 3 * len(cfg.strategies)  # the base model once
    work = tmp_path / "w"
    for seed in cfg.seeds:
        spent = []
        for a in cfg.strategies:
            sel = json.loads((work / f"seed-{seed}" / a / "selected.json").read_text())
            row = next(r for r in rows if r["seed"] == seed and r["strategy"] == a)
            assert sel["budget_unit"] == "tokens" and row["n_tokens"] == sel["selected_train_tokens"] <= 3000
            assert row["n_tasks"] == len(sel["task_ids"]) and row["nll"] == pytest.approx(3.0 - _h(sel["task_ids"]))
            spent.append(row["n_tokens"])
            assert (row["select_flops"] > 0) == (a in ("prompt-uncertainty", "prompt-uncertainty-low",
                                                       "perplexity-high", "ifd", "rds"))
        assert min(spent) >= 0.9 * max(spent)  # equal budgets, to within a task of ~100 tokens
        # the two random arms are independent draws; the selections come from this seed's candidates
        ids = {a: json.loads((work / f"seed-{seed}" / a / "selected.json").read_text())["task_ids"]
               for a in ("random", "random-2")}
        assert ids["random"] != ids["random-2"]
    # the summary: each paired difference with random, its t interval and the floor (random-2's SD)
    nll = {(r["seed"], r["strategy"]): r["nll"] for r in rows}
    for a in cfg.strategies[1:]:
        d = [nll[(s, a)] - nll[(s, "random")] for s in cfg.seeds]
        p = out["paired"][f"{a} - random"]["nll"]
        assert p["differences"] == pytest.approx(d)
        ci = sps.ttest_1samp(d, 0.0).confidence_interval(0.95)
        assert (p["ci95_low"], p["ci95_high"]) == pytest.approx((ci.low, ci.high))
    assert out["floor"]["nll"] == pytest.approx(np.std([nll[(s, "random-2")] - nll[(s, "random")] for s in cfg.seeds],
                                                       ddof=1))
    # the Markdown table: each arm's row from the same rows, recomputed here
    md = Path(out["markdown"]).read_text()
    for a in cfg.strategies[1:]:
        d = [nll[(s, a)] - nll[(s, "random")] for s in cfg.seeds]
        ci = sps.ttest_1samp(d, 0.0).confidence_interval(0.95)
        mine = [r for r in rows if r["strategy"] == a]
        cells = (f"| {a} | 3 | {np.mean([r['n_tasks'] for r in mine]):.0f} | "
                 f"{np.mean([r['n_tokens'] for r in mine]):,.0f} | {np.mean([nll[(s, a)] for s in cfg.seeds]):.3f} | "
                 f"{np.mean(d):+.3f} [{ci.low:+.3f}, {ci.high:+.3f}] | {sum(x < 0 for x in d)}/3 |")
        assert cells in md, (cells, md)
    table = pd.read_csv(out["csv"])
    assert len(table) == 3 * len(arms) and table["nll"].tolist() == pytest.approx([r["nll"] for r in rows])
    assert Path(out["figure"]).stat().st_size > 10_000 and "prompt-uncertainty - random" in out["text"]
    assert len(list(work.glob("seed-*/*/selected.json"))) == 3 * len(cfg.strategies)
    assert not list(work.glob("seed-*/*/model"))  # each arm's model is removed once evaluated (keep_models off)
    n = len(calls)  # a rerun reads every finished row back: no stage runs again
    saved = work / "strategies-config.json"  # as written before keep_models existed: resumed all the same
    old = json.loads(saved.read_text())
    del old["keep_models"]
    saved.write_text(json.dumps(old))
    again = run_strategies(cfg, _stand_in_stages(calls), say=lambda m: None)
    assert len(calls) == n + 3 and again["rows"] == rows  # (the stand-in counts each seed's scoring call: resumed)
    # an arm run after a resume is charged the seed's scoring as it was timed, not the lookup
    kept = json.loads((work / "seed-0" / "scores-seconds.json").read_text())["seconds"]
    first = next(r for r in rows if r["seed"] == 0 and r["strategy"] == "prompt-uncertainty")
    assert 0 < kept <= first["select_seconds"]
    (work / "seed-0" / "prompt-uncertainty" / "record.json").unlink()
    redone = run_strategies(cfg, _stand_in_stages(calls), say=lambda m: None)["rows"]
    row = next(r for r in redone if r["seed"] == 0 and r["strategy"] == "prompt-uncertainty")
    assert row["select_seconds"] >= kept and row["nll"] == first["nll"]
    saved.write_text(json.dumps(old))
    with pytest.raises(RaysysError, match="other settings.*keep_models"):  # a newer setting away from its default
        run_strategies(replace(cfg, keep_models=True), _stand_in_stages(calls), say=lambda m: None)


def test_arms_aimed_at_the_test_tasks(tmp_path):
    """similarity-test selects for the test tasks' prompts (written to test.parquet), the
    similarity arm of the same seed for the development tasks'."""
    from raysys.experiments.comparison_run import run_strategies
    from raysys.pools.subset import pool_tasks

    cfg = StrategiesConfig(work_dir=str(tmp_path / "w"), synth=replace(StrategiesConfig().synth, rules=60),
                           heldout_tasks=8, candidates=40, budget=3000, seeds=(0, 1),
                           strategies=("random", "similarity", "similarity-test"),
                           contrasts=("similarity-test - similarity",))
    aimed: dict = {}
    out = run_strategies(cfg, _stand_in_stages([], aimed), say=lambda m: None)
    work = tmp_path / "w"
    assert aimed == {"random": str(work / "dev.parquet"), "similarity": str(work / "dev.parquet"),
                     "similarity-test": str(work / "test.parquet")}
    dev, test = set(pool_tasks(str(work / "dev.parquet"))), set(pool_tasks(str(work / "test.parquet")))
    assert len(dev) == len(test) == 4 and not dev & test
    assert set(dev | test) <= set(pool_tasks(str(work / "pool.parquet")))  # held out of the pool the run drew
    rows = {(r["seed"], r["strategy"]): r for r in out["rows"]}
    assert rows[(0, "similarity-test")]["n_tokens"] <= 3000 and "similarity-test - random" in out["paired"]
    # the contrast: the paired difference of the two similarity arms, in the summary and its table
    d = [rows[(s, "similarity-test")]["nll"] - rows[(s, "similarity")]["nll"] for s in (0, 1)]
    c = out["contrasts"]["similarity-test - similarity"]["nll"]
    assert c["differences"] == pytest.approx(d) and c["mean"] == pytest.approx(np.mean(d))
    ci = sps.ttest_1samp(d, 0.0).confidence_interval(0.95)
    assert (c["ci95_low"], c["ci95_high"]) == pytest.approx((ci.low, ci.high))
    md = Path(out["markdown"]).read_text()
    assert (f"| similarity-test - similarity | 2 | {np.mean(d):+.3f} [{ci.low:+.3f}, {ci.high:+.3f}] | "
            f"{sum(x < 0 for x in d)}/2 |") in md
    assert "similarity-test - similarity" in out["text"]
    with pytest.raises(ConfigError, match="both arms must be among"):
        replace(cfg, contrasts=("rds - similarity",))
    with pytest.raises(ConfigError, match="write it as"):
        replace(cfg, contrasts=("similarity-test minus similarity",))


def test_strategies_with_the_tiny_model_through_the_cli(tmp_path):
    """The real stages end to end: scoring, selection by tokens, Ray Train, evaluation by likelihood."""
    r = run_cli("experiment", "strategies", "--work-dir", tmp_path / "w", "synth.rules=40", "heldout_tasks=6",
                "candidates=24", "budget=2500", "seeds=[0]", "strategies=[random,prompt-uncertainty]",
                "train.epochs=1", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not [n for n in NOISE if n in r.stdout + r.stderr], r.stderr[-3000:]
    table = pd.read_csv(tmp_path / "w" / "strategies.csv")
    assert table["strategy"].tolist() == ["base", "random", "prompt-uncertainty"]
    assert table["train_tokens"][1:].gt(0).all() and table["nll"].notna().all()
    ev = json.loads((tmp_path / "w" / "seed-0" / "random" / "eval-0.json").read_text())
    n = np.array([t["n_instances"] for t in ev["per_task"]])
    assert table["nll"][1] == pytest.approx(np.dot([t["nll"] for t in ev["per_task"]], n) / n.sum())
    assert "prompt-uncertainty - random" in r.stdout
    md = tmp_path / "w" / "strategies.md"
    assert f"markdown: {md}" in r.stdout and "| prompt-uncertainty | 1 |" in md.read_text()


def test_the_pilot_numbers_quoted_in_docs_follow_from_its_csv():
    """docs/experiments.md quotes the pilot (docs/results/strategies_pilot.csv): each number
    recomputed here."""
    from raysys.stats import detectable_effect

    root = Path(__file__).resolve().parents[1]
    t = pd.read_csv(root / "docs" / "results" / "strategies_pilot.csv")
    text = (root / "docs" / "experiments.md").read_text()
    assert round(t[t.strategy == "base"]["nll"].iloc[0], 3) == 3.097 and "3.097 nats/token" in text
    rnd = t[t.strategy.isin(["random", "random-2"])].sort_values(["seed", "strategy"])["nll"].tolist()
    assert [round(v, 3) for v in rnd] == [2.798, 2.747, 2.836, 2.797] and "2.798,\n  2.747, 2.836 and 2.797" in text
    sd = float(np.std(rnd, ddof=1))
    assert round(sd, 3) == 0.036 and "SD 0.036 between draws" in text
    assert round(sd * np.sqrt(2), 2) == 0.05 and round(sd * np.sqrt(2), 3) == 0.052 and "SD ≈ 0.052" in text
    gain = t[t.strategy == "base"]["nll"].iloc[0] - np.mean(rnd)  # what a random selection's training gains
    assert round(gain, 2) == 0.30 and "(0.30 in the pilot)" in text and 0.15 < 0.060 / gain < 0.25  # "a fifth"
    assert round(detectable_effect(sd * np.sqrt(2), 8), 3) == 0.060 and round(detectable_effect(sd * np.sqrt(2), 16), 3) == 0.039
    arms = t[t.strategy != "base"]
    assert (arms.n_tokens.min(), arms.n_tokens.max()) == (14935, 15000) and "14,935-15,000" in text
    assert arms.n_tokens.max() / arms.n_tokens.min() - 1 < 0.005 and "within 0.5 %" in text
    assert (arms.train_tokens.min(), arms.train_tokens.max()) == (27520, 29956) and "27,520-29,956" in text
