"""Running the strategy comparison (raysys.experiments.comparison has the pure parts):
the held-out tasks split once into development and test; the base model evaluated once
on the test tasks; then per seed a fresh draw of candidates, scored once by the base
model when an arm ranks by scores, and per arm a selection to the budget (training
tokens by default, so that every arm trains on as much), the base model fine-tuned on it
and evaluated on the test tasks.

The stages are raysys.stages's (RayStages) and can be injected for tests. Outputs in
work_dir: pool.parquet, heldout.parquet (when the held-out tasks have their own pool),
dev.parquet (the development tasks: targets of rds and similarity; test.parquet, the test
tasks, when an arm aims at them: rds-test, similarity-test), base/ (eval-0.json,
record.json), per seed seed-N/scores.parquet and seed-N/<arm>/ (selected.json, model/,
eval-0.json, record.json: the row; the model/ folder is removed once evaluated unless
`keep_models`); then strategies.csv (one row per seed x arm, base included: its one
evaluation repeated per seed), strategies.json (the summary), strategies.png and
strategies.md (the summary as a Markdown table). A finished row is read back from its
record.json on a rerun; every stage resumes from its own files.

Costs per row: `select_flops` / `select_seconds` is what choosing cost: the scoring of
the seed's candidates (FLOPs from the scores' token counts, raysys.costs; its seconds kept
in seed-N/scores-seconds.json, so a resumed seed charges them too) for arms that rank by
scores, plus the selection's own time; random, length and similarity score
nothing (their FLOPs are 0; similarity's sentence-encoder pass is in its seconds).
`train_flops` / `train_tokens` come from the training report.
"""
from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raysys.config.experiments import StrategiesConfig
from raysys.costs import eval_tokens, score_flops, timed, train_tokens, trained_flops
from raysys.experiments.comparison import (
    BASE,
    draw,
    markdown,
    render,
    selection_seed,
    split_heldout,
    summarize,
)
from raysys.experiments.outputs import write_outputs
from raysys.io import atomic_path, read_json, write_json, write_text
from raysys.models import check_model_path
from raysys.selection.arms import aims_at_test, arm
from raysys.selection.strategies import NEEDS_SCORES
from raysys.stages import RayStages, Stages, StageSettings

RECORD = "record.json"
CSV_COLUMNS = ("model", "seed", "strategy", "n_tasks", "n_examples", "n_tokens", "train_tokens", "nll",
               "label_accuracy", "rougeL", "exact_match", "train_loss", "select_flops", "train_flops", "select_seconds",
               "train_seconds", "eval_seconds", "eval_tokens")


def _ray_stages(cfg: StrategiesConfig, pool: str, heldout_pool: str, dev_file: Path) -> Stages:
    return RayStages(StageSettings.of(cfg, targets=str(dev_file)), pool, heldout_pool)


def _evaluated(st: Stages, model: str, test: list[str], out: Path) -> tuple[dict, float]:
    metrics, seconds = timed(st.evaluate, model, {"test": test}, out)
    m = metrics["test"]
    return {k: m.get(k) for k in ("nll", "label_accuracy", "rougeL", "exact_match")}, seconds


