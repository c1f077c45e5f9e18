"""What `raysys select`, `raysys taskmap` and `raysys align` do, file to file.

Reads the inputs (scores, pools, exclusions, targets), attaches instruction embeddings
when the strategy needs them, and writes the outputs atomically. The ranking itself is
in raysys.selection.select / strategies and raysys.selection.taskmap.
"""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from raysys.config import AlignConfig, SelectConfig, TaskMapConfig, TrainConfig
from raysys.errors import InvalidFile, RaysysError
from raysys.io import decode, read_bytes, read_json
from raysys.jsontypes import type_name
from raysys.schema import task_text
from raysys.selection.candidates import build_candidates, read_scores, with_costs
from raysys.selection.training_file import check_export, export_selection
from raysys.selection.select import Selection, read_task_ids, select_tasks, write_selection
from raysys.selection.strategies import NEEDS_COSTS, NEEDS_EMBEDDINGS, NEEDS_SCORES, check_strategies


def _load_tasks(path: str, skip_invalid: bool = False):
    from raysys.pools.load import load_pool

    pool = load_pool(path, skip_invalid=skip_invalid)
    if pool.skipped:
        print(f"raysys: {path}: skipped {len(pool.skipped)} invalid record(s)", file=sys.stderr)
    return list(pool.tasks)


def target_instructions(path: str) -> list[str]:
    """Instructions of the target tasks: a .txt file (one per line) or any pool raysys reads."""
    p = Path(path)
    if p.suffix == ".txt":
        lines = [line.strip() for line in decode(read_bytes(p), p).splitlines()]
        found = [line for line in lines if line]
    else:
        found = [task_text(t) for t in _load_tasks(path)]
    if not found:
        raise InvalidFile(p, "no target instructions")
    return found


def training_costs(tasks, model: str, cfg: TrainConfig, trust_remote_code: bool = False) -> dict[str, dict[str, float]]:
    """raysys.training.data.task_costs of `tasks` for training `model` with `cfg` (its
    tokenizer and prompt template): what budgets of examples or tokens and the length
    strategy read."""
    from raysys.models import load_tokenizer, model_kind, prompt_template
    from raysys.training.data import task_costs

    template = prompt_template(model, cfg.prompt.template, cfg.prompt.chat_body, trust_remote_code,
                               any(t.conversation for t in tasks))
    return task_costs(tasks, cfg, load_tokenizer(model, trust_remote_code), model_kind(model, trust_remote_code),
                      template)


def needs_costs(cfg: SelectConfig) -> bool:
    """Whether a selection reads training costs (a budget of examples or tokens, or the
    length strategy): then it needs the pool and the model to be trained."""
    return cfg.budget_unit != "tasks" or cfg.strategy in NEEDS_COSTS


def run_select(cfg: SelectConfig, out: str, scores: str | None = None, pool: str | None = None,
               exclude: Sequence[str] = (), targets: str | None = None, model: str | None = None,
               train: TrainConfig | None = None, trust_remote_code: bool = False, export: str | None = None,
               export_format: str = "messages") -> Selection:
    """`model` and `train`: the model the selection will train and how (default: `raysys
    train`'s settings); its tokenizer and the training examples count the costs, when
    needs_costs. `export`: also write the selection's training examples there
    (raysys.selection.training_file, in `export_format`)."""
    check_strategies(cfg.strategy)
    if export:
        check_export(export, export_format)
        if pool is None:
            raise RaysysError("--export writes the selected tasks' examples: give --pool")
    if cfg.strategy in NEEDS_SCORES and scores is None:
        raise RaysysError(f"the {cfg.strategy} strategy ranks by scores: give --scores")
    if needs_costs(cfg) and (pool is None or not model):
        why = f"a budget of {cfg.budget_unit}" if cfg.budget_unit != "tasks" else f"the {cfg.strategy} strategy"
        raise RaysysError(f"{why} counts the tasks' training tokens: give --pool and --model (the model to train)")
    needs_embeddings = cfg.strategy in NEEDS_EMBEDDINGS
    if (needs_embeddings or cfg.length_strata) and pool is None:
        raise RaysysError(f"the {cfg.strategy} strategy{' with --length-strata' if cfg.length_strata else ''} "
                          "reads the pool's tasks: give --pool")
    if cfg.strategy == "similarity" and targets is None:
        raise RaysysError("the similarity strategy needs --targets (a pool or a .txt of instructions)")
    if cfg.strategy == "rds" and targets is None:
        raise RaysysError("the rds strategy needs --targets (a pool, or the scores of one from the same model)")
    tasks = _load_tasks(pool) if pool else None
    cands, notes = build_candidates(scores, tasks, cfg.taskmap)
    if needs_costs(cfg):
        cands = with_costs(cands, training_costs(tasks, model, train or TrainConfig(), trust_remote_code))
    excluded: set[str] = set()
    for f in exclude:
        excluded.update(read_task_ids(f))
    unknown = len(excluded - set(cands.task_ids))
    if unknown:
        notes.append(f"{unknown} excluded task id(s) are not candidates anyway")
    if needs_embeddings:
        from raysys.selection.embed import embed, load_encoder

        encoder = load_encoder(cfg.encoder)
        cands = replace(cands, embeddings=embed(encoder, cands.instructions))
        if targets is not None:
            cands = replace(cands, target_embeddings=embed(encoder, target_instructions(targets)))
    if cfg.strategy == "rds":
        from raysys.selection.rds import score_embeddings, target_embeddings

        cands = replace(cands, embeddings=score_embeddings(scores, cands.task_ids),
                        target_embeddings=target_embeddings(targets, scores))
    sel = select_tasks(cands, cfg, excluded, notes)
    write_selection(sel, out)
    if export:
        export_selection(tasks, sel.task_ids, train or TrainConfig(), export, export_format, {
            "selection": str(Path(out).name), "strategy": sel.strategy, "budget": sel.budget,
            "budget_unit": sel.budget_unit, "seed": sel.seed, "scores": scores, "pool": pool, "model": model})
    return sel


