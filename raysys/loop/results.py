"""The loop's results: one row per (strategy, seed, round) read from the rounds'
record.json files, with the tokens each round's stages processed and their FLOPs
(raysys.costs), written
as results.parquet and results.csv; summary.json with the mean and sample std over seeds
per (strategy, round) and each strategy's paired difference with random (same seed and
round); learning curves (one panel per metric, mean
+- std over seeds per strategy, like the method's overall / classification / generative
plots); the mean prompt uncertainty of the tasks each round selected; and the Task Map
of the first score-ranked trial's first scored round.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from raysys.config import LoopConfig
from raysys.costs import eval_flops, eval_tokens, score_flops, score_tokens, total, train_tokens, trained_flops
from raysys.errors import RaysysError
from raysys.io import atomic_path, read_json, write_json, write_parquet
from raysys.loop.rounds import RECORD, round_dir, seed_dir
from raysys.runs.workdir import model_name
from raysys.stats import finite, mean_std, paired

COLUMNS = ("model", "strategy", "seed", "round", "n_tasks", "n_new", "candidates", "train_loss", "val_loss",
           "val_rougeL", "val_exact_match", "test_rougeL", "test_rougeL_classification", "test_rougeL_generative",
           "test_exact_match", "test_exact_match_classification", "test_exact_match_generative", "test_nll",
           "test_nll_classification", "test_nll_generative", "test_label_accuracy", "selected_prompt_uncertainty", "selected_prediction_probability", "seconds", "score_tokens",
           "train_tokens", "eval_tokens", "score_flops", "train_flops", "eval_flops", "model_dir")
CURVES = ("test_nll", "test_rougeL", "test_rougeL_classification", "test_rougeL_generative", "test_exact_match",
          "val_loss")
SUMMARY = ("n_tasks", "test_rougeL", "test_exact_match", "test_nll", "val_loss", "selected_prompt_uncertainty")


def round_tokens(folder: Path, model_dir: str, workers: int) -> dict[str, int | float | None]:
    """Tokens the round's stages processed and their FLOPs (raysys.costs): its scoring (the
    candidates, or what a score-free strategy selected), training and evaluations; None
    where unknown. score_flops / train_flops is what selection cost per unit of training."""
    scored = [p for p in (folder / "scores" / "scores.parquet", folder / "scores-selected" / "scores.parquet")
              if p.is_file()]
    evals = sorted(folder.glob("eval-*.json"))
    return {"score_tokens": total(score_tokens(p) for p in scored),
            "train_tokens": train_tokens(model_dir, workers),
            "eval_tokens": total(eval_tokens(p) for p in evals),
            "score_flops": total(score_flops(p) for p in scored),
            "train_flops": trained_flops(model_dir),
            "eval_flops": total(eval_flops(p) for p in evals)}


def collect(cfg: LoopConfig, work: Path, seeds: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """Every round's row, in strategy, seed, round order (round 0 is the seed's shared base),
    of `seeds` (default the config's); `model` names the base model (its path as configured,
    or "tiny"), `model_dir` holds the round's fine-tuned one."""
    rows = []
    for strategy in cfg.strategies:
        for seed in cfg.seeds if seeds is None else seeds:
            for r in range(cfg.rounds):
                folder = seed_dir(work, seed) if r == 0 else round_dir(work, strategy, seed, r)
                if not (folder / RECORD).is_file():
                    raise RaysysError(f"round {r} of {strategy} seed {seed} has no record ({folder / RECORD})")
                rec = read_json(folder / RECORD)
                full = {**rec, **round_tokens(folder, rec["model"], cfg.train.workers), "strategy": strategy,
                        "model": model_name(cfg.model), "model_dir": rec["model"]}
                rows.append({c: full.get(c) for c in COLUMNS})
    return rows


def summarize(rows: Sequence[dict[str, Any]], columns: Sequence[str] = SUMMARY) -> list[dict[str, Any]]:
    """Per (strategy, round): seeds, and for each column its mean and sample std over the
    seeds that have a value (raysys.stats.mean_std: None where none has; std None for one)."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["strategy"], r["round"]), []).append(r)
    out = []
    for (strategy, round_), rs in groups.items():
        row: dict[str, Any] = {"strategy": strategy, "round": round_, "seeds": len(rs)}
        for c in columns:
            row[c], row[f"{c}_std"] = mean_std(r.get(c) for r in rs)
        out.append(row)
    return out


PAIRED_KEYS = ("test_nll", "test_rougeL")  # the held-out NLL per token first: the low-variance metric


def paired_differences(rows: Sequence[dict[str, Any]], baseline: str = "random",
                       keys: Sequence[str] = PAIRED_KEYS) -> list[dict[str, Any]]:
    """Per metric of `keys` the rows hold, per strategy other than `baseline` and per
    round after round 0: the difference with the baseline in the same seed and round
    (raysys.stats.paired: mean, 95 % interval, detectable difference; random-2 - random
    is the noise floor)."""
    strategies = [s for s in dict.fromkeys(r["strategy"] for r in rows) if s != baseline]
    if baseline not in {r["strategy"] for r in rows}:
        return []
    rounds = sorted({r["round"] for r in rows if r["round"] > 0})
    held = [k for k in keys if any(finite(r.get(k)) for r in rows)]
    return [{"strategy": s, "round": k, **paired([r for r in rows if r["round"] == k], key, s, baseline)}
            for key in held for s in strategies for k in rounds]


def flops_by_strategy(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per strategy, FLOPs summed over seeds and rounds: selection (scoring), training and
    evaluation, and selection / training (None where a stage's count is unknown)."""
    out = []
    for strategy in dict.fromkeys(r["strategy"] for r in rows):
        rs = [r for r in rows if r["strategy"] == strategy and r["round"] >= 1]
        row = {"strategy": strategy,
               **{c: total(r[c] for r in rs) for c in ("score_flops", "train_flops", "eval_flops")}}
        row["selection_over_training"] = (row["score_flops"] / row["train_flops"]
                                          if row["score_flops"] is not None and row["train_flops"] else None)
        out.append(row)
    return out


