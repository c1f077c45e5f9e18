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

FLOPs (the one home of the rule): 2 x parameters per token a forward pass reads, 6 x
parameters per trained token (forward and backward), parameters = all of the model's
(raysys.models.count_parameters), embeddings included (a tied embedding is also the output projection, which does cost
2 x vocabulary x width per token; the input lookup is free). What this approximates:
attention's own FLOPs (2 x layers x context x width per token, 5-25 % here) are left out;
scoring and evaluation count the tokens a plain one-sequence-at-a-time loop reads (the
scoring engine computes fewer: shared prefixes once, no vocabulary projection for prompt
tokens), and generation counts each generated token as one forward token (with the key /
value cache that is what it costs); LoRA training costs about 4 x parameters per token
(frozen weights still pass gradients back, but skip their weight gradients, a third of
the work), so 6 x is an upper bound there. Each stage records its
FLOPs next to its tokens: `flops` in scores and evaluation rows, per epoch in training.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from raysys.io import read_json

FORWARD_FLOPS_PER_PARAMETER = 2  # per token read by a forward pass
TRAIN_FLOPS_PER_PARAMETER = 6  # per trained token: forward + backward


def forward_flops(tokens: int, parameters: int) -> float:
    return float(FORWARD_FLOPS_PER_PARAMETER * parameters * tokens)


def train_flops(tokens: int, parameters: int) -> float:
    return float(TRAIN_FLOPS_PER_PARAMETER * parameters * tokens)


def score_tokens(path: str | Path) -> int | None:
    return _scores_sum(path, "tokens")


def score_flops(path: str | Path) -> float | None:
    return _scores_sum(path, "flops")


def eval_tokens(path: str | Path) -> int | None:
    return _eval_sum(path, "tokens")


def eval_flops(path: str | Path) -> float | None:
    return _eval_sum(path, "flops")


def train_tokens(model: str | Path, workers: int) -> int | None:
    """The tokens every worker trained, over every epoch (a report older than the exact
    cross-rank count: rank 0's x `workers`)."""
    path = Path(model, "raysys_train.json")
    if not path.is_file():
        return None
    return int(sum(e["trained_tokens"] if "trained_tokens" in e else e.get("tokens", 0) * workers
                   for e in read_json(path)["epochs"]))


def trained_flops(model: str | Path) -> float | None:
    """The training report's FLOPs over every epoch and worker."""
    path = Path(model, "raysys_train.json")
    if not path.is_file():
        return None
    return total(e.get("flops") for e in read_json(path)["epochs"])


def _scores_sum(path: str | Path, column: str) -> int | float | None:
    """A scores file's column summed (None: no file, no column, or a row without a count)."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file() or column not in pq.read_schema(path).names:
        return None
    return total(pq.read_table(path, columns=[column]).column(column).to_pylist())


def _eval_sum(path: str | Path, key: str) -> int | float | None:
    """An evaluation file's per-task `key` summed (None as for _scores_sum)."""
    path = Path(path)
    if not path.is_file():
        return None
    return total(r.get(key) for r in read_json(path)["per_task"])


def total(counts: Iterable[int | float | None]) -> int | float | None:
    """The sum (an int for token counts, a float for FLOPs), or None when any count is unknown."""
    counts = list(counts)
    if None in counts:
        return None
    return float(sum(counts)) if any(isinstance(c, float) for c in counts) else int(sum(counts))


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """fn(*args, **kwargs) and its wall time in seconds (rounded to 0.1)."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, round(time.perf_counter() - t0, 1)
