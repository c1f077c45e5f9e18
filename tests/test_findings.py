"""The findings of issue 16 as the README and docs/findings.md state them, every number
recomputed here from the shipped CSVs in docs/results with pandas and scipy: the paired
differences and their intervals, the training-token confounds, the novelty design's
ceiling, the diversity grid's per-seed ranges, and the cost table's rates."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"


def _text(name: str) -> str:
    return " ".join((ROOT / name).read_text(encoding="utf-8").split())  # line breaks as spaces


def _section(text: str, title: str) -> str:
    start = text.index(title)
    return text[start:text.index(" ## ", start + len(title))]


def _f(value: float, spec: str) -> str:
    """As the docs print a number: a typographic minus."""
    return format(value, spec).replace("-", "−")


def _pm(values, decimals: int = 1) -> str:
    """Signed mean ± sample SD, as the docs print them."""
    values = pd.Series(values, dtype=float)
    return f"{_f(values.mean(), f'+.{decimals}f')} ± {values.std(ddof=1):.{decimals}f}"


def test_the_active_loop_numbers():
    a = pd.read_csv(RESULTS / "active_loop.csv")
    readme, doc = _section(_text("README.md"), "## Findings on a real model"), _text("docs/findings.md")
    by = {(s, r): g.set_index("seed") for (s, r), g in a.groupby(["strategy", "round"])}
    pu, rnd = by[("prompt-uncertainty", 2)], by[("random", 2)]
    d = pu.test_rougeL - rnd.test_rougeL
    ci = sps.ttest_1samp(d, 0.0).confidence_interval(0.95)
    assert f"{_pm(d)} Rouge-L (3 seeds, PU ahead in {(d > 0).sum()};" in readme
    interval = f"interval {_f(ci.low, '.1f')} to {_f(ci.high, '+.1f')}"
    assert f"95 % {interval}" in readme and f"its 95 % {interval}" in doc
    # the token confound: PU's selections trained on fewer tokens in every seed and round
    later = a[a["round"] > 0].pivot_table(index=["seed", "round"], columns="strategy", values="train_tokens")
    short = 1 - later["prompt-uncertainty"] / later["random"]
    assert (short > 0).all() and f"{short.min():.0%}" == "1%" and f"{short.max():.0%}" == "18%"
    assert "1–18 % fewer" in readme and "1–18 % fewer training tokens" in doc
    # the corrected table cell, and the F test of the two strategies' variances
    r1 = by[("random", 1)].test_rougeL
    assert f"| {r1.mean():.1f} ± {r1.std(ddof=1):.1f} |" in doc and "17.2 ± 0.3" in doc
    p = []
    for r in (1, 2):  # two-sided F test of the two strategies' variances over 3 seeds
        f = by[("prompt-uncertainty", r)].test_rougeL.var(ddof=1) / by[("random", r)].test_rougeL.var(ddof=1)
        p.append(2 * min(sps.f.sf(f, 2, 2), sps.f.cdf(f, 2, 2)))
    assert f"p ≈ {p[0]:.2f} (round 1) and {p[1]:.2f} (round 2)" in doc


def test_the_novelty_numbers():
    n = pd.read_csv(RESULTS / "novelty.csv")
    readme, doc = _section(_text("README.md"), "## Findings on a real model"), _text("docs/findings.md")
    ratio = f"{n.ratio.mean():.2f} ± {n.ratio.std(ddof=1):.2f}"
    fall = -n.unrelated_relative_change.mean()
    assert f"by {fall * 100:.0f} %" in readme and f"measured {ratio}" in readme
    # the ceiling: a complete fall of the related tasks' U over the unrelated tasks' fall
    per_draw = n.related_before / -n.unrelated_change  # the related tasks' U all gone, over the unrelated fall
    ceiling = per_draw.mean()  # comparable with the mean of the per-draw ratios
    assert f"could not exceed {ceiling:.2f}" in readme and f"at most {ceiling:.2f}" in doc
    assert f"(per draw {per_draw.min():.2f}–{per_draw.max():.2f})" in doc


def test_the_similarity_numbers():
    s = pd.read_csv(RESULTS / "similarity.csv")
    readme, doc = _section(_text("README.md"), "## Findings on a real model"), _text("docs/findings.md")
    rouge = s.pivot(index="seed", columns="strategy", values="rougeL")
    tokens = s.pivot(index="seed", columns="strategy", values="train_tokens")
    raw, aligned = rouge.similarity - rouge.random, rouge["similarity-aligned"] - rouge.random
    assert f"{_pm(raw)} Rouge-L over random (raw encoder), {_pm(aligned)} (aligned)" in readme
    assert (raw > 0).all() and (aligned > 0).all() and "ahead in 3 of 3 seeds" in readme
    more = tokens.similarity.sum() / tokens.random.sum() - 1
    per_seed = tokens.similarity / tokens.random - 1
    pct = [f"{v * 100:.0f} %" for v in per_seed]
    assert f"on {more * 100:.0f} % more training tokens" in readme
    assert f"({', '.join(pct[:-1])} and {pct[-1]} by seed)" in doc


def test_the_diversity_numbers():
    d = pd.read_csv(RESULTS / "diversity.csv")
    readme, doc = _section(_text("README.md"), "## Findings on a real model"), _text("docs/findings.md")
    em = d.pivot_table(index="seed", columns=["rules", "examples_per_rule"], values="unseen_em")
    key = em[(4096, 1)] - em[(512, 8)]
    assert f"{_pm(key, 2)} unseen-rule exact match" in readme
    assert f"(SE {key.std(ddof=1) / np.sqrt(len(key)):.2f})" in doc
    small = em[(512, 1)] - em[(64, 8)]
    assert f"{_f(small.mean(), '.2f')} ± {small.std(ddof=1):.2f}" in doc
    d["distinct"] = d.rules * d.examples_per_rule
    big, tiny = d[d.distinct >= 4096].unseen_em, d[d.distinct == 512].unseen_em
    assert f"(per seed {big.min():.2f}–{big.max():.2f})" in doc and f"(≤ {tiny.max():.4f}, below the" in doc
    assert f"below the {d.copy_em.mean():.2f} copy floor" in doc
    # at 4,096 distinct examples the fewest rules is 512: past the paper's transition
    assert d[d.distinct == 4096].rules.min() == 512


def test_the_cost_table():
    c = pd.read_csv(RESULTS / "cost.csv")
    doc = _text("docs/findings.md")
    for name, minutes in (("active_loop", "85.8"), ("novelty", "18.5"), ("similarity", "19.9")):
        rows = c[c.experiment == name]
        seconds = rows.experiment_stage_seconds.unique()
        assert len(seconds) == 1 and f"{seconds[0] / 60:.1f}" == minutes and f"| {minutes} min |" in doc
        assert f"| {rows.flops.sum() / seconds[0] / 1e9:.0f} GFLOP/s" in doc
    sim = c[c.experiment == "similarity"]
    assert "(56 over the wall time)" in doc and round(sim.flops.sum() / (33.3 * 60) / 1e9) == 56


def test_the_diversity_rules_vs_examples_numbers():
    """Issue 25's diversity cells (rules {8, 64} x examples per rule {64, 512}): the paired
    difference, its interval, the detectable difference (power 0.8 there, by scipy's
    noncentral t), the wins, each cell's mean ± SD and the copy floor, from the cells CSV."""
    d = pd.read_csv(RESULTS / "diversity_rules_vs_examples.csv")
    doc = _section(_text("docs/findings.md"), "## Issue 25")
    em = d.pivot_table(index="seed", columns=["rules", "examples_per_rule"], values="unseen_em")
    diff = em[(64, 64)] - em[(8, 512)]
    n, mean, sd = len(diff), diff.mean(), diff.std(ddof=1)
    half = sps.t.ppf(0.975, n - 1) * sd / np.sqrt(n)
    assert f"+{mean:.3f} unseen-rule exact match [{_f(mean - half, '+.3f')}, {_f(mean + half, '+.3f')}]" in doc
    assert f"ahead in {(diff > 0).sum()} of {n} seeds" in doc
    readme = _section(_text("README.md"), "## Findings on a real model")
    assert f"64 × 64 − 8 × 512 +{mean:.3f} [{_f(mean - half, '+.3f')}, {_f(mean + half, '+.3f')}]" in readme
    crit, mde = sps.t.ppf(0.975, n - 1), 0.147
    power = 1 - sps.nct.cdf(crit, n - 1, mde * np.sqrt(n) / sd) + sps.nct.cdf(-crit, n - 1, mde * np.sqrt(n) / sd)
    assert abs(power - 0.8) < 0.005 and f"with {mde} detectable at {n} seeds" in doc
    for (rules, per), cell in em.items():
        assert f"{rules} × {per} {cell.mean():.3f} ± {cell.std(ddof=1):.3f}" in doc
    assert f"the {d.copy_em.mean():.2f} copy floor" in doc and em.max().max() < d.copy_em.mean() + 0.1
    assert f"{d.seconds.sum() / 60:.1f} cell-minutes" in doc
    best = d.loc[d.unseen_em.idxmax()]
    assert f"(best single cell {best.unseen_em:.2f}, seed {best.seed})" in doc
    pairs = pd.read_csv(RESULTS / "diversity_rules_vs_examples_pairs.csv").iloc[0]
    assert pairs.difference == pytest.approx(mean) and pairs.ci95_low == pytest.approx(mean - half)
    assert pairs.detectable == pytest.approx(mde, abs=5e-4) and pairs.more_rules_won == (diff > 0).sum()


