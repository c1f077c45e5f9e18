"""The RDS+ embeddings the rds strategy ranks by (raysys.models.pooling): the candidates'
from their scores file, the targets' from their own scores file (scored by the same
model) or embedded now, as the scores' model and scoring config embed a task (kept beside
the targets, `<targets>.rds-<key>.npy`, so that the next selection with the same model,
config and targets reads them back). Rows come back unit-norm, so a dot product is the
cosine similarity.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from raysys.errors import InvalidFile, RaysysError
from raysys.io import atomic_path

COLUMN = "rds_embedding"


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def score_embeddings(path: str | Path, task_ids: Sequence[str] | None = None) -> np.ndarray:
    """The unit-norm RDS+ embeddings of a scores file, in `task_ids` order (default: the file's)."""
    p = Path(path)
    if COLUMN not in pq.read_schema(p).names:
        raise InvalidFile(p, f"no {COLUMN} column: scored before raysys stored RDS+ embeddings; score again")
    table = pq.read_table(p, columns=["task_id", COLUMN])
    by_id = dict(zip(table.column("task_id").to_pylist(), table.column(COLUMN).to_pylist()))
    ids = list(by_id) if task_ids is None else list(task_ids)
    missing = [t for t in ids if by_id.get(t) is None]
    if missing:
        raise InvalidFile(p, f"task {missing[0]!r} has no {COLUMN} ({len(missing)} task(s)); score it again")
    return _unit(np.asarray([by_id[t] for t in ids], dtype=np.float64))


def target_embeddings(targets: str | Path, scores: str | Path) -> np.ndarray:
    """The targets' unit-norm RDS+ embeddings: a scores file of theirs by the same model,
    or a pool embedded now with the scores' model and config."""
    from raysys.scoring.scores_file import scoring_setup

    model, cfg = scoring_setup(scores)
    t = Path(targets)
    if t.suffix == ".parquet" and COLUMN in pq.read_schema(t).names:
        other, _ = scoring_setup(t)
        if other != model:
            raise RaysysError(f"{t} was scored with {other}, the candidates with {model}: RDS+ embeddings of "
                              "different models do not compare")
        return score_embeddings(t)
    if t.suffix == ".txt":
        raise InvalidFile(t, "the rds strategy embeds target tasks' prompts: give a pool (or its scores), not a .txt")
    from raysys.pools.load import load_pool
    from raysys.scoring.scorer import TaskScorer

    tasks = list(load_pool(str(t)).tasks)
    if not tasks:
        raise InvalidFile(t, "no target tasks")
    cache = _cache_path(t, model, cfg)
    if cache.is_file():  # embedded before by the same model and config: every seed of a comparison reuses it
        return np.load(cache)
    rows = _unit(np.asarray(TaskScorer(model, cfg).embed(tasks), dtype=np.float64))
    try:
        with atomic_path(cache) as tmp, open(tmp, "wb") as f:
            np.save(f, rows)
    except (OSError, InvalidFile):  # a read-only folder: embedded again next time
        pass
    return rows


def _cache_path(targets: Path, model: str, cfg) -> Path:
    """Beside the targets: keyed by the model, the scoring config and the targets file."""
    from raysys.config.mapping import to_dict
    from raysys.runs.keys import model_ref, pool_stats, run_key

    key = run_key({"model": model_ref(model), "cfg": to_dict(cfg), "targets": pool_stats(targets)})
    return targets.with_name(f"{targets.name}.rds-{key}.npy")
