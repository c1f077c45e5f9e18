"""Running the instruction-similarity experiment (raysys.experiments.similarity has the
pure parts): per seed, its targets; the base model's Rouge-L on them; then per strategy a
selection of `budget` pool tasks, the base model fine-tuned on it (LoRA or full, Ray
Train), and the fine-tuned model's Rouge-L on the targets.

The stages are raysys.stages's (RayStages: selection, Ray Train,
evaluation in this process or on actors) and can be injected (`Stages`) for tests. The
aligned encoder is trained once per run (raysys.selection.align) on the pool's tasks that
no seed uses as a target, starting from `select.encoder`.

Outputs in work_dir: pool.parquet, targets.parquet (when the targets have their own
pool), encoder-aligned/, and per seed seed-N/targets.parquet, seed-N/base/ and
seed-N/<strategy>/ (selected.json, model/, eval-0.json, record.json: the row and its
stage seconds); then similarity.csv (one row per seed x strategy, `base` included),
similarity.png and similarity.json (the summary: mean +- std over seeds, paired
differences). A finished (seed, strategy) is read back from its record.json on a rerun,
and every stage resumes from its own files.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from raysys.config.experiments import SimilarityConfig
from raysys.costs import eval_tokens, timed, train_tokens
from raysys.experiments.outputs import write_outputs
from raysys.experiments.similarity import BASE, draw_targets, max_similarity, render, select_strategy, summarize
from raysys.io import read_json, write_json
from raysys.models import check_model_path
from raysys.stages import RayStages, Stages, StageSettings

RECORD = "record.json"
CSV_COLUMNS = ("model", "seed", "strategy", "target_tasks", "n_train_tasks", "rougeL", "exact_match",
               "selected_similarity", "train_loss", "train_tokens", "eval_tokens", "select_seconds", "train_seconds",
               "eval_seconds")


def _ray_stages(cfg: SimilarityConfig, pool: str, targets_pool: str, targets_file: Path, encoder: str):
    return RayStages(StageSettings.of(cfg, targets=str(targets_file), select=replace(cfg.select, encoder=encoder)),
                     pool, targets_pool)


class _Similarity:
    """Each pool task's highest cosine similarity to the seed's targets, under the raw
    encoder (the same measure for every strategy's selection)."""

    def __init__(self, encoder: str, pool_tasks: dict) -> None:
        from raysys.selection.embed import embed, load_encoder

        self.enc = load_encoder(encoder)
        self.ids = list(pool_tasks)
        self.index = {t: i for i, t in enumerate(self.ids)}
        self.emb = embed(self.enc, [pool_tasks[t].instruction for t in self.ids])

    def of(self, selected: Sequence[str], target_texts: Sequence[str]) -> float:
        from raysys.selection.embed import embed

        sim = max_similarity(self.emb[[self.index[t] for t in selected]], embed(self.enc, list(target_texts)))
        return float(sim.mean())


def _run_one(cfg: SimilarityConfig, st: Stages, strategy: str, seed: int, model: str, candidates: list[str],
             targets: list[str], out: Path, measure: Callable[[], _Similarity], texts: list[str]) -> dict:
    """One (seed, strategy): select, fine-tune from base (not for `base`), evaluate the targets."""
    out.mkdir(parents=True, exist_ok=True)
    row: dict[str, Any] = {"seed": seed, "strategy": strategy, "target_tasks": len(targets), "n_train_tasks": 0}
    trained = model
    if strategy != BASE:
        picked, row["select_seconds"] = timed(st.select, select_strategy(strategy)[0], cfg.budget, seed,
                                               candidates, None, out)
        (trained, losses), row["train_seconds"] = timed(st.train, model, picked, out / "model")
        row.update(n_train_tasks=len(picked), train_loss=losses.get("train_loss"),
                   train_tokens=train_tokens(trained, cfg.train.workers),
                   selected_similarity=measure().of(picked, texts))
    metrics, row["eval_seconds"] = timed(st.evaluate, trained, {"test": targets}, out)
    row.update(rougeL=metrics["test"]["rougeL"], exact_match=metrics["test"]["exact_match"],
               eval_tokens=eval_tokens(out / "eval-0.json"))
    return row


def run_similarity(cfg: SimilarityConfig, stages: Callable[..., Stages] | None = None,
                   say: Callable[[str], None] = print) -> dict:
    """`stages(cfg, pool, targets_pool, targets_file, encoder)` builds a seed's stages
    (default: the loop's Ray stages)."""
    from raysys.pools.subset import pool_copy, pool_tasks, subset_pool
    from raysys.runs.workdir import claim_work_dir, model_name, work_model, work_pool

    make = stages or _ray_stages
    work = claim_work_dir(cfg, "similarity-config")
    pool, model = str(work_pool(work, cfg.pool, cfg.synth, say)), work_model(work, cfg.model, cfg.tiny, say)
    if stages is None:
        check_model_path(model)  # before any stage loads it
    targets_pool = pool_copy(cfg.targets, work / "targets.parquet") if cfg.targets else pool
    tasks, target_tasks = pool_tasks(pool), pool_tasks(targets_pool)
    targets = {seed: draw_targets(list(target_tasks), cfg.target_tasks, seed) for seed in cfg.seeds}
    used = set().union(*map(set, targets.values())) if not cfg.targets else set()
    name = model_name(cfg.model)
    say(f"similarity: {len(cfg.strategies)} strategies x {len(cfg.seeds)} seeds; {len(targets[cfg.seeds[0]])} "
        f"target tasks per seed; {cfg.budget} pool tasks per selection; work dir {work}")
    encoders = {False: cfg.select.encoder}
    if "similarity-aligned" in cfg.strategies:
        from raysys.selection.align import align_encoder

        report, seconds = timed(align_encoder, [t for tid, t in tasks.items() if tid not in used],
                                work / "encoder-aligned", replace(cfg.align, encoder=cfg.select.encoder), pool)
        encoders[True] = str(work / "encoder-aligned")
        say(f"aligned encoder: same-task retrieval {report['retrieval_before']:.3f} -> "
            f"{report['retrieval_after']:.3f} on {report['n_heldout']} held-out pool tasks "
            f"({seconds:.0f} s)")
    @functools.cache
    def measure() -> _Similarity:  # embeds the pool once, when a selection first needs it
        return _Similarity(cfg.select.encoder, tasks)

    rows: list[dict] = []
    for seed in cfg.seeds:
        sd = work / f"seed-{seed}"
        sd.mkdir(parents=True, exist_ok=True)
        tfile = Path(subset_pool(targets_pool, targets[seed], sd / "targets.parquet"))
        aimed = set(targets[seed])
        candidates = [t for t in tasks if t not in aimed]
        texts = [target_tasks[t].instruction for t in targets[seed]]
        for strategy in (BASE, *cfg.strategies):
            out = sd / strategy
            if not (out / RECORD).is_file():
                st = make(cfg, pool, targets_pool, tfile, encoders[select_strategy(strategy)[1]])
                row = _run_one(cfg, st, strategy, seed, model, candidates, targets[seed], out, measure, texts)
                write_json(out / RECORD, {"model": name, **row})
                say(f"[seed {seed}] {strategy}: target Rouge-L {row['rougeL']:.1f}"
                    + (f" after {row['n_train_tasks']} tasks" if strategy != BASE else ""))
            rows.append(read_json(out / RECORD))
    summary = summarize(rows)
    title = f"Instruction similarity ({name}): Rouge-L on the targets"
    return write_outputs(work, "similarity", name, rows, CSV_COLUMNS, summary, render(summary),
                         lambda path: plot(rows, summary, path, title))


def plot(rows: Sequence[dict], summary: Mapping[str, Any], path: Path, title: str) -> None:
    """Left: Rouge-L per strategy, one point per seed joined across strategies, the bar its
    mean with +- 1 SD over seeds. Right: each strategy's paired difference with random,
    one point per seed, its mean with the 95 % t interval, zero marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from raysys.io import atomic_path
    from raysys.stats import mean_std

    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    seeds = list(dict.fromkeys(r["seed"] for r in rows))
    vs = {k.split(" - ")[0]: d["rougeL"] for k, d in summary["paired"].items()
          if k.endswith(" - random") and d["rougeL"]["pairs"]}
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(1.6 * len(strategies) + 1.2 * len(vs) + 3, 4),
                                 gridspec_kw={"width_ratios": [len(strategies), max(len(vs), 1) + 0.5]})
    for x, s in enumerate(strategies):
        m, sd = mean_std(r["rougeL"] for r in rows if r["strategy"] == s)
        ax.bar(x, m, yerr=sd or 0.0, capsize=6, alpha=0.35, color=f"C{x}", width=0.6,
               label=f"mean ± 1 SD over {len(seeds)} seeds" if x == 0 else None)
    for i, seed in enumerate(seeds):
        by = {r["strategy"]: r["rougeL"] for r in rows if r["seed"] == seed}
        xs = [x for x, s in enumerate(strategies) if s in by]
        ax.plot(xs, [by[strategies[x]] for x in xs], marker="o", color="gray", alpha=0.7, lw=0.8,
                label="one seed" if i == 0 else None)
    ax.set_xticks(range(len(strategies)), strategies)
    ax.set_ylabel("Rouge-L on the target tasks (0-100)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    for x, (s, d) in enumerate(vs.items()):
        bx.scatter([x] * len(d["differences"]), d["differences"], color="gray", alpha=0.7, s=16,
                   label="one seed" if x == 0 else None)
        if d["ci95_low"] is not None:
            bx.errorbar(x, d["mean"], yerr=[[d["mean"] - d["ci95_low"]], [d["ci95_high"] - d["mean"]]], fmt="D",
                        color=f"C{strategies.index(s)}", capsize=6, label="mean, 95 % t interval" if x == 0 else None)
    bx.axhline(0.0, color="black", lw=0.8)
    bx.set_xticks(range(len(vs)), list(vs))
    bx.set_xlim(-0.6, len(vs) - 0.4)
    bx.set_ylabel("Rouge-L, strategy - random (same seed)")
    bx.set_title("Paired difference with random", fontsize=10)
    bx.legend(fontsize=8)
    bx.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
