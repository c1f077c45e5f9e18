"""Deterministic ordering helpers shared by the strategies (numpy only).

Ties are broken by a random permutation drawn from the caller's generator, so a seed
reproduces an order exactly and no task wins a tie merely by its position in the file;
missing values (NaN) always come last.
"""
from __future__ import annotations

import numpy as np


def order_by(key: np.ndarray, rng: np.random.Generator, descending: bool = True) -> np.ndarray:
    """Indices of `key` from best to worst (largest first when descending), NaN last."""
    key = np.asarray(key, dtype=np.float64)
    tie = rng.permutation(len(key))
    missing = np.isnan(key)
    value = np.where(missing, 0.0, -key if descending else key)
    return np.lexsort((tie, value, missing))


def interleave(groups: list[np.ndarray]) -> np.ndarray:
    """Merge ordered groups so that each contributes in proportion to its length along the
    whole order (the i-th of a group of n sits at (i + 0.5) / n); ties keep group order."""
    if not groups:
        return np.zeros(0, dtype=np.int64)
    pos = np.concatenate([(np.arange(len(g)) + 0.5) / max(len(g), 1) for g in groups])
    gid = np.concatenate([np.full(len(g), i) for i, g in enumerate(groups)])
    items = np.concatenate(groups).astype(np.int64)
    return items[np.lexsort((gid, pos))]