def render(summary: Sequence[dict[str, Any]], paired_rows: Sequence[dict[str, Any]] = (),
           cost_rows: Sequence[dict[str, Any]] = ()) -> str:
    def f(v, std=None, width=14):
        if v is None:
            return f"{'-':>{width}}"
        s = f"{v:.4g}" if std is None else f"{v:.4g} ± {std:.2g}"
        return f"{s:>{width}}"

    head = (f"{'strategy':<20} {'round':>5} {'tasks':>6} {'test Rouge-L':>16} {'test exact':>16} "
            f"{'test NLL/token':>16} {'val loss':>16} {'sel. uncertainty':>16}")
    lines = [head, "-" * len(head)]
    for r in summary:
        lines.append(f"{r['strategy']:<20} {r['round']:>5} {r['n_tasks']:>6.0f} "
                     + " ".join(f(r[c], r[f"{c}_std"], 16) for c in SUMMARY[1:]))
    for p in paired_rows:
        if p["pairs"]:
            lower = p["key"].endswith("nll")  # NLL: lower is better
            ahead = p["pairs"] - p["a_better"] if lower else p["a_better"]
            ci = "" if p["ci95_low"] is None else f", 95 % CI [{p['ci95_low']:+.4g}, {p['ci95_high']:+.4g}]"
            mde = "" if p["detectable"] is None else f", detectable {p['detectable']:.3g}"
            lines.append(f"paired {p['strategy']} - {p['b']}, round {p['round']}, {p['key']}: "
                         f"{f(p['mean'], p['std'], 0).strip()}{ci} over {p['pairs']} seed(s){mde}; "
                         f"{p['strategy']} {'lower' if lower else 'higher'} in {ahead}")
    for c in cost_rows:
        g = {k: "-" if c[k] is None else f"{c[k]:.3g}" for k in ("score_flops", "train_flops", "eval_flops")}
        ratio = c["selection_over_training"]
        ratio = "" if ratio is None else f" (selection / training {ratio:.3g})"
        lines.append(f"FLOPs of {c['strategy']} over its seeds and rounds: selection {g['score_flops']}, "
                     f"training {g['train_flops']}, evaluation {g['eval_flops']}{ratio}")
    return "\n".join(lines)


def _figure(n: int, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.8), squeeze=False)
    fig.suptitle(title)
    return fig, axes[0]


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def _band(ax, summary: Sequence[dict], strategy: str, x: str, y: str) -> None:
    pts = [(r[x], r[y], r[f"{y}_std"] or 0.0) for r in summary if r["strategy"] == strategy and r[y] is not None]
    if not pts:
        return
    xs, ys, sd = (np.array(v, dtype=np.float64) for v in zip(*pts))
    ax.plot(xs, ys, marker="o", label=strategy)
    ax.fill_between(xs, ys - sd, ys + sd, alpha=0.2)