def run_strategies(cfg: StrategiesConfig, stages: Callable[..., Stages] | None = None,
                   say: Callable[[str], None] = print) -> dict[str, Any]:
    """`stages(cfg, pool, heldout_pool, dev_file)` builds the stages (default: RayStages)."""
    from raysys.pools.subset import pool_copy, pool_tasks, subset_pool
    from raysys.runs.workdir import claim_work_dir, model_name, work_model, work_pool

    work = claim_work_dir(cfg, "strategies-config")
    pool, model = str(work_pool(work, cfg.pool, cfg.synth, say)), work_model(work, cfg.model, cfg.tiny, say)
    if stages is None:
        check_model_path(model)  # before any stage loads it
    heldout_pool = pool_copy(cfg.heldout, work / "heldout.parquet") if cfg.heldout else pool
    tasks = pool_tasks(pool)
    held = draw(list(pool_tasks(heldout_pool)), cfg.heldout_tasks, 0, "heldout_tasks")
    dev, test = split_heldout(held, cfg.dev_fraction)
    dev_file = Path(subset_pool(heldout_pool, dev, work / "dev.parquet"))
    trainable = [t for t in tasks if t not in set(held)]
    make = stages or _ray_stages
    st = make(cfg, pool, heldout_pool, dev_file)
    if any(aims_at_test(a) for a in cfg.strategies):  # their selections aim at the test tasks' prompts
        st_test = make(cfg, pool, heldout_pool, Path(subset_pool(heldout_pool, test, work / "test.parquet")))
    name = model_name(cfg.model)
    say(f"strategies: {len(cfg.strategies)} arms x {len(cfg.seeds)} seeds; {cfg.candidates or len(trainable)} "
        f"candidates per seed, a budget of {cfg.budget:,} {cfg.budget_unit} per selection; {len(test)} test and "
        f"{len(dev)} development held-out tasks; work dir {work}")

    base_dir = work / BASE
    if not (base_dir / RECORD).is_file():
        metrics, seconds = _evaluated(st, model, test, base_dir)
        write_json(base_dir / RECORD, {**metrics, "eval_seconds": seconds, "eval_tokens": eval_tokens(
            base_dir / "eval-0.json")})
        say(f"base model: test NLL/token {metrics['nll']:.4f}")
    base = read_json(base_dir / RECORD)
    rows: list[dict] = []
    for seed in cfg.seeds:
        sd = work / f"seed-{seed}"
        candidates = draw(trainable, cfg.candidates, seed, "candidates")
        scores, score_seconds = None, 0.0
        if any(arm(a)[0] in NEEDS_SCORES for a in cfg.strategies):
            scores, score_seconds = _scored(st, model, candidates, sd)
        rows.append({"model": name, "seed": seed, "strategy": BASE, "n_tasks": 0, "n_examples": 0, "n_tokens": 0,
                     **base})
        for a in cfg.strategies:
            out = sd / a
            if not (out / RECORD).is_file():
                row = _run_arm(cfg, st_test if aims_at_test(a) else st, a, seed, model, candidates, scores,
                               score_seconds, test, out)
                write_json(out / RECORD, {"model": name, **row})
                say(f"[seed {seed}] {a}: {row['n_tasks']} tasks, {row['n_tokens']:,.0f} tokens; "
                    f"test NLL/token {row['nll']:.4f}")
            rows.append(read_json(out / RECORD))
    return _write(work, name, rows, cfg.contrasts)


def _scored(st: Stages, model: str, candidates: list[str], sd: Path) -> tuple[str, float]:
    """The seed's scores and what scoring them took: timed when they are computed now and
    kept beside them (scores-seconds.json), so that arms run after a resume are charged
    the scoring's own seconds, not the moment it took to find the file."""
    out, kept = sd / "scores.parquet", sd / "scores-seconds.json"
    fresh = not out.is_file()
    scores, seconds = timed(st.score, model, candidates, out)
    if fresh:
        write_json(kept, {"seconds": seconds})
    elif kept.is_file():
        seconds = float(read_json(kept)["seconds"])
    return scores, seconds


