"""The Task Map: prompt uncertainty x prediction probability -> Ambiguous / Easy / Difficult.

Rank rule (shares from TaskMapConfig):
1. Ambiguous: the round(ambiguous_share x n) tasks of highest prompt uncertainty.
2. Of the rest, Easy: the round(easy_share x rest) tasks of highest prediction probability.
3. Difficult: the others (lowest prediction probability).
Ties go to the task that comes first in the file, so a file always maps the same way.

Plots: a scatter (x: prompt uncertainty on a cube-root axis, y: prediction probability,
colour by category) and a shift view of two score files of the same pool (before and
after training: an arrow per task), with the mean uncertainty change per group of tasks.
Plots use matplotlib's Agg backend and are written atomically.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from raysys.config import TaskMapConfig
from raysys.errors import RaysysError
from raysys.io import atomic_path, write_text

CATEGORIES = ("Ambiguous", "Easy", "Difficult")
COLOURS = {"Ambiguous": "#d62728", "Easy": "#2ca02c", "Difficult": "#1f77b4"}


def categorize(uncertainty: np.ndarray, probability: np.ndarray, cfg: TaskMapConfig = TaskMapConfig()) -> np.ndarray:
    """The category of each task (an array of CATEGORIES strings) by the rank rule."""
    u = np.asarray(uncertainty, dtype=np.float64)
    p = np.asarray(probability, dtype=np.float64)
    if u.shape != p.shape:
        raise ValueError("uncertainty and probability must have the same shape")
    n = len(u)
    pos = np.arange(n)
    out = np.empty(n, dtype=object)
    by_u = np.lexsort((pos, -u))
    n_amb = math.floor(cfg.ambiguous_share * n + 0.5)
    out[by_u[:n_amb]] = "Ambiguous"
    rest = by_u[n_amb:]
    rest = rest[np.lexsort((rest, -p[rest]))]
    n_easy = math.floor(cfg.easy_share * len(rest) + 0.5)
    out[rest[:n_easy]] = "Easy"
    out[rest[n_easy:]] = "Difficult"
    return out


def counts_table(uncertainty: np.ndarray, probability: np.ndarray, category: np.ndarray) -> list[dict]:
    """Per category: tasks, share, mean prompt uncertainty and mean prediction probability."""
    rows = []
    for name in CATEGORIES:
        m = category == name
        k = int(m.sum())
        rows.append({"category": name, "tasks": k, "share": k / max(len(category), 1),
                     "mean_prompt_uncertainty": float(uncertainty[m].mean()) if k else float("nan"),
                     "mean_prediction_probability": float(probability[m].mean()) if k else float("nan")})
    return rows


def write_csv(rows: Sequence[Mapping], path: str | Path) -> None:
    cols = list(rows[0]) if rows else []
    write_text(path, ",".join(cols) + "\n" + "".join(",".join(_cell(r[c]) for c in cols) + "\n" for r in rows))


def _cell(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _cube_root_axis(ax, values: np.ndarray) -> None:
    """Cube-root x axis with ticks evenly spaced on it (2 significant digits), so labels
    never crowd at the wide end."""
    ax.set_xscale("function", functions=(np.cbrt, lambda x: np.power(x, 3)))
    top = float(np.nanmax(values)) if len(values) else 1.0
    if top > 0:
        ticks = sorted({float(f"{t:.2g}") for t in np.linspace(0.0, np.cbrt(top), 6) ** 3})
        ax.set_xticks(ticks, [f"{t:.2g}" for t in ticks])


def _finish(fig, ax, uncertainty: np.ndarray, title: str, legend: str, path: str | Path) -> None:
    """The Task Map axes (cube-root uncertainty, probability), title, grid and legend; then save."""
    _cube_root_axis(ax, uncertainty)
    ax.set_xlabel("prompt uncertainty (cube-root scale)")
    ax.set_ylabel("prediction probability")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(title=legend, loc="best")
    _save(fig, path)


def _save(fig, path: str | Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=130, bbox_inches="tight")
    plt.close(fig)


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(7.5, 5.5))


def plot_taskmap(uncertainty: np.ndarray, probability: np.ndarray, category: np.ndarray, path: str | Path,
                 title: str = "Task Map") -> None:
    fig, ax = _figure()
    for name in CATEGORIES:
        m = category == name
        ax.scatter(uncertainty[m], probability[m], s=14, alpha=0.75, color=COLOURS[name],
                   label=f"{name} ({int(m.sum())})", edgecolors="none")
    _finish(fig, ax, uncertainty, f"{title}: {len(category)} tasks", "category", path)


def shift_summary(before_u: np.ndarray, after_u: np.ndarray, groups: np.ndarray) -> list[dict]:
    """Per group: tasks, mean uncertainty before and after, mean change, relative change."""
    rows = []
    for g in sorted(set(groups.tolist())):
        m = groups == g
        b, a = float(before_u[m].mean()), float(after_u[m].mean())
        rows.append({"group": g, "tasks": int(m.sum()), "mean_uncertainty_before": b, "mean_uncertainty_after": a,
                     "mean_change": a - b, "relative_change": (a - b) / b if b else float("nan")})
    return rows


def plot_shift(before: tuple[np.ndarray, np.ndarray], after: tuple[np.ndarray, np.ndarray], groups: np.ndarray,
               path: str | Path, title: str = "Task Map shift") -> None:
    """An arrow per task from its (uncertainty, probability) before to after, coloured by group."""
    import matplotlib

    fig, ax = _figure()
    names = sorted(set(groups.tolist()), key=lambda g: (g not in CATEGORIES, CATEGORIES.index(g)
                                                         if g in CATEGORIES else 0, g))
    palette = matplotlib.colormaps["tab10"]
    for k, g in enumerate(names):
        m = groups == g
        colour = COLOURS.get(g, palette(k % 10))
        ax.scatter(before[0][m], before[1][m], s=10, color=colour, alpha=0.35, edgecolors="none")
        ax.scatter(after[0][m], after[1][m], s=16, color=colour, alpha=0.9, edgecolors="none",
                   label=f"{g} ({int(m.sum())})")
        for x0, y0, x1, y1 in zip(before[0][m], before[1][m], after[0][m], after[1][m]):
            ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                        arrowprops={"arrowstyle": "->", "color": colour, "alpha": 0.5, "lw": 0.8})
    _finish(fig, ax, np.concatenate([before[0], after[0]]), f"{title}: faint = before, solid = after", "group", path)


def align_scores(before: Mapping[str, np.ndarray | list], after: Mapping[str, np.ndarray | list]) -> np.ndarray:
    """Indices into `before` and `after` of the tasks both files score, in `after`'s order."""
    pos = {t: i for i, t in enumerate(before["task_id"])}
    common = [(pos[t], j) for j, t in enumerate(after["task_id"]) if t in pos]
    if not common:
        raise RaysysError("the two score files share no task")
    return np.array(common, dtype=np.int64)
