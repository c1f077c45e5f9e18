"""Stratification of a selection budget (pure; numpy only).

- Classification/generative ratio: round(cls_ratio x budget) tasks come from the
  classification tasks and the rest from the generative ones, the strategy applied within
  each group (the method took 24 classification + 44 generative of 68 a round: 0.353).
  When a group has too few tasks, the other group makes up the difference (noted).
- Answer-length strata: tasks fall into bins of `length_bin` words of mean reference
  answer length; each bin's quota is proportional to its size (largest remainders, never
  more than the bin holds), so the selection keeps the pool's length profile.
Both combine: length strata are formed inside each classification group.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from raysys.config import SelectConfig
from raysys.errors import RaysysError
from raysys.selection.candidates import UNKNOWN, Candidates


@dataclass(frozen=True)
class Stratum:
    name: str
    indices: np.ndarray  # into the candidates
    quota: int


def allocate(sizes: list[int], budget: int) -> list[int]:
    """Quotas proportional to `sizes` summing to min(budget, sum(sizes)), each within its
    size (largest-remainder rounding; ties go to the earlier group)."""
    total = sum(sizes)
    budget = min(budget, total)
    if total == 0:
        return [0] * len(sizes)
    raw = [budget * s / total for s in sizes]
    quotas = [math.floor(r) for r in raw]
    by_remainder = sorted(range(len(sizes)), key=lambda i: (-(raw[i] - quotas[i]), i))
    for i in by_remainder[: budget - sum(quotas)]:
        quotas[i] += 1
    return quotas


def cls_quotas(n_cls: int, n_gen: int, budget: int, ratio: float) -> tuple[int, int]:
    """(classification, generative) quotas for `ratio`, made up from the other group when
    one is too small."""
    budget = min(budget, n_cls + n_gen)
    q_cls = min(n_cls, math.floor(ratio * budget + 0.5))
    q_gen = min(n_gen, budget - q_cls)
    q_cls = min(n_cls, budget - q_gen)
    return q_cls, q_gen


def strata(c: Candidates, budget: int, cfg: SelectConfig) -> tuple[list[Stratum], list[str]]:
    notes: list[str] = []
    groups = [Stratum("all", np.arange(len(c)), min(budget, len(c)))]
    if cfg.cls_ratio is not None:
        if c.is_classification is None:
            raise RaysysError("--cls-ratio needs each task's classification flag (give --pool or a scores file "
                              "with is_classification)")
        unknown = int((c.is_classification == UNKNOWN).sum())
        if unknown:
            raise RaysysError(f"--cls-ratio: {unknown} candidate task(s) are neither marked classification nor "
                              f"generative (e.g. {c.task_ids[int(np.argmax(c.is_classification == UNKNOWN))]!r}); "
                              "set is_classification in the pool")
        cls_idx = np.flatnonzero(c.is_classification == 1)
        gen_idx = np.flatnonzero(c.is_classification == 0)
        q_cls, q_gen = cls_quotas(len(cls_idx), len(gen_idx), budget, cfg.cls_ratio)
        wanted = math.floor(cfg.cls_ratio * min(budget, len(c)) + 0.5)
        if q_cls != wanted:
            notes.append(f"cls_ratio {cfg.cls_ratio:g} asks for {wanted} classification task(s); "
                         f"{q_cls} taken ({len(cls_idx)} classification, {len(gen_idx)} generative candidates)")
        groups = [Stratum("classification", cls_idx, q_cls), Stratum("generative", gen_idx, q_gen)]
    if cfg.length_strata:
        if c.answer_words is None:
            raise RaysysError("--length-strata needs the pool's reference answers (give --pool)")
        split = []
        for g in groups:
            bins = np.floor(c.answer_words[g.indices] / cfg.length_bin).astype(np.int64)
            keys = sorted(set(bins.tolist()))
            members = [g.indices[bins == k] for k in keys]
            quotas = allocate([len(m) for m in members], g.quota)
            prefix = "" if g.name == "all" else f"{g.name}/"
            split += [Stratum(f"{prefix}words {k * cfg.length_bin}-{(k + 1) * cfg.length_bin - 1}", m, q)
                      for k, m, q in zip(keys, members, quotas)]
        groups = split
    return groups, notes
