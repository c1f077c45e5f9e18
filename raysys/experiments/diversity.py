"""The instruction-diversity experiment's pure parts: the grid, each cell's training and
test tasks, its metrics, the table and the heatmap (no Ray, no torch).

A cell is (training family, skew, distinct rules R, examples per rule E, seed). Its
training pool is a synthetic pool of R rules with R x E examples in all (spread by the
skew); its test set is shared by every cell of the same (family, seed): `test_rules`
unseen rules of the test families, drawn first from their own seed (10,000 + seed) and
excluded from every training pool, so "unseen" holds by construction. Every cell trains
for the same number of steps, so it processes the same number of examples; `epochs` in
the table says how often it saw each one.

Exact match is the fraction (0-1) of test instances answered exactly (whitespace-trimmed), per
test family ("family:k") and overall. `copy_em` is what a model that returns its input
unchanged would score on the same instances (the share of no-op instances): the floor an
unseen-rule score must clear before it means anything.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from raysys.config.experiments import DiversityConfig
from raysys.evaluation.metrics import exact_match
from raysys.pools.markov import generate, rule_of
from raysys.prompts import format_prompt
from raysys.schema import Task

TEST_SEED_OFFSET = 10_000


@dataclass(frozen=True)
class Cell:
    family: str
    skew: float
    rules: int
    examples_per_rule: int
    seed: int

    @property
    def cell_id(self) -> str:
        fam = self.family.replace(":", "")
        return f"{fam}-skew{self.skew:g}-r{self.rules}-e{self.examples_per_rule}-s{self.seed}"


def cells(cfg: DiversityConfig) -> list[Cell]:
    return [Cell(f, s, r, e, seed) for seed in cfg.seeds for f in cfg.families for s in cfg.skews
            for r in cfg.rules for e in cfg.examples_per_rule]


def family_spec(task: Task) -> str:
    fam, k = task.metadata["family"], task.metadata["k"]
    return fam if fam == "unrestricted" else f"{fam}:{k}"


def unseen_tasks(cfg: DiversityConfig, family: str, seed: int) -> list[Task]:
    """The unseen rules every cell of (family, seed) is tested on."""
    synth = replace(cfg.synth, rules=0, unseen_rules=cfg.test_rules,
                    unseen_examples_per_rule=cfg.test_examples_per_rule, families=(family,),
                    unseen_families=cfg.test_families or (family,), skew=0.0, seed=TEST_SEED_OFFSET + seed)
    return generate(synth)


def training_tasks(cfg: DiversityConfig, cell: Cell, test: Sequence[Task]) -> list[Task]:
    """The cell's training rules: none of them is a test rule."""
    synth = replace(cfg.synth, rules=cell.rules, examples_per_rule=cell.examples_per_rule, families=(cell.family,),
                    skew=cell.skew, unseen_rules=0, unseen_families=(), seed=cell.seed)
    return generate(synth, exclude=[rule_of(t) for t in test])


def prompt_rows(tasks: Sequence[Task], template: str, per_task: int | None = None) -> list[dict]:
    """{task_id, family, prompt, target, input} for every instance (the first `per_task` of each)."""
    return [{"task_id": t.task_id, "family": family_spec(t), "input": inst.input, "target": inst.outputs[0],
             "prompt": format_prompt(template, t.instruction, inst.input, (), 0)}
            for t in tasks for inst in t.instances[:per_task]]


def exact_matches(rows: Sequence[dict], predictions: Sequence[str]) -> dict[str, float]:
    """Exact match overall ("all") and per family of `rows`, and copy_em of the same rows."""
    if len(rows) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions for {len(rows)} rows")
    hits: dict[str, list[float]] = {}
    for row, pred in zip(rows, predictions):
        e = exact_match(pred, [row["target"]]) / 100.0  # a fraction here, a percentage in `raysys eval`
        hits.setdefault("all", []).append(e)
        hits.setdefault(row["family"], []).append(e)
    out = {k: sum(v) / len(v) for k, v in hits.items()}
    out["copy"] = sum(r["input"] == r["target"] for r in rows) / max(len(rows), 1)
    return out


