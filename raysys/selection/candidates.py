"""The candidate tasks of a selection: ids plus the per-task facts strategies rank by.

Built from a scores file (raysys score's Parquet: one row per task) and/or a pool. The
scores give the model's signals; the pool gives instructions (for embeddings), the
classification flag and the reference answer length (for strata). Everything is held as
numpy arrays aligned with `task_ids`; `subset` keeps that alignment.

This module reads files and builds arrays; it does not rank or select.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raysys.config import TaskMapConfig
from raysys.errors import InvalidFile, RaysysError, first_line
from raysys.jsontypes import type_name
from raysys.schema import Task, task_text

SCORE_SIGNALS = ("prompt_uncertainty", "prediction_probability", "perplexity", "classification_entropy", "ifd")
UNKNOWN = -1  # is_classification code for "not known"


@dataclass(frozen=True)
class Candidates:
    task_ids: tuple[str, ...]
    signals: Mapping[str, np.ndarray] = field(default_factory=dict)  # column -> float array (NaN = missing)
    is_classification: np.ndarray | None = None  # int8: 1, 0, or UNKNOWN
    answer_words: np.ndarray | None = None  # mean words of the reference answers (NaN = unknown)
    instructions: tuple[str, ...] | None = None
    category: np.ndarray | None = None  # Task Map category of each task over the whole scores file
    embeddings: np.ndarray | None = None  # unit-norm instruction embeddings, one row per task
    target_embeddings: np.ndarray | None = None  # unit-norm embeddings of the target tasks (similarity)

    def __len__(self) -> int:
        return len(self.task_ids)

    def signal(self, name: str) -> np.ndarray:
        if name not in self.signals:
            raise RaysysError(f"the scores have no column {name!r} (needed by this strategy); "
                              f"they have {sorted(self.signals) or 'none (no --scores given)'}")
        return self.signals[name]

    def subset(self, idx: Sequence[int] | np.ndarray) -> "Candidates":
        idx = np.asarray(idx, dtype=np.int64)

        def take(a):
            return None if a is None else a[idx]

        return replace(
            self,
            task_ids=tuple(self.task_ids[i] for i in idx),
            signals={k: v[idx] for k, v in self.signals.items()},
            is_classification=take(self.is_classification),
            answer_words=take(self.answer_words),
            instructions=None if self.instructions is None else tuple(self.instructions[i] for i in idx),
            category=take(self.category),
            embeddings=take(self.embeddings),
        )


def with_costs(c: Candidates, costs: Mapping[str, Mapping[str, float]]) -> Candidates:
    """The candidates with their training costs as signals (raysys.training.data.task_costs:
    train_examples, train_tokens, response_tokens), kept in the selection's rows and read
    by budgets of examples or tokens and the length strategy. A candidate without costs
    is an error (the costs come from the pool the candidates are drawn from)."""
    missing = [t for t in c.task_ids if t not in costs]
    if missing:
        raise RaysysError(f"{len(missing)} candidate(s) have no training cost (e.g. {missing[0]!r}): "
                          "they are not in the pool")
    columns = next(iter(costs.values())).keys() if costs else ()
    return replace(c, signals={**c.signals, **{k: np.array([costs[t][k] for t in c.task_ids], dtype=np.float64)
                                                for k in columns}})


def read_scores(path: str | Path) -> dict[str, np.ndarray | list]:
    """The columns of a scores file; a clear error when it is not one (unreadable, a
    column missing or of the wrong type, a task id that is not a string or repeats, a
    main signal that is not a finite number)."""
    p = Path(path)
    if not p.is_file():
        raise InvalidFile(p, "no such scores file")
    try:
        table = pq.read_table(p)
    except Exception as e:  # pyarrow raises several types for a non-Parquet file
        raise InvalidFile(p, f"not a Parquet scores file ({first_line(e)})") from None
    missing = [c for c in ("task_id", "prompt_uncertainty", "prediction_probability") if c not in table.column_names]
    if missing:
        raise InvalidFile(p, f"not a raysys scores file: missing column(s) {missing}")
    _check_column_types(table, p)
    ids = table.column("task_id").to_pylist()
    seen: set[str] = set()
    for i, t in enumerate(ids):
        if not isinstance(t, str) or not t:
            raise InvalidFile(p, f"row {i}: task_id must be a non-empty string, got "
                                 f"{'an empty string' if t == '' else type_name(t)}")
        if t in seen:
            raise InvalidFile(p, f"row {i}: duplicate task_id {t!r}")
        seen.add(t)
    out: dict[str, np.ndarray | list] = {"task_id": ids}
    for c in table.column_names:
        if c in SCORE_SIGNALS or c == "is_classification":
            out[c] = table.column(c).to_numpy(zero_copy_only=False)
    for c in ("prompt_uncertainty", "prediction_probability"):
        bad = np.flatnonzero(~np.isfinite(np.asarray(out[c], dtype=np.float64)))
        if len(bad):
            raise InvalidFile(p, f"row {bad[0]} (task {ids[bad[0]]!r}): {c} is not a finite number")
    return out


def _check_column_types(table, p: Path) -> None:
    """Column types a scores file must have: a boolean is not a number here, nor a number a flag."""
    for c in table.column_names:
        t = table.schema.field(c).type
        if c == "task_id":
            ok = pa.types.is_string(t) or pa.types.is_large_string(t)
            want = "strings"
        elif c in SCORE_SIGNALS:
            ok = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t)
            want = "numbers"
        elif c == "is_classification":
            ok = pa.types.is_boolean(t) or pa.types.is_null(t)
            want = "booleans (or nulls)"
        else:
            continue
        if not ok:
            raise InvalidFile(p, f"column {c!r} must hold {want}, got Arrow type {t}")


def _answer_words(task: Task) -> float:
    return float(np.mean([len(inst.outputs[0].split()) if inst.outputs else 0 for inst in task.instances]))


def build_candidates(scores: str | Path | None, tasks: Sequence[Task] | None,
                     taskmap: TaskMapConfig = TaskMapConfig()) -> tuple[Candidates, list[str]]:
    """Candidates from a scores file, a pool's tasks, or both (then the scored tasks, in
    the scores' order, with the pool's facts), plus notes on tasks left out."""
    from raysys.selection.taskmap import categorize

    notes: list[str] = []
    if scores is None and tasks is None:
        raise RaysysError("give a scores file, a pool, or both")
    by_id = {t.task_id: t for t in tasks} if tasks is not None else {}
    if scores is None:
        ids = [t.task_id for t in tasks]
        signals: dict[str, np.ndarray] = {}
        cls_scores = None
        category = None
    else:
        cols = read_scores(scores)
        ids = list(cols["task_id"])
        signals = {k: np.asarray(v, dtype=np.float64) for k, v in cols.items() if k in SCORE_SIGNALS}
        cls_scores = cols.get("is_classification")
        category = categorize(signals["prompt_uncertainty"], signals["prediction_probability"], taskmap)
        if tasks is not None:
            unknown = [t for t in ids if t not in by_id]
            if unknown:
                raise RaysysError(f"{scores}: {len(unknown)} scored task(s) are not in the pool "
                                  f"(e.g. {unknown[0]!r}); score and select from the same pool")
            unscored = len(by_id) - len(ids)
            if unscored:
                notes.append(f"{unscored} pool task(s) have no score and are not candidates")
    if tasks is not None:
        pool_tasks = [by_id[t] for t in ids]
        is_cls = np.array([UNKNOWN if t.is_classification is None else int(t.is_classification)
                           for t in pool_tasks], dtype=np.int8)
        words = np.array([_answer_words(t) for t in pool_tasks], dtype=np.float64)
        instructions = tuple(task_text(t) for t in pool_tasks)
    else:
        is_cls = None
        if cls_scores is not None:
            is_cls = np.array([UNKNOWN if v is None else int(bool(v)) for v in cls_scores], dtype=np.int8)
        words, instructions = None, None
    return Candidates(tuple(ids), signals, is_cls, words, instructions, category), notes
