"""What a stage cost in tokens, read back from its outputs (the one home for it):
- scoring: the `tokens` column of a scores file (raysys.scoring: every greedy answer's
  prompt and generated tokens, every scored sequence's prompt and target);
- evaluation: the per-task `tokens` of an evaluation file (raysys.evaluation: prompts and
  generated tokens);
- training: the training report's tokens per epoch, counted on rank 0, times the workers
  (the ranks read equally many rows, so this is the total to within the length spread of
  one micro batch), validation passes not included.
Each returns None when its file is missing or was written before raysys counted tokens,
so a total is never silently short. `timed` measures a stage's wall time.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from raysys.io import read_json


def score_tokens(path: str | Path) -> int | None:
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file() or "tokens" not in pq.read_schema(path).names:
        return None
    counts = pq.read_table(path, columns=["tokens"]).column("tokens").to_pylist()
    return None if None in counts else int(sum(counts))


def eval_tokens(path: str | Path) -> int | None:
    path = Path(path)
    if not path.is_file():
        return None
    counts = [r.get("tokens") for r in read_json(path)["per_task"]]
    return None if None in counts else int(sum(counts))


def train_tokens(model: str | Path, workers: int) -> int | None:
    path = Path(model, "raysys_train.json")
    if not path.is_file():
        return None
    return int(sum(e.get("tokens", 0) for e in read_json(path)["epochs"]) * workers)


def total(counts: Iterable[int | None]) -> int | None:
    """The sum, or None when any count is unknown."""
    counts = list(counts)
    return None if None in counts else int(sum(counts))


def timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """fn(*args) and its wall time in seconds (rounded to 0.1)."""
    t0 = time.perf_counter()
    out = fn(*args)
    return out, round(time.perf_counter() - t0, 1)