def test_the_diversity_pair_seeds_numbers():
    """Issue 25's 9 new seeds of 4,096 x 1 against 512 x 8: the paired difference, its
    interval, the wins and the per-seed range, each cell's mean ± SD, the copy floor, the
    protocol's detectable difference (from the pilot's SD, seeds 0-2 of diversity.csv: 80 %
    power at 9 seeds by scipy's noncentral t) and this run's, from the cells CSV."""
    d = pd.read_csv(RESULTS / "diversity_pair_seeds.csv")
    doc = _section(_text("docs/findings.md"), "## Issue 25")
    readme = _section(_text("README.md"), "## Findings on a real model")
    assert sorted(d.seed.unique()) == list(range(3, 12)) and set(d.model) == {"tiny llama 3x96, from scratch"}
    em = d.pivot_table(index="seed", columns=["rules", "examples_per_rule"], values="unseen_em")
    diff = em[(4096, 1)] - em[(512, 8)]
    n, mean, sd = len(diff), diff.mean(), diff.std(ddof=1)
    half = sps.t.ppf(0.975, n - 1) * sd / np.sqrt(n)
    ci = f"[{_f(mean - half, '+.3f')}, {_f(mean + half, '+.3f')}]"
    interval = f"+{mean:.3f} {ci}"
    assert f"4,096 × 1 minus 512 × 8: +{mean:.3f} unseen-rule exact match {ci}" in doc and n == 9
    assert f"512 × 8 {interval} unseen-rule exact match, ahead in {(diff > 0).sum()} of 9" in readme
    assert f"ahead in {(diff > 0).sum()} of 9 seeds (per seed {_f(diff.min(), '.3f')} to +{diff.max():.3f})" in doc
    for (rules, per), cell in em.items():
        assert f"{rules:,} × {per} {cell.mean():.3f} ± {cell.std(ddof=1):.3f}" in doc
    assert f"the {d.copy_em.mean():.2f} copy floor" in doc and em[(512, 1)].mean() < d.copy_em.mean()
    assert f"{d.seconds.sum() / 60:.1f} cell-minutes" in doc

    def power(effect: float, sd: float, n: int) -> float:
        crit, nc = sps.t.ppf(0.975, n - 1), effect * np.sqrt(n) / sd
        return 1 - sps.nct.cdf(crit, n - 1, nc) + sps.nct.cdf(-crit, n - 1, nc)

    pilot = pd.read_csv(RESULTS / "diversity.csv").pivot_table(index="seed", columns=["rules", "examples_per_rule"],
                                                               values="unseen_em")
    pilot_sd = (pilot[(4096, 1)] - pilot[(512, 8)]).std(ddof=1)
    assert f"{pilot_sd:.3f}" == "0.081" and abs(power(0.086, pilot_sd, 9) - 0.8) < 0.01
    assert f"this run's SD ({sd:.3f}) puts the detectable difference at 0.100" in doc
    assert abs(power(0.100, sd, 9) - 0.8) < 0.01
    pairs = pd.read_csv(RESULTS / "diversity_pair_seeds_pairs.csv").iloc[0]
    assert pairs.difference == pytest.approx(mean) and pairs.ci95_low == pytest.approx(mean - half)
    assert pairs.detectable == pytest.approx(0.100, abs=5e-4) and pairs.more_rules_won == (diff > 0).sum()


