"""Running the novelty check: M0, its scores of the held-out tasks, M1 = M0 trained on
the group's training tasks, M1's scores of the same tasks, then the ratio and the Task
Map shift (raysys.experiments.novelty has the roles and the arithmetic).

Training and scoring are raysys.stages's (Ray Train; scoring in this process with
`actors: 0`, else on the actor pool), injected (`Stages`), so tests can pass models whose
scores are known.

Each seed is one draw, in work_dir/seed-N/: roles.json, m0/ (when base_tasks > 0), m1/,
scores-m0.parquet, scores-m1.parquet, groups.json, taskmap-m0.png, taskmap-m1.png,
taskmap-m1.shift.png / .shift.csv (arrows per task, mean change per group),
novelty_tasks.csv (per task: role, U and p under M0 and M1, Task Map category under
each) and novelty.json (the ratio, everything it came from, seconds and tokens per
stage: raysys.costs). In
work_dir: pool.parquet, novelty.csv (one row per draw), novelty.png (the change per role
and draw) and novelty.json (mean +- std over the draws, and every draw). Every stage is
skipped on a rerun once its output exists, so an interrupted run resumes.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from raysys.config.experiments import NoveltyConfig
from raysys.costs import score_tokens, timed, total, train_tokens
from raysys.experiments.novelty import Roles, draw_roles, novelty_ratio, render, render_summary, summarize
from raysys.io import read_json, write_json, write_rows_csv
from raysys.models import check_model_path
from raysys.runs.workdir import claim_work_dir
from raysys.stages import RayStages, Stages, StageSettings


def _per_task(cfg: NoveltyConfig, roles: Roles, s0: str, s1: str) -> list[dict]:
    from raysys.selection.candidates import read_scores
    from raysys.selection.taskmap import categorize

    cols0, cols1 = read_scores(s0), read_scores(s1)
    ids = roles.heldout()
    out = {t: {"task_id": t, "role": "related" if t in set(roles.related) else "unrelated"} for t in ids}
    for tag, cols in (("m0", cols0), ("m1", cols1)):
        u = np.asarray(cols["prompt_uncertainty"], dtype=np.float64)
        p = np.asarray(cols["prediction_probability"], dtype=np.float64)
        cat = categorize(u, p, cfg.taskmap)
        for i, t in enumerate(cols["task_id"]):
            if t in out:
                out[t].update({f"uncertainty_{tag}": float(u[i]), f"probability_{tag}": float(p[i]),
                               f"category_{tag}": str(cat[i])})
    return [out[t] for t in ids]


def _moves(rows: Sequence[dict]) -> dict:
    """Task Map moves per role: {"related": {"Ambiguous -> Easy": n, ...}, ...}."""
    out: dict = {}
    for r in rows:
        key = f"{r['category_m0']} -> {r['category_m1']}"
        out.setdefault(r["role"], {}).setdefault(key, 0)
        out[r["role"]][key] += 1
    return {role: dict(sorted(m.items())) for role, m in out.items()}


def run_draw(cfg: NoveltyConfig, seed: int, pool: str, model: str, stages: Stages, work: Path,
             say: Callable[[str], None] = print) -> dict:
    """One draw (seed) in `work`: roles, M0 and its scores, M1 and its scores, the ratio,
    Task Maps, novelty_tasks.csv and novelty.json; per stage its seconds."""
    import pandas as pd

    from raysys.io import atomic_path
    from raysys.pools.load import load_pool
    from raysys.selection.run import run_taskmap

    work.mkdir(parents=True, exist_ok=True)
    roles = draw_roles(load_pool(pool).tasks, cfg, seed)
    write_json(work / "roles.json", {"group": cfg.group, "seed": seed, "train": roles.train,
                                     "related": roles.related, "unrelated": roles.unrelated, "base": roles.base})
    say(f"[seed {seed}] group {cfg.group!r}; M1 trains on {len(roles.train)} of its tasks; held out: "
        f"{len(roles.related)} related, {len(roles.unrelated)} unrelated; M0 = "
        + (f"the model trained on {len(roles.base)} other tasks" if roles.base else "the model as given"))
    seconds: dict[str, float] = {}
    m0 = model
    if roles.base:
        (m0, _), seconds["train_m0"] = timed(stages.train, model, roles.base, work / "m0", cfg=cfg.base_train)
    s0, seconds["score_m0"] = timed(stages.score, m0, roles.heldout(), work / "scores-m0.parquet")
    say(f"[seed {seed}] M0 scored; training M1")
    (m1, _), seconds["train_m1"] = timed(stages.train, m0, roles.train, work / "m1", cfg=cfg.train)
    s1, seconds["score_m1"] = timed(stages.score, m1, roles.heldout(), work / "scores-m1.parquet")
    write_json(work / "groups.json", {"related": roles.related, "unrelated": roles.unrelated})
    run_taskmap(s0, str(work / "taskmap-m0.png"), cfg.taskmap, title="Task Map of the held-out tasks under M0")
    tm = run_taskmap(s1, str(work / "taskmap-m1.png"), cfg.taskmap, before=s0, groups=str(work / "groups.json"),
                     title="Task Map of the held-out tasks under M1")
    rows = _per_task(cfg, roles, s0, s1)
    with atomic_path(work / "novelty_tasks.csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    tokens = {"score_m0": score_tokens(s0), "score_m1": score_tokens(s1),
              "train_m1": train_tokens(m1, cfg.train.workers)}
    if roles.base:
        tokens["train_m0"] = train_tokens(m0, cfg.base_train.workers)
    result = {"group": cfg.group, "seed": seed, **novelty_ratio(tm["shift_summary"]), "taskmap_moves": _moves(rows),
              "train_tasks": list(roles.train), "m0": m0, "m1": m1, "scores_m0": s0, "scores_m1": s1,
              "shift": tm["shift"], "tasks": str(work / "novelty_tasks.csv"), "seconds": seconds, "tokens": tokens}
    if not (work / "novelty.json").is_file():  # a resumed draw keeps the first run's stage times
        write_json(work / "novelty.json", result)
    result["seconds"] = read_json(work / "novelty.json").get("seconds", seconds)
    result["text"] = render(result)
    return result


CSV_COLUMNS = ("model", "seed", "group", "related_tasks", "unrelated_tasks", "related_before", "related_after",
               "related_change", "related_relative_change", "unrelated_before", "unrelated_after",
               "unrelated_change", "unrelated_relative_change", "ratio", "relative_ratio", "direction", "seconds",
               "score_tokens", "train_tokens")


def csv_rows(model_name: str, draws: Sequence[dict]) -> list[dict]:
    """novelty.csv: one row per draw (seed)."""
    return [{**{c: d.get(c) for c in CSV_COLUMNS}, "model": model_name,
             "seconds": round(sum(d["seconds"].values()), 1),
             "score_tokens": total(v for k, v in d["tokens"].items() if k.startswith("score")),
             "train_tokens": total(v for k, v in d["tokens"].items() if k.startswith("train"))} for d in draws]


def plot_draws(draws: Sequence[dict], path: Path, title: str) -> None:
    """Each draw's mean change of U per role (points, one colour per seed) and the mean
    over draws (bars, +- sample std)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from raysys.io import atomic_path
    from raysys.stats import mean_std

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for x, role in enumerate(("related", "unrelated")):
        vals = [d[f"{role}_change"] for d in draws]
        m, sd = mean_std(vals)
        ax.bar(x, m, yerr=sd or 0.0, capsize=6, color=("tab:red", "tab:blue")[x], alpha=0.35, width=0.6)
        for i, (d, v) in enumerate(zip(draws, vals)):
            ax.scatter(x + (i - (len(draws) - 1) / 2) * 0.08, v, color=f"C{i % 10}", zorder=3,
                       label=f"seed {d['seed']}" if x == 0 else None)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks([0, 1], ["related (same group)", "unrelated (other groups)"])
    ax.set_ylabel("mean change of prompt uncertainty, U(M1) - U(M0)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper center")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def run_novelty(cfg: NoveltyConfig, stages: Stages | None = None, say: Callable[[str], None] = print) -> dict:
    """Every draw (one per seed, in work_dir/seed-N), then novelty.csv, novelty.png and
    the summary over draws in novelty.json."""
    from raysys.runs.workdir import model_name, work_model, work_pool

    work = claim_work_dir(cfg, "novelty-config")
    pool, model = str(work_pool(work, cfg.pool, cfg.synth, say)), work_model(work, cfg.model, cfg.tiny, say)
    if stages is None:
        check_model_path(model)  # before any stage loads it
        stages = RayStages(StageSettings.of(cfg), pool)
    draws = [run_draw(cfg, seed, pool, model, stages, work / f"seed-{seed}", say) for seed in cfg.seeds]
    name = model_name(cfg.model)
    write_rows_csv(work / "novelty.csv", csv_rows(name, draws), CSV_COLUMNS)
    plot_draws(draws, work / "novelty.png", f"Novelty: M1 = {name} trained on {cfg.group!r} tasks\n"
                                            f"{len(draws)} draw(s); bars: mean ± std")
    summary = summarize(draws)
    write_json(work / "novelty.json", {"group": cfg.group, "model": name, **summary,
                                       "draws": [{k: v for k, v in d.items() if k != "text"} for d in draws]})
    text = "\n\n".join(f"seed {d['seed']}:\n{d['text']}\nTask Map moves: {json.dumps(d['taskmap_moves'])}\n"
                       f"shift: {d['shift']}" for d in draws) + "\n\n" + render_summary(summary)
    return {**summary, "draws": draws, "text": text, "csv": str(work / "novelty.csv"),
            "figure": str(work / "novelty.png"), "json": str(work / "novelty.json")}
