"""Summaries over seeds, the one home for "mean +- std" in raysys's results: the mean and
the sample standard deviation (ddof 1; None for fewer than two values) of the finite
values, and the paired difference of two strategies run with the same seeds."""
from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def mean_std(values: Iterable[Any]) -> tuple[float | None, float | None]:
    """(mean, sample std) of the finite values; (None, None) when there is none, std None for one."""
    vals = [float(v) for v in values if finite(v)]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)


def paired(rows: Sequence[Mapping[str, Any]], key: str, a: str, b: str, by: str = "strategy",
           match: Sequence[str] = ("seed",)) -> dict[str, Any]:
    """The difference `a - b` of `key` between rows whose `by` is a and b and whose `match`
    columns agree (the same seed, round, ...): each pair's difference, their mean and
    sample std, and how many pairs favour a (difference > 0)."""
    def ident(r: Mapping[str, Any]) -> tuple:
        return tuple(r[m] for m in match)

    left = {ident(r): r[key] for r in rows if r[by] == a and finite(r.get(key))}
    right = {ident(r): r[key] for r in rows if r[by] == b and finite(r.get(key))}
    diffs = {k: float(left[k]) - float(right[k]) for k in sorted(left.keys() & right.keys())}
    m, s = mean_std(diffs.values())
    return {"a": a, "b": b, "key": key, "pairs": len(diffs), "differences": list(diffs.values()),
            "mean": m, "std": s, "a_better": sum(1 for d in diffs.values() if d > 0)}