def test_the_similarity_targets_numbers():
    """Issue 25's similarity protocol (per-target matching or style): every arm's paired
    difference in test NLL/token, its 95 % t interval and the seeds below the reference,
    the random-vs-random floor and the equal budgets, recomputed from the shipped CSV with
    pandas and scipy; the summary JSON holds the same contrast."""
    import json

    t = pd.read_csv(RESULTS / "similarity_targets.csv")
    doc = _section(_text("docs/findings.md"), "## Issue 25")
    readme = _section(_text("README.md"), "## Findings on a real model")
    assert sorted(t.seed.unique()) == list(range(2, 10)) and set(t.model) == {"smollm2-135m-instruct"}
    arms = t[t.strategy != "base"]
    assert set(arms.strategy) == {"random", "random-2", "similarity", "similarity-test"}
    assert f"every selection {arms.n_tokens.min():,.0f}–{arms.n_tokens.max():,.0f} tokens)" in doc
    nll = t.pivot(index="seed", columns="strategy", values="nll")

    def diff(a: str, b: str) -> str:
        d = nll[a] - nll[b]
        ci = sps.ttest_1samp(d, 0.0).confidence_interval(0.95)
        return (f"{_f(d.mean(), '+.3f')} [{_f(ci.low, '+.3f')}, {_f(ci.high, '+.3f')}] "
                f"(below {b} in {(d < 0).sum()} of 8 seeds)")

    for a, b in (("similarity", "random"), ("similarity-test", "random"), ("similarity-test", "similarity"),
                 ("random-2", "random")):
        assert f"{a} − {b} {diff(a, b)}" in doc, (a, b, diff(a, b))
    for a, b in (("similarity", "random"), ("similarity-test", "similarity")):
        assert f"{a} − {b} {diff(a, b)}" in readme, (a, b)
    floor = (nll["random-2"] - nll["random"]).std(ddof=1)
    assert f"SD {floor:.3f}" in doc
    summary = json.loads((RESULTS / "similarity_targets.json").read_text())
    c = summary["contrasts"]["similarity-test - similarity"]["nll"]
    assert c["differences"] == pytest.approx((nll["similarity-test"] - nll["similarity"]).tolist())