def cell_result(cell: Cell, cfg: DiversityConfig, n_examples: int, losses: Sequence[float], seconds: float,
                test_em: dict[str, float], seen_em: float | None) -> dict:
    """One row of the table (flat: strings and numbers)."""
    processed = cfg.steps * cfg.train.batch_size
    tail = losses[-max(1, len(losses) // 10):]
    row = {"model": f"tiny {cfg.tiny.arch} {cfg.tiny.layers}x{cfg.tiny.hidden_size}, from scratch",
           "cell": cell.cell_id, "family": cell.family, "skew": cell.skew, "rules": cell.rules,
           "examples_per_rule": cell.examples_per_rule, "seed": cell.seed, "distinct_examples": n_examples,
           "examples_processed": processed, "epochs": processed / n_examples,
           "final_train_loss": sum(tail) / len(tail) if tail else math.nan,
           "unseen_em": test_em["all"], "copy_em": test_em["copy"],
           "seen_em": math.nan if seen_em is None else seen_em, "seconds": seconds}
    families = sorted(k for k in test_em if k not in ("all", "copy"))
    if len(families) > 1:  # transfer: one column per test family
        for fam in families:
            row[f"unseen_em[{fam}]"] = test_em[fam]
    return row


def summarize(rows: Sequence[dict]):
    """Mean over seeds per (family, skew, rules, examples_per_rule), with the seed count,
    and the sample std over seeds of the exact-match columns (`<column>_std`, NaN for one
    seed; raysys.stats.mean_std)."""
    import pandas as pd

    from raysys.stats import mean_std

    df = pd.DataFrame(rows)
    keys = ["family", "skew", "rules", "examples_per_rule"]
    metrics = [c for c in df.columns if c.startswith(("unseen_em", "seen_em", "copy_em", "final_train_loss"))
               or c in ("epochs", "distinct_examples")]
    groups = df.groupby(keys, sort=True)
    out = groups[metrics].mean().reset_index()
    out.insert(len(keys), "seeds", groups.size().values)
    for c in (c for c in metrics if c.endswith("_em") or c.startswith("unseen_em[")):
        std = groups[c].agg(lambda v: mean_std(v)[1]).values
        out[f"{c}_std"] = [math.nan if v is None else v for v in std]
    return out


def equal_example_pairs(rows: Sequence[dict]) -> list[dict]:
    """The finding's comparison: per (family, skew), every two cells with as many distinct
    examples but different rule counts, the paired difference over seeds of unseen-rule
    exact match, more rules minus fewer (raysys.stats.paired: mean, 95 % interval, the
    difference detectable at 80 % power, seeds where more rules won), and the copy floor."""
    from raysys.stats import paired

    out = []
    shaped = [{**r, "shape": (r["rules"], r["examples_per_rule"])} for r in rows]
    for fam, skew in sorted({(r["family"], r["skew"]) for r in rows}):
        mine = [r for r in shaped if (r["family"], r["skew"]) == (fam, skew)]
        shapes = sorted({r["shape"] for r in mine})
        for i, a in enumerate(shapes):
            for b in shapes[i + 1:]:
                if a[0] * a[1] != b[0] * b[1]:
                    continue
                more, fewer = (a, b) if a[0] > b[0] else (b, a)
                d = paired(mine, "unseen_em", more, fewer, by="shape")
                copy = [r["copy_em"] for r in mine if r["shape"] in (more, fewer)]
                out.append({"family": fam, "skew": skew, "distinct_examples": a[0] * a[1],
                            "more_rules": f"{more[0]} x {more[1]}", "fewer_rules": f"{fewer[0]} x {fewer[1]}",
                            "seeds": d["pairs"], "difference": d["mean"], "std": d["std"],
                            "ci95_low": d["ci95_low"], "ci95_high": d["ci95_high"], "detectable": d["detectable"],
                            "more_rules_won": d["a_better"], "copy_floor": sum(copy) / len(copy)})
    return out


def render_pairs(pairs: Sequence[dict]) -> str:
    """One line per equal-examples pair."""
    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    head = (f"{'family':<14} {'examples':>8} {'more rules - fewer':>22} {'seeds':>5} {'difference':>10} "
            f"{'95% CI':>18} {'detectable':>10} {'won':>5}")
    lines = [head]
    for p in pairs:
        ci = f"[{f(p['ci95_low'], '+.3f')}, {f(p['ci95_high'], '+.3f')}]"
        lines.append(f"{p['family']:<14} {p['distinct_examples']:>8} {p['more_rules'] + ' - ' + p['fewer_rules']:>22} "
                     f"{p['seeds']:>5} {f(p['difference'], '+.3f'):>10} {ci:>18} {f(p['detectable'], '.3f'):>10} "
                     f"{p['more_rules_won']:>2}/{p['seeds']}")
    return "\n".join(lines)


def render(summary) -> str:
    """The summary table; with several seeds an exact-match column reads "mean ± std"."""
    cols = ["family", "skew", "rules", "examples_per_rule", "seeds", "distinct_examples", "epochs",
            "final_train_loss", "seen_em", "unseen_em", "copy_em"]
    cols += [c for c in summary.columns if c.startswith("unseen_em[") and not c.endswith("_std")]
    view = summary[cols].copy()
    if (summary["seeds"] > 1).any():
        for c in cols:
            if f"{c}_std" in summary.columns:
                view[c] = [f"{m:.3f} ± {s:.3f}" if s == s else f"{m:.3f}"
                           for m, s in zip(summary[c], summary[f"{c}_std"])]
    return view.to_string(index=False, float_format=lambda v: f"{v:.3f}")


def plot_heatmaps(summary, path: str | Path) -> str:
    """Unseen-rule exact match over (rules, examples per rule): one panel per
    (family, skew, test family); cells at or below the copy floor hatched."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    metrics = [c for c in summary.columns if c.startswith("unseen_em[") and not c.endswith("_std")] or ["unseen_em"]
    panels = [(f, s, m) for (f, s) in summary[["family", "skew"]].drop_duplicates().itertuples(index=False)
              for m in metrics]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    rules = sorted(summary["rules"].unique())
    epr = sorted(summary["examples_per_rule"].unique())
    for ax, (fam, skew, metric) in zip(axes[0], panels):
        sub = summary[(summary["family"] == fam) & (summary["skew"] == skew)]
        floor = float(sub["copy_em"].mean())  # what returning the input unchanged scores on these instances
        grid = np.full((len(rules), len(epr)), np.nan)
        spread = np.full_like(grid, np.nan)
        for r in sub.to_dict("records"):
            grid[rules.index(r["rules"]), epr.index(r["examples_per_rule"])] = r[metric]
            spread[rules.index(r["rules"]), epr.index(r["examples_per_rule"])] = r.get(f"{metric}_std", np.nan)
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", origin="lower", aspect="auto")
        for i in range(len(rules)):
            for j in range(len(epr)):
                if not np.isnan(grid[i, j]):
                    label = f"{grid[i, j]:.2f}" + ("" if np.isnan(spread[i, j]) else f"\n± {spread[i, j]:.2f}")
                    if grid[i, j] <= floor:  # no better than returning the input unchanged
                        label += "\n≤ copy"
                        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//",
                                                   edgecolor="white", lw=0))
                    ax.text(j, i, label, ha="center", va="center",
                            color="white" if grid[i, j] < 0.6 else "black", fontsize=9)
        ax.set_xticks(range(len(epr)), [str(e) for e in epr])
        ax.set_yticks(range(len(rules)), [str(r) for r in rules])
        ax.set_xlabel("examples per rule")
        ax.set_ylabel("distinct rules")
        test = metric[len("unseen_em["):-1] if metric.startswith("unseen_em[") else "unseen rules"
        seeds = int(sub["seeds"].max())
        ax.set_title(f"train {fam}, skew {skew:g}\nexact match on {test}"
                     + (f" (mean ± std, {seeds} seeds)" if seeds > 1 else "")
                     + f"\ncopy floor {floor:.2f}: hatched cells do no better", fontsize=9)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    fig.savefig(path, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return str(path)
