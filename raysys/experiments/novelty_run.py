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
from raysys.experiments.novelty import (
    Roles,
    draw_roles,
    novelty_ratio,
    render,
    render_summary,
    same_answers,
    summarize,
)
from raysys.io import read_json, write_json, write_rows_csv
from raysys.models import check_model_path
from raysys.runs.workdir import claim_work_dir
from raysys.stages import RayStages, Stages, StageSettings


def _per_task(cfg: NoveltyConfig, roles: Roles, scores: dict[str, str]) -> list[dict]:
    """Per held-out task: its role and, per scoring (m0, m1, m1_same: M0's answers under
    M1), its U, p and Task Map category."""
    from raysys.selection.candidates import read_scores
    from raysys.selection.taskmap import categorize

    ids = roles.heldout()
    out = {t: {"task_id": t, "role": "related" if t in set(roles.related) else "unrelated"} for t in ids}
    for tag, path in scores.items():
        cols = read_scores(path)
        u = np.asarray(cols["prompt_uncertainty"], dtype=np.float64)
        p = np.asarray(cols["prediction_probability"], dtype=np.float64)
        cat = categorize(u, p, cfg.taskmap)
        for i, t in enumerate(cols["task_id"]):
            if t in out:
                out[t].update({f"uncertainty_{tag}": float(u[i]), f"probability_{tag}": float(p[i]),
                               f"category_{tag}": str(cat[i])})
    return [out[t] for t in ids]


def _shift(rows: Sequence[dict], after: str) -> list[dict]:
    """The per-role shift summary from M0's U to the `after` scoring's."""
    from raysys.selection.taskmap import shift_summary

    return shift_summary(np.array([r["uncertainty_m0"] for r in rows]), np.array([r[f"uncertainty_{after}"]
                                                                                  for r in rows]),
                         np.array([r["role"] for r in rows]))


def _moves(rows: Sequence[dict]) -> dict:
    """Task Map moves per role: {"related": {"Ambiguous -> Easy": n, ...}, ...}."""
    out: dict = {}
    for r in rows:
        key = f"{r['category_m0']} -> {r['category_m1']}"
        out.setdefault(r["role"], {}).setdefault(key, 0)
        out[r["role"]][key] += 1
    return {role: dict(sorted(m.items())) for role, m in out.items()}