def _run_arm(cfg: StrategiesConfig, st: Stages, name: str, seed: int, model: str, candidates: list[str],
             scores: str | None, score_seconds: float, test: list[str], out: Path) -> dict[str, Any]:
    """One (seed, arm): select to the budget, fine-tune the base model, evaluate the test tasks."""
    out.mkdir(parents=True, exist_ok=True)
    strategy = arm(name)[0]
    ranks_by_scores = strategy in NEEDS_SCORES
    picked, select_seconds = timed(st.select, strategy, cfg.budget, selection_seed(seed, name), candidates,
                                   scores if ranks_by_scores else None, out, model=model)
    sel = read_json(out / "selected.json")
    (trained, losses), train_seconds = timed(st.train, model, picked, out / "model")
    metrics, eval_seconds = _evaluated(st, trained, test, out)
    row = {"seed": seed, "strategy": name, "n_tasks": len(picked), "n_examples": sel.get("selected_train_examples"),
            "n_tokens": sel.get("selected_train_tokens"), "train_tokens": train_tokens(trained, cfg.train.workers),
            **metrics, "train_loss": losses.get("train_loss"),
            "select_flops": score_flops(scores) if ranks_by_scores else 0.0, "train_flops": trained_flops(trained),
            "select_seconds": select_seconds + (score_seconds if ranks_by_scores else 0.0),
            "train_seconds": train_seconds, "eval_seconds": eval_seconds, "eval_tokens": eval_tokens(
                out / "eval-0.json")}
    if not cfg.keep_models:  # the row holds what the comparison needs; 72 arms of a 7B model would not fit
        shutil.rmtree(trained, ignore_errors=True)
    return row


def _write(work: Path, name: str, rows: list[dict], contrasts: tuple[str, ...] = ()) -> dict[str, Any]:
    summary = summarize(rows, contrasts)
    title = f"Strategies against random ({name}), equal training budgets"
    out = write_outputs(work, "strategies", name, rows, CSV_COLUMNS, summary, render(summary),
                        lambda path: plot(summary, path, title))
    write_text(work / "strategies.md", markdown(summary) + "\n")
    return {**out, "markdown": str(work / "strategies.md")}


def plot(summary: dict[str, Any], path: Path, title: str) -> None:
    """Per strategy, one row across both panels. Left: its NLL difference with random, mean
    and 95 % interval over seeds, each seed a dot (random-2, the noise floor, in gray).
    Right: what it cost, median seconds over seeds (log): choosing (scoring included) and,
    in gray, training on the selection."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary["paired"])
    colors = [c for i in range(12) if (c := f"C{i % 10}") != "C7"]  # C7 is gray: the floor's
    arms = summary["strategies"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, max(4.5, 0.45 * len(names) + 2.5)), sharey=True,
                                      gridspec_kw={"width_ratios": [3, 2]})
    for y, n in enumerate(names):
        d = summary["paired"][n]["nll"]
        color = "gray" if n.startswith("random-2") else colors[y]
        if d["mean"] is not None:
            if d["ci95_low"] is not None:
                left.plot([d["ci95_low"], d["ci95_high"]], [y, y], color=color, lw=2)
            left.plot([d["mean"]], [y], "o", color=color)
            left.scatter(d["differences"], [y] * len(d["differences"]), s=10, color=color, alpha=0.4)
        a = arms[n.split(" - ")[0]]
        choose, train = a.get("select_seconds_median"), a.get("train_seconds_median")
        if train:
            right.barh([y + 0.18], [train], height=0.32, color="lightgray", left=0.1)
            right.text(train * 1.15, y + 0.18, f"{train:.0f} s", va="center", fontsize=7, color="gray")
        if choose is not None:
            right.barh([y - 0.18], [max(choose, 0.1)], height=0.32, color=color, left=0.1)
            right.text(max(choose, 0.1) * 1.15, y - 0.18, f"{choose:.0f} s" if choose >= 1 else "< 1 s",
                       va="center", fontsize=7)
    left.axvline(0.0, color="black", lw=0.8)
    left.set_yticks(range(len(names)), [n.split(" - ")[0] for n in names])
    left.invert_yaxis()
    left.set_xlabel("test NLL/token minus random's (negative = better)\ndots: seeds; bar: 95 % CI")
    right.set_xscale("log")
    most = max([a.get(k) or 0.0 for a in arms.values() for k in ("select_seconds_median", "train_seconds_median")]
               + [1.0])
    right.set_xlim(0.1, most * 8)  # room for the labels
    right.set_xlabel("median seconds over seeds (log)\ncolor: choosing, scoring included; gray: training")
    for ax in (left, right):
        ax.grid(alpha=0.3, axis="x")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
