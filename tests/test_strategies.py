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
                "train.epochs=1", "train.workers=1", timeout=900)  # two workers: tests/test_training.py
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


def _power(effect: float, sd: float, n: int) -> float:
    """Power of a two-sided paired t test at 5 % over n pairs with differences' SD `sd`
    when the true mean difference is `effect` (the noncentral t, both tails)."""
    df, crit = n - 1, sps.t.ppf(0.975, n - 1)
    nc = effect * np.sqrt(n) / sd
    return sps.nct.sf(crit, df, nc) + sps.nct.cdf(-crit, df, nc)


def test_the_readme_strategy_comparison_follows_from_the_shipped_csv():
    """The README's strategy comparison, every number recomputed from
    docs/results/strategies.csv with pandas and scipy (not raysys.stats): the table (each
    arm's tasks, tokens, NLL, paired difference with random and its t interval, seeds below
    random, detectable effect checked by its power, selection cost), the equal budgets, the
    floor, the cost and the outcome sentence."""
    import re

    root = Path(__file__).resolve().parents[1]
    t = pd.read_csv(root / "docs" / "results" / "strategies.csv")
    readme = (root / "README.md").read_text()
    section = readme[readme.index("## Is selecting worth it?"):]
    section = section[:section.index("\n## ", 3)]
    assert {"model", "seed", "n_tasks", "n_examples", "n_tokens", "train_tokens", "select_flops",
            "train_flops"} <= set(t.columns) and set(t.model) == {"smollm2-135m-instruct"}
    seeds = sorted(set(t.seed))
    assert seeds == list(range(2, 10)) and "seeds 2-9" in section
    arms = t[t.strategy != "base"]
    for _, one in arms.groupby("seed"):  # every arm of a seed trained on the same tokens, within 2 %
        assert len(one) == 9 and one.n_tokens.max() / one.n_tokens.min() - 1 < 0.02
    assert f"(every selection {arms.n_tokens.min():,.0f}-{arms.n_tokens.max():,.0f})" in section
    nll = t.pivot(index="seed", columns="strategy", values="nll")
    assert f"base model: {nll['base'].iloc[0]:.3f}" in section
    diffs = {}
    for a in dict.fromkeys(t.strategy):
        mine = t[t.strategy == a]
        if a == "base":
            row = f"| base | 8 | – | – | {nll[a].mean():.3f} | – | – | – | – | – |"
        else:
            cost = f"{mine.select_flops.mean() / 1e12:.1f} | {mine.select_seconds.median():.0f} |"
            head = f"| {a} | 8 | {mine.n_tasks.mean():.0f} | {mine.n_tokens.mean():,.0f} | {nll[a].mean():.3f} |"
            if a == "random":
                row = f"{head} – | – | – | {cost}"
            else:
                d = (nll[a] - nll["random"]).to_numpy()
                diffs[a] = d
                ci = sps.ttest_1samp(d, 0.0).confidence_interval(0.95)
                m = re.search(re.escape(f"{head} {d.mean():+.3f} [{ci.low:+.3f}, {ci.high:+.3f}] | "
                                        f"{(d < 0).sum()}/8 | ") + r"(\d\.\d{3})" + re.escape(f" | {cost}"), section)
                assert m, (a, head, d.mean(), ci)
                mde, sd = float(m.group(1)), d.std(ddof=1)
                assert _power(mde - 0.0005, sd, 8) < 0.8 < _power(mde + 0.0005, sd, 8), (a, mde)  # 80 % power
                continue
        assert row in section, row
    floor = (nll["random-2"] - nll["random"]).std(ddof=1)
    assert f"differ by SD {floor:.3f}" in section

    # the outcome sentence
    def ci(a):
        c = sps.ttest_1samp(diffs[a], 0.0).confidence_interval(0.95)
        return tuple(f"{v:+.3f}".replace("-", "−") for v in (diffs[a].mean(), c.low, c.high))

    text = " ".join(section.split())
    assert "No strategy beat random at equal training tokens; two did worse." in text
    assert all(sps.ttest_1samp(d, 0.0).confidence_interval(0.95).high > 0 for d in diffs.values())  # none below 0
    pu, pu_lo, pu_hi = ci("prompt-uncertainty")
    pu_mde = re.search(r"\| prompt-uncertainty \|.*\| (\d\.\d{3}) \| [\d.]+ \| \d+ \|", section).group(1)
    assert f"uncertainty's test NLL was {pu} nats/token above random's (95 % CI {pu_lo} to {pu_hi}; the design " \
           f"detects {pu_mde})" in text
    sim, lo, hi = ci("similarity")
    assert f"similarity came closest ({sim}, {lo} to {hi}, below random in {(diffs['similarity'] < 0).sum()} of 8" in text
    assert min(diffs, key=lambda a: diffs[a].mean()) == "similarity"
    worse = [a for a, d in diffs.items() if sps.ttest_1samp(d, 0.0).confidence_interval(0.95).low > 0]
    assert sorted(worse) == ["length", "rds"]  # "two did worse"
    for a, name in (("length", "Selecting the longest responses was worse in"), ("rds", "RDS+ in")):
        p = sps.ttest_1samp(diffs[a], 0.0).pvalue
        m, lo, hi = ci(a)
        n_worse = (diffs[a] > 0).sum()
        said = f"{p:.4f}" if p < 0.001 else f"{p:.2f}"
        assert f"{name} {n_worse} of 8" in text and f"({m}, {lo} to {hi}; p = {said}, which" in text, (a, m, p)
        assert (p * 8 < 0.05) == (a == "length")  # Bonferroni over the 8 comparisons: length's survives
    assert "survives a Bonferroni correction" in text and "(+0.071, +0.005 to +0.137; p = 0.04, which does not)" in text

    # the cost
    pu_rows = t[t.strategy == "prompt-uncertainty"]
    assert f"{pu_rows.select_flops.mean() / 1e12:.0f} TFLOPs, {pu_rows.select_seconds.median():.0f} s (median" in text
    alone = pu_rows[pu_rows.seed.isin([4, 5, 9])].select_seconds
    assert f"{alone.min():.0f}-{alone.max():.0f} s in seeds 4, 5 and 9" in text
    assert (pu_rows[pu_rows.seed.isin([3, 6])].select_seconds < 1).all()  # "recorded under 1 s"
    assert f"against {arms.train_flops.mean() / 1e12:.0f} TFLOPs and {arms.train_seconds.median():.0f} s (median)" in text
    assert pu_rows.select_seconds.median() > arms.train_seconds.median()  # "scoring costs more time than the training"

    # docs/experiments.md's paragraph on the main run
    doc = " ".join((root / "docs" / "experiments.md").read_text().split())
    mdes = [float(x) for x in re.findall(r"\| (\d\.\d{3}) \| [\d.]+ \| \d+ \|", section)]
    assert len(mdes) == 8 and f"detectable difference {min(mdes):.3f}-{max(mdes):.3f} by arm ({pu_mde} for" in doc
    assert f"prompt uncertainty {pu} nats/token (95 % CI {pu_lo} to {pu_hi})" in doc
    assert f"floor is {diffs['random-2'].mean():+.3f} (SD {floor:.3f} between the two draws" in doc
    assert f"Length ({diffs['length'].mean():+.3f}) and RDS+ ({diffs['rds'].mean():+.3f}) were worse" in doc