def test_the_loop_tokens_numbers():
    """Issue 25's active loop at equal training tokens: per round, prompt uncertainty's and
    random-2's paired difference with random in test NLL/token (same seed), its 95 % t
    interval and the seeds below random, recomputed from the shipped CSV with pandas and
    scipy; the budgets equal across arms; the detectable effect from the observed SD;
    Rouge-L as the second view and the selected tasks' uncertainty."""
    from raysys.stats import detectable_effect

    t = pd.read_csv(RESULTS / "loop_tokens.csv")
    doc = _section(_text("docs/findings.md"), "## Issue 25")
    readme = _section(_text("README.md"), "## Findings on a real model")
    assert sorted(t.seed.unique()) == list(range(2, 10)) and set(t.model) == {"smollm2-135m-instruct"}
    assert set(t.strategy) == {"prompt-uncertainty", "random", "random-2"}
    later = t[t["round"] > 0]
    spread = later.groupby(["seed", "round"]).train_tokens.agg(lambda g: g.max() / g.min() - 1)
    assert spread.max() < 0.02 and f"{spread.max():.1%}" == "1.8%"  # equal tokens, as stated
    assert "trained tokens within 1.8 % of each other in every seed and round" in doc
    stated = {}
    for r, tokens in ((1, "10,000"), (2, "15,000")):
        nll = t[t["round"] == r].pivot(index="seed", columns="strategy", values="test_nll")
        rouge = t[t["round"] == r].pivot(index="seed", columns="strategy", values="test_rougeL")
        for a in ("prompt-uncertainty", "random-2"):
            d = nll[a] - nll["random"]
            ci = sps.ttest_1samp(d, 0.0).confidence_interval(0.95)
            stated[(a, r)] = (f"{a} − random {_f(d.mean(), '+.3f')} [{_f(ci.low, '+.3f')}, "
                              f"{_f(ci.high, '+.3f')}] (below random in {(d < 0).sum()} of 8 seeds)")
            assert f"at {tokens} tokens {stated[(a, r)]}" in doc, stated[(a, r)]
        d = rouge["prompt-uncertainty"] - rouge["random"]
        ci = sps.ttest_1samp(d, 0.0).confidence_interval(0.95)
        second = f"{_f(d.mean(), '+.2f')} [{_f(ci.low, '+.2f')}, {_f(ci.high, '+.2f')}]"
        assert (f"{second} points at 10,000 tokens" if r == 1 else f"and {second} at 15,000") in doc, second
    assert stated[("prompt-uncertainty", 2)] in readme
    last = t[t["round"] == 2].pivot(index="seed", columns="strategy", values="test_nll")
    d = last["prompt-uncertainty"] - last["random"]
    sd = d.std(ddof=1)
    mde = detectable_effect(sd, 8)
    assert f"Its SD in the last round ({sd:.3f}) puts the detectable difference at {mde:.3f}" in doc
    assert f"{mde:.3f} detectable" in readme
    floor = (last["random-2"] - last["random"]).mean()
    assert f"two random draws differed by as much ({_f(floor, '+.3f')})" in readme
    u = t[t["round"] == 2].groupby("strategy").selected_prompt_uncertainty
    m, s = u.mean(), u.std()
    assert (f"selected U {m['prompt-uncertainty']:.3f} ± {s['prompt-uncertainty']:.3f} against random's "
            f"{m['random']:.3f} ± {s['random']:.3f}") in doc
    assert round(m["prompt-uncertainty"] / m["random"]) == 3 and "3× as uncertain" in doc