def render_selection(sel: Selection, show: int = 10) -> str:
    lines = [f"selected {len(sel.task_ids)} of {sel.n_candidates} candidate task(s) with {sel.strategy} "
             f"(seed {sel.seed}; {sel.n_excluded} excluded)"]
    if len(sel.strata) > 1:
        lines.append("strata: " + ", ".join(f"{s['name']} {s['quota']}/{s['candidates']}" for s in sel.strata))
    lines += [f"note: {n}" for n in sel.notes]
    for row in sel.tasks[:show]:
        facts = ", ".join(f"{k}={v:.4g}" for k, v in row.items()
                          if k in ("prompt_uncertainty", "prediction_probability") and v is not None)
        lines.append(f"  {row['rank'] + 1:>4}. {row['task_id']}" + (f"  ({facts})" if facts else ""))
    if len(sel.tasks) > show:
        lines.append(f"  ... {len(sel.tasks) - show} more")
    return "\n".join(lines)


def run_taskmap(scores: str, out: str, cfg: TaskMapConfig = TaskMapConfig(), table: str | None = None,
                before: str | None = None, groups: str | None = None, title: str | None = None) -> dict:
    """Write the Task Map PNG (and the counts CSV); with `before`, also the shift view
    (OUT stem + .shift.png / .shift.csv). Returns what was written and the tables."""
    from raysys.selection.taskmap import (
        align_scores,
        categorize,
        counts_table,
        plot_shift,
        plot_taskmap,
        shift_summary,
        write_csv,
    )

    cols = read_scores(scores)
    u = np.asarray(cols["prompt_uncertainty"], dtype=np.float64)
    p = np.asarray(cols["prediction_probability"], dtype=np.float64)
    category = categorize(u, p, cfg)
    plot_taskmap(u, p, category, out, title=title or f"Task Map of {Path(scores).name}")
    counts = counts_table(u, p, category)
    result: dict = {"map": out, "counts": counts, "categories": dict(zip(cols["task_id"], category.tolist()))}
    if table:
        write_csv(counts, table)
        result["table"] = table
    if before:
        prev = read_scores(before)
        pairs = align_scores(prev, cols)
        u0 = np.asarray(prev["prompt_uncertainty"], dtype=np.float64)[pairs[:, 0]]
        p0 = np.asarray(prev["prediction_probability"], dtype=np.float64)[pairs[:, 0]]
        u1, p1 = u[pairs[:, 1]], p[pairs[:, 1]]
        ids = [cols["task_id"][j] for j in pairs[:, 1]]
        if groups:
            labels = _group_labels(groups, ids)
        else:  # the category each task had before training
            labels = categorize(np.asarray(prev["prompt_uncertainty"]), np.asarray(prev["prediction_probability"]),
                                cfg)[pairs[:, 0]].astype(str)
        stem = str(Path(out).with_suffix(""))
        plot_shift((u0, p0), (u1, p1), labels, stem + ".shift.png")
        summary = shift_summary(u0, u1, labels)
        write_csv(summary, stem + ".shift.csv")
        result.update({"shift": stem + ".shift.png", "shift_table": stem + ".shift.csv", "shift_summary": summary,
                       "n_common": len(pairs)})
    return result


def _group_labels(path: str, ids: list[str]) -> np.ndarray:
    """Group of each task id from a JSON {group: [task ids]}; tasks in no group are 'other'."""
    p = Path(path)
    data = read_json(p)
    if not isinstance(data, dict):
        raise InvalidFile(p, f'expected {{"group name": ["task id", ...], ...}}, got {type_name(data)}')
    group_of: dict[str, str] = {}
    for g, members in data.items():
        if not isinstance(members, list):
            raise InvalidFile(p, f"group {g!r}: expected an array of task ids, got {type_name(members)}")
        for i, t in enumerate(members):
            if not isinstance(t, str) or not t:
                got = "an empty string" if t == "" else type_name(t)
                raise InvalidFile(p, f"group {g!r}[{i}]: a task id must be a non-empty string, got {got}")
            if t in group_of and group_of[t] != g:
                raise InvalidFile(p, f"task {t!r} is in two groups ({group_of[t]!r} and {g!r})")
            group_of[t] = g
    return np.array([group_of.get(t, "other") for t in ids], dtype=object).astype(str)


def run_align(pool: str, out: str, cfg: AlignConfig = AlignConfig()) -> dict:
    from raysys.selection.align import align_encoder

    return align_encoder(_load_tasks(pool), out, cfg, pool=pool)