def run_draw(cfg: NoveltyConfig, seed: int, pool: str, model: str, stages: Stages, work: Path,
             say: Callable[[str], None] = print, taken: Sequence[str] = (), others: Sequence[str] = ()) -> dict:
    """One draw (seed) in `work`: roles (none of `taken` trained on), M0 and its scores, M1
    and its scores (and M0's answers scored under M1, with same_answers), the ratios,
    Task Maps, novelty_tasks.csv and novelty.json; per stage its seconds."""
    import pandas as pd

    from raysys.io import atomic_path
    from raysys.pools.load import load_pool
    from raysys.selection.run import run_taskmap

    work.mkdir(parents=True, exist_ok=True)
    roles = draw_roles(load_pool(pool).tasks, cfg, seed, taken, others)
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
    scores = {"m0": s0, "m1": s1}
    if cfg.same_answers:
        scores["m1_same"], seconds["score_m1_same"] = timed(stages.score, m1, roles.heldout(),
                                                            work / "scores-m1-same-answers.parquet", answers_from=s0)
    write_json(work / "groups.json", {"related": roles.related, "unrelated": roles.unrelated})
    run_taskmap(s0, str(work / "taskmap-m0.png"), cfg.taskmap, title="Task Map of the held-out tasks under M0")
    tm = run_taskmap(s1, str(work / "taskmap-m1.png"), cfg.taskmap, before=s0, groups=str(work / "groups.json"),
                     title="Task Map of the held-out tasks under M1")
    rows = _per_task(cfg, roles, scores)
    with atomic_path(work / "novelty_tasks.csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    tokens = {f"score_{tag}": score_tokens(path) for tag, path in scores.items()}
    tokens["train_m1"] = train_tokens(m1, cfg.train.workers)
    if roles.base:
        tokens["train_m0"] = train_tokens(m0, cfg.base_train.workers)
    same = same_answers(_shift(rows, "m1_same")) if cfg.same_answers else {}
    result = {"group": cfg.group, "seed": seed, **novelty_ratio(tm["shift_summary"]), **same,
              "taskmap_moves": _moves(rows),
              "train_tasks": list(roles.train), "m0": m0, "m1": m1, "scores_m0": s0, "scores_m1": s1,
              "shift": tm["shift"], "tasks": str(work / "novelty_tasks.csv"), "seconds": seconds, "tokens": tokens}
    if not (work / "novelty.json").is_file():  # a resumed draw keeps the first run's stage times
        write_json(work / "novelty.json", result)
    result["seconds"] = read_json(work / "novelty.json").get("seconds", seconds)
    result["text"] = render(result)
    return result


CSV_COLUMNS = ("model", "seed", "group", "related_tasks", "unrelated_tasks", "related_before", "related_after",
               "related_change", "related_relative_change", "unrelated_before", "unrelated_after",
               "unrelated_change", "unrelated_relative_change", "ratio", "relative_ratio", "direction", "ceiling",
               "same_related_after", "same_unrelated_after", "same_related_change", "same_unrelated_change",
               "same_related_relative_change", "same_unrelated_relative_change", "same_ratio", "same_direction",
               "same_ceiling", "train_tasks", "seconds", "score_tokens", "train_tokens")


def csv_rows(model_name: str, draws: Sequence[dict]) -> list[dict]:
    """novelty.csv: one row per draw (seed)."""
    return [{**{c: d.get(c) for c in CSV_COLUMNS}, "model": model_name, "train_tasks": " ".join(d["train_tasks"]),
             "seconds": round(sum(d["seconds"].values()), 1),
             "score_tokens": total(v for k, v in d["tokens"].items() if k.startswith("score")),
             "train_tokens": total(v for k, v in d["tokens"].items() if k.startswith("train"))} for d in draws]


def _all_tasks(draws: Sequence[dict], model: str, out: Path) -> None:
    """Every draw's per-task table (each held-out task's role, U and Task Map category under
    M0 and M1) in one CSV with `model` and `seed` columns: what the draws' changes are means of."""
    import pandas as pd

    from raysys.io import atomic_path

    tables = [pd.read_csv(d["tasks"]).assign(model=model, seed=d["seed"]) for d in draws]
    table = pd.concat(tables, ignore_index=True)
    with atomic_path(out) as tmp:
        table[["model", "seed", *(c for c in table.columns if c not in ("model", "seed"))]].to_csv(tmp, index=False)


def plot_draws(draws: Sequence[dict], path: Path, title: str, pooled: dict, unrelated: str = "other groups") -> None:
    """Per role, each draw's mean change of U (points, one colour per seed) and the mean
    over draws (bars, +- sample std), beside the floor: the change if U fell to 0 (dashed;
    no change can go below it); above each panel the pooled ratio (mean related change /
    mean unrelated change: `summarize`'s, in `pooled`), each draw's ratio and the mean
    ceiling. Left: each model scoring its own answers; right (when scored): M0's answers
    under M1. `unrelated`: where the unrelated tasks come from."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from raysys.io import atomic_path
    from raysys.stats import mean_std

    views = [("", "each model's own answers")]
    if all(d.get("same_related_change") is not None for d in draws):
        views.append(("same_", "M0's answers, scored under M0 and M1"))
    fig, axes = plt.subplots(1, len(views), figsize=(5.5 * len(views), 4.6), sharey=True, squeeze=False)
    for ax, (key, name) in zip(axes[0], views):
        for x, role in enumerate(("related", "unrelated")):
            vals = [d[f"{key}{role}_change"] for d in draws]
            m, sd = mean_std(vals)
            ax.bar(x, m, yerr=sd or 0.0, capsize=6, color=("tab:red", "tab:blue")[x], alpha=0.35, width=0.6)
            for i, (d, v) in enumerate(zip(draws, vals)):
                ax.scatter(x + (i - (len(draws) - 1) / 2) * 0.08, v, color=f"C{i % 10}", zorder=3,
                           label=f"seed {d['seed']}" if x == 0 else None)
            floor = -float(np.mean([d[f"{role}_before"] for d in draws]))  # U before is M0's in both views
            ax.plot([x - 0.4, x + 0.4], [floor, floor], color="black", ls="--", lw=1,
                    label="floor: U fell to 0 (mean over draws)" if x == 0 else None)
        ceilings = [d[f"{key}ceiling"] for d in draws if d.get(f"{key}ceiling") is not None]
        top = f"; ceiling (mean) {np.mean(ceilings):.2f}" if ceilings else ""
        each = ", ".join("-" if d.get(f"{key}ratio") is None else f"{d[f'{key}ratio']:.2f}" for d in draws)
        ratio = pooled.get(f"{key}pooled_ratio")
        ax.set_title(f"{name}\npooled ratio {'undefined' if ratio is None else f'{ratio:.2f}'}; per draw {each}{top}",
                     fontsize=9)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks([0, 1], ["related\n(same group)", f"unrelated\n({unrelated})"])
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("mean change of prompt uncertainty, U(M1) - U(M0)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=len(labels))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def _with_unrelated(work: Path, pool: str, unrelated_pool: str) -> tuple[str, list[str]]:
    """work/pool-and-unrelated.parquet (the pool's tasks, then the unrelated pool's; written
    once) and the unrelated pool's task ids; a task id in both is a ConfigError."""
    from raysys.errors import ConfigError
    from raysys.pools.canonical import write_parquet_tasks
    from raysys.pools.load import load_pool

    out = work / "pool-and-unrelated.parquet"
    other = list(load_pool(unrelated_pool).tasks)
    if not out.is_file():
        mine = list(load_pool(pool).tasks)
        both = {t.task_id for t in mine} & {t.task_id for t in other}
        if both:
            raise ConfigError(f"unrelated_pool {unrelated_pool} shares {len(both)} task id(s) with the pool, e.g. "
                              f"{min(both)!r}: the unrelated tasks must be other tasks")
        write_parquet_tasks(mine + other, out)
    return str(out), [t.task_id for t in other]


def run_novelty(cfg: NoveltyConfig, stages: Stages | None = None, say: Callable[[str], None] = print) -> dict:
    """Every draw (one per seed, in work_dir/seed-N), then novelty.csv, novelty.png and
    the summary over draws in novelty.json."""
    from raysys.runs.workdir import model_name, work_model, work_pool

    work = claim_work_dir(cfg, "novelty-config")
    pool, model = str(work_pool(work, cfg.pool, cfg.synth, say)), work_model(work, cfg.model, cfg.tiny, say)
    others: list[str] = []
    if cfg.unrelated_pool:  # the unrelated tasks come from their own pool, added to the work pool
        pool, others = _with_unrelated(work, pool, cfg.unrelated_pool)
    if stages is None:
        check_model_path(model)  # before any stage loads it
        stages = RayStages(StageSettings.of(cfg), pool)
    draws: list[dict] = []
    for seed in cfg.seeds:  # with `disjoint`, each draw trains on none of the earlier draws' tasks
        taken = [t for d in draws for t in d["train_tasks"]] if cfg.disjoint else []
        draws.append(run_draw(cfg, seed, pool, model, stages, work / f"seed-{seed}", say, taken, others))
    name = model_name(cfg.model)
    write_rows_csv(work / "novelty.csv", csv_rows(name, draws), CSV_COLUMNS)
    _all_tasks(draws, name, work / "novelty_tasks.csv")
    summary = summarize(draws)
    plot_draws(draws, work / "novelty.png", f"Novelty: M1 = {name} trained on {cfg.group!r} tasks\n"
                                            f"{len(draws)} draw(s); bars: mean ± std", summary,
               Path(cfg.unrelated_pool).stem if cfg.unrelated_pool else "other groups")
    write_json(work / "novelty.json", {"group": cfg.group, "model": name, **summary,
                                       "draws": [{k: v for k, v in d.items() if k != "text"} for d in draws]})
    text = "\n\n".join(f"seed {d['seed']}:\n{d['text']}\nTask Map moves: {json.dumps(d['taskmap_moves'])}\n"
                       f"shift: {d['shift']}" for d in draws) + "\n\n" + render_summary(summary)
    return {**summary, "draws": draws, "text": text, "csv": str(work / "novelty.csv"),
            "tasks": str(work / "novelty_tasks.csv"),
            "figure": str(work / "novelty.png"), "json": str(work / "novelty.json")}