def test_the_novelty_dose8_numbers():
    """Issue 25's novelty re-measurement and its positive control: each draw's change per
    role on M0's answers recomputed from the per-task CSV, the ratios, the pooled ratios, the
    ceilings, the control's criterion (a ratio above 1 in every draw), and the same M1 in both."""
    doc, readme = _section(_text("docs/findings.md"), "## Issue 25"), _section(_text("README.md"), "## Findings")
    out = {}
    for name in ("novelty_dose8", "novelty_dose8_control"):
        draws = pd.read_csv(RESULTS / f"{name}.csv").set_index("seed")
        tasks = pd.read_csv(RESULTS / f"{name}_tasks.csv")
        tasks["same"] = tasks.uncertainty_m1_same - tasks.uncertainty_m0
        tasks["own"] = tasks.uncertainty_m1 - tasks.uncertainty_m0
        change = tasks.groupby(["seed", "role"])[["same", "own", "uncertainty_m0"]].mean().unstack("role")
        assert draws.same_related_change.tolist() == pytest.approx(change["same"]["related"].tolist())
        assert draws.same_unrelated_change.tolist() == pytest.approx(change["same"]["unrelated"].tolist())
        ratio = change["same"]["related"] / change["same"]["unrelated"]
        assert draws.same_ratio.tolist() == pytest.approx(ratio.tolist())
        pooled = change["same"]["related"].mean() / change["same"]["unrelated"].mean()
        ceiling = change["uncertainty_m0"]["related"] / -change["same"]["unrelated"]  # related U all gone
        out[name] = (change, ratio, pooled, ceiling, draws)
        assert set(tasks.model) == {"smollm2-135m-instruct"} and sorted(tasks.seed.unique()) == [0, 1, 2]
    change, ratio, pooled, ceiling, draws = out["novelty_dose8"]
    per_draw = ", ".join(f"{r:.2f}" for r in ratio)
    assert f"pooled ratio {pooled:.2f} (per draw {per_draw}; mean {ratio.mean():.2f} ± {ratio.std(ddof=1):.2f})" in doc
    assert f"up to {ceiling.mean():.2f} (the mean ceiling; per draw {', '.join(f'{c:.2f}' for c in ceiling)})" in doc
    assert f"pooled ratio {pooled:.2f}, where up to {ceiling.mean():.2f}" in readme
    assert (draws.same_direction == "both decreased").all()
    # each model's own answers: opposite directions in every draw
    own = change["own"]["related"] / change["own"]["unrelated"]
    assert (draws.direction == "opposite directions").all() and (own < 0).all()
    assert f"(ratios {', '.join(_f(r, '.2f') for r in own)})" in doc
    # the positive control: the same M1 and related tasks, Alpaca tasks as the unrelated ones
    c_change, c_ratio, c_pooled, _, c_draws = out["novelty_dose8_control"]
    # (retrained and scored beside other tasks: equal to ~1e-7, batching's float32 noise)
    assert c_change["same"]["related"].tolist() == pytest.approx(change["same"]["related"].tolist(), abs=1e-6)
    assert (c_draws.train_tasks == draws.train_tasks).all()
    fell = ", ".join(f"{-v:.4f}" for v in c_change["same"]["related"])
    assert f"(by {fell.rsplit(', ', 1)[0]} and {fell.rsplit(', ', 1)[1]})" in doc
    moved = ", ".join(_f(v, "+.4f") for v in c_change["same"]["unrelated"])
    assert f"barely moved ({moved}:" in doc
    share = (c_change["same"]["unrelated"].abs() / c_change["same"]["related"].abs()).max()
    assert share < 1 / 6 and "at most a sixth of the Biology tasks' fall in the same draw" in doc
    above = int((c_ratio > 1).sum())
    assert above == 2 and f"pooled ratio {c_pooled:.2f}, a ratio above 1 in {above} of 3 draws" in doc
    assert f"(ratio {_f(c_ratio.iloc[0], '.2f')})" in doc and f"pooled ratio {c_pooled:.2f} in" in readme
    # the pilot's ceilings on M0's answers, and the dose its rule (largest with ceiling >= 2) chose
    pilot = pd.read_csv(RESULTS / "novelty_dose_pilot.csv").set_index("instances_per_task")
    c = pilot.related_before / -pilot.same_unrelated_change
    assert c.tolist() == pytest.approx(pilot.same_ceiling.tolist())
    assert f"ceilings {c[8]:.2f} (8 instances per trained task), {c[16]:.2f} (16) and {c[32]:.2f} (32)" in doc
    assert max(d for d in c.index if c[d] >= 2) == 8
