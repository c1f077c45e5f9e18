"""Summaries over seeds, the one home for "mean +- std" in raysys's results: the mean and
the sample standard deviation (ddof 1; None for fewer than two values) of the finite
values, and the paired difference of two strategies run with the same seeds: its mean,
its 95 % confidence interval (Student's t over the n paired differences) and the minimum
detectable effect of a paired two-sided t test at 5 % with 80 % power, from the observed
SD of the differences (the noncentral t, solved exactly: `detectable_effect`)."""
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
    n = len(diffs)
    lo, hi = confidence_interval(m, s, n)
    return {"a": a, "b": b, "key": key, "pairs": n, "differences": list(diffs.values()),
            "mean": m, "std": s, "ci95_low": lo, "ci95_high": hi,
            "detectable": detectable_effect(s, n) if s is not None else None,
            "a_better": sum(1 for d in diffs.values() if d > 0)}


def confidence_interval(mean: float | None, std: float | None, n: int, level: float = 0.95
                        ) -> tuple[float | None, float | None]:
    """Student's t interval of a mean of n values with sample std `std`; (None, None)
    below two values."""
    if mean is None or std is None or n < 2:
        return None, None
    from scipy.stats import t

    half = float(t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return mean - half, mean + half


def detectable_effect(std: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """The smallest true mean difference a two-sided paired t test at level `alpha` over n
    pairs detects with probability `power`, when the differences' SD is `std`: the effect
    d whose noncentral t (df n - 1, noncentrality d sqrt(n) / std) exceeds the critical
    value with probability `power`. None below two pairs; 0 when std is 0."""
    if n < 2:
        return None
    if std == 0:
        return 0.0
    from scipy.optimize import brentq
    from scipy.stats import nct, t

    df, crit = n - 1, float(t.ppf(1 - alpha / 2, n - 1))

    def short(d: float) -> float:
        nc = d * math.sqrt(n) / std
        below = float(nct.cdf(-crit, df, nc))  # the wrong-sign rejections: NaN where they underflow
        return float(nct.sf(crit, df, nc)) + (below if math.isfinite(below) else 0.0) - power

    hi = std
    while short(hi) < 0:
        hi *= 2
    return float(brentq(short, 0.0, hi, xtol=1e-12 * std))


def pairs_needed(std: float, effect: float, alpha: float = 0.05, power: float = 0.8, limit: int = 10_000) -> int:
    """The fewest pairs (seeds) whose detectable_effect is at most `effect`."""
    for n in range(2, limit + 1):
        if detectable_effect(std, n, alpha, power) <= effect:
            return n
    return limit