def plot_curves(rows: Sequence[dict[str, Any]], path: Path) -> list[str]:
    """Learning curves over rounds: a panel per metric that varies (test NLL per token
    first; a metric all zero or missing is left out), each seed a faint line and the mean
    over seeds a solid one; then the paired difference of each strategy with random per
    round, mean and 95 % interval (random-2, the noise floor, in gray). Integer round
    ticks. Returns the metrics drawn."""
    metrics = [m for m in CURVES if {r.get(m) for r in rows if finite(r.get(m))} - {0.0}]
    if not metrics:
        return []
    summary = summarize(rows, metrics)  # the means over seeds
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    pairs = [p for p in paired_differences(rows, keys=metrics[:1]) if p["pairs"]]
    fig, axes = _figure(len(metrics) + bool(pairs), f"learning curves: faint = each of {len(seeds)} seed(s), "
                                                   "solid = their mean")
    colors = {s: ("gray" if s == "random-2" else f"C{i % 10}") for i, s in enumerate(strategies)}
    rounds = sorted({r["round"] for r in rows})
    for ax, m in zip(axes, metrics):
        for s in strategies:
            for seed in seeds:
                pts = sorted((r["round"], r[m]) for r in rows if r["strategy"] == s and r["seed"] == seed
                             and finite(r.get(m)))
                if pts:
                    ax.plot(*zip(*pts), color=colors[s], alpha=0.25, lw=0.8)
            means = sorted((r["round"], r[m]) for r in summary if r["strategy"] == s and r[m] is not None)
            if means:
                ax.plot(*zip(*means), color=colors[s], marker="o", label=s)
        ax.set_title(m + (" (lower is better)" if m.endswith(("nll", "loss")) else ""))
    if pairs:
        ax = axes[len(metrics)]
        names = list(dict.fromkeys(p["strategy"] for p in pairs))
        for i, s in enumerate(names):
            mine = [p for p in pairs if p["strategy"] == s]
            xs = [p["round"] + 0.08 * (i - (len(names) - 1) / 2) for p in mine]
            ys = [p["mean"] for p in mine]
            err = [[p["mean"] - p["ci95_low"] if p["ci95_low"] is not None else 0.0 for p in mine],
                   [p["ci95_high"] - p["mean"] if p["ci95_high"] is not None else 0.0 for p in mine]]
            ax.errorbar(xs, ys, yerr=err, fmt="o", capsize=4, color=colors[s], label=f"{s} - random")
        ax.axhline(0.0, color="black", lw=0.8)
        ax.set_title(f"{metrics[0]}: each strategy minus random\n(same seed; mean and 95 % CI)", fontsize=9)
        ax.legend(fontsize=7, loc="lower left")
    for ax in axes:
        ax.set_xticks(rounds)
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    _save(fig, path)
    return metrics


def plot_uncertainty(rows: Sequence[dict[str, Any]], path: Path) -> bool:
    """Mean prompt uncertainty (under the model that selected them) of each round's new tasks."""
    picked = [r for r in rows if r["round"] >= 1]
    summary = summarize(picked, ("selected_prompt_uncertainty",))
    if not any(r["selected_prompt_uncertainty"] is not None for r in summary):
        return False
    fig, axes = _figure(1, "prompt uncertainty of the selected tasks")
    for s in dict.fromkeys(r["strategy"] for r in picked):
        _band(axes[0], summary, s, "round", "selected_prompt_uncertainty")
    axes[0].set_xlabel("round")
    axes[0].set_xticks(sorted({r["round"] for r in picked}))
    axes[0].set_ylabel("mean prompt uncertainty (± std over seeds)")
    axes[0].grid(alpha=0.3)
    axes[0].legend()
    _save(fig, path)
    return True


def write_results(cfg: LoopConfig, work: Path, seeds: Sequence[int] | None = None) -> dict[str, Any]:
    """results.parquet/.csv, curves.png, uncertainty.png, taskmap.png/.csv in `work`, over
    `seeds` (default the config's)."""
    import pyarrow.csv as pacsv

    rows = collect(cfg, work, seeds)
    table = pa.Table.from_pylist(rows)
    write_parquet(work / "results.parquet", table)
    with atomic_path(work / "results.csv") as tmp:
        pacsv.write_csv(table, tmp)
    summary = summarize(rows)
    pairs = paired_differences(rows)
    cost_rows = flops_by_strategy(rows)
    write_json(work / "summary.json", {"summary": summary, "paired": pairs, "costs": cost_rows})
    out = {"rows": rows, "summary": summary, "paired": pairs, "costs": cost_rows,
           "table": str(work / "results.parquet"),
           "csv": str(work / "results.csv"), "json": str(work / "summary.json")}
    if plot_curves(rows, work / "curves.png"):
        out["curves"] = str(work / "curves.png")
    if plot_uncertainty(rows, work / "uncertainty.png"):
        out["uncertainty"] = str(work / "uncertainty.png")
    tm = draw_taskmap(cfg, work, (seeds or cfg.seeds)[0])
    if tm:
        out["taskmap"], out["taskmap_counts"] = tm["map"], tm["counts"]
    return out


def draw_taskmap(cfg: LoopConfig, work: Path, seed: int) -> dict[str, Any] | None:
    """taskmap.png/.csv of round 1's scores (the pool under `seed`'s round-0 model),
    with the shares the loop selects by (cfg.select.taskmap); None when no strategy
    ranked by scores or the loop has a single round."""
    from raysys.selection.arms import arm
    from raysys.selection.run import run_taskmap
    from raysys.selection.strategies import NEEDS_SCORES

    ranked = [s for s in cfg.strategies if arm(s)[0] in NEEDS_SCORES]
    scores = round_dir(work, ranked[0], seed, 1) / "scores" / "scores.parquet" if ranked else None
    if scores is None or cfg.rounds < 2 or not scores.is_file():
        return None
    return run_taskmap(str(scores), str(work / "taskmap.png"), cfg.select.taskmap, table=str(work / "taskmap.csv"),
                       title=f"Task Map: the pool under seed {seed}'s round-0 model")
