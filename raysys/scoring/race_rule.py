"""Perturbation racing, the pure half: which tasks still need perturbations to find the B
most prompt-uncertain ones. numpy and scipy only; no model, no Ray.

A task's prompt uncertainty over K perturbations is U = mean_j d_j with
d_j = mean_i |p_ij - p_i0| (n instances, j = 1..K). Perturbation j depends only on
(seed, task_id, j) (raysys.perturb), so a task given its first m perturbations has seen
exactly the first m terms of the full run's sum, and at m = K its U is the full run's.

**Schedule.** Perturbations are added in rounds: m = `first` (at least 2, to estimate a
spread), then m + max(2, m // 2), ... up to K (K = 10, first = 3: 3, 5, 7, 10).

**Bound.** The K perturbations are K independent draws (their RNG seeds differ only in j),
so the first m are a simple random sample, without replacement, of the K values d_j the
full run averages. The interval for the full run's U is the t interval of a finite
population's mean:
    U_m +- t_{m-1, 1 - delta/2} * s_m / sqrt(m) * sqrt((K - m) / (K - 1))
(s_m the sample std of d_1..d_m). It is exact at m = K (width 0) and narrows as m nears K.
Its guarantee is normal-theory, not distribution-free: when the d_j are roughly normal, it
covers the full run's U with probability about 1 - delta. (A distribution-free bound on
values in [0, 1], Hoeffding-Serfling, is wider than the whole range of U at K = 10.) A
task whose first m deviations are all equal gets width 0 and is decided on them.

**Rule.** With `accepted` tasks already in and C the undecided ones, b = B - |accepted| more
are needed from C. A task of C is *in* when fewer than b other tasks of C have an upper
bound >= its lower bound (it is among the top b whatever the unseen perturbations do),
*out* when at least b other tasks of C have a lower bound > its upper bound. Repeat until
nothing changes; when b = 0 the rest are out, when |C| = b they are all in. Tasks decided
stop receiving perturbations; the others get the next round's. After the last round (every
undecided task at K, so exact) the rest are ranked by (-U, task_id), the full run's order.

**Error guarantee.** A task is misplaced only if its interval, or the interval of a task it
was compared with, missed the full-run value in the round it was decided: at most
(tasks x rounds) x delta in expectation by the union bound, and far fewer in practice
because only tasks near the boundary can be misplaced. The benchmark measures the top-B
overlap with the full run (benchmarks/bench_peer.py).

**The moderated rule** (`racing_rule: moderated`). At m = 3 a task's own s_m has 2 degrees
of freedom (t_{2, 0.975} = 4.3): most of the t rule's width is the uncertainty of s_m
itself. Every task's deviations say something about every other's spread, so the
moderated rule shrinks each task's variance toward the pool's, as limma's moderated t does
(Smyth 2004), on the relative scale (a task's spread grows with its U): with
r_t = s_t^2 / U_t^2 over the tasks with a spread, a scaled-F fit by moments gives a prior
CV^2 c^2 and prior degrees of freedom d0, and a task's variance becomes
    s~^2 = (d0 * c^2 * U_m^2 + (m - 1) * s_m^2) / (d0 + m - 1)
with d0 + m - 1 degrees of freedom (the normal quantile when the r_t agree beyond their
sampling noise: d0 infinite). The interval is the t rule's with s~ and those degrees of
freedom; exact at m = K as before. Its guarantee is empirical-Bayes: about 1 - delta
coverage when the tasks' relative spreads follow the fitted prior; the replay benchmark
(benchmarks/bench_race_replay.py) measures what it decides on real pools. Fewer than 3
tasks with a spread: the t rule.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def schedule(k: int, first: int) -> list[int]:
    """The perturbation counts of the rounds: `first` (clipped to [min(2, k), k]) up to k."""
    m = min(max(first, 2), k) if k else 0
    out = [m]
    while m < k:
        m = min(k, m + max(2, m // 2))
        out.append(m)
    return out


def deviations(p0: np.ndarray, pj: np.ndarray) -> np.ndarray:
    """d_j = mean over instances of |p_ij - p_i0|. p0: (n,); pj: (n, m) -> (m,)."""
    return np.abs(pj - p0[:, None]).mean(axis=0)


def interval(d: np.ndarray, k: int, delta: float) -> tuple[float, float]:
    """The (lower, upper) bound on the full run's U (the mean of all k deviations) from the
    first m = len(d) of them (see the module docstring). d: (m,), 1 <= m <= k."""
    from scipy.stats import t as student_t

    m = len(d)
    est = float(d.mean())
    if m >= k:
        return est, est
    if m < 2:
        return -np.inf, np.inf
    half = student_t.ppf(1 - delta / 2, m - 1) * d.std(ddof=1) / np.sqrt(m) * np.sqrt((k - m) / (k - 1))
    return float(est - half), float(est + half)


def intervals(ds: Sequence[np.ndarray], k: int, delta: float, rule: str = "t") -> tuple[np.ndarray, np.ndarray]:
    """Every task's (lower, upper) bounds on its full-run U from its deviations so far
    (`ds`, one array per task) by `rule`: "t" (each task alone, `interval`) or "moderated"
    (each task's variance shrunk toward the pool's; module docstring)."""
    prior = relative_prior(ds) if rule == "moderated" else None
    bounds = [interval(d, k, delta) if prior is None else moderated_interval(d, k, delta, *prior) for d in ds]
    return np.array([b[0] for b in bounds], dtype=float), np.array([b[1] for b in bounds], dtype=float)


def relative_prior(ds: Sequence[np.ndarray]) -> tuple[float, float] | None:
    """(c^2, d0): the prior relative variance and its degrees of freedom, fitted by moments
    to r_t = s_t^2 / U_t^2 of the tasks with m >= 2 and a spread (limma's fitFDist without
    covariates: log r_t's mean and variance against those of a scaled chi^2 / df); d0 is
    inf when log r_t vary no more than sampling alone explains. None below 3 such tasks."""
    from scipy.special import digamma, polygamma

    rel, df = [], []
    for d in ds:
        if len(d) >= 2 and d.mean() > 0 and d.var(ddof=1) > 0:
            rel.append(d.var(ddof=1) / d.mean() ** 2)
            df.append(len(d) - 1)
    if len(rel) < 3:
        return None
    half = np.asarray(df, dtype=float) / 2
    e = np.log(rel) - digamma(half) + np.log(half)
    emean = float(e.mean())
    evar = float(e.var(ddof=1) - polygamma(1, half).mean())
    if evar <= 0:
        return float(np.exp(emean)), math.inf
    d0 = 2 * trigamma_inverse(evar)
    return float(np.exp(emean + digamma(d0 / 2) - math.log(d0 / 2))), d0


def trigamma_inverse(x: float) -> float:
    """y with trigamma(y) = x (x > 0), by limma's Newton iteration."""
    from scipy.special import polygamma

    if x > 1e7:
        return 1 / math.sqrt(x)
    if x < 1e-6:
        return 1 / x
    y = 0.5 + 1 / x
    for _ in range(50):
        tri = float(polygamma(1, y))
        step = tri * (1 - tri / x) / float(polygamma(2, y))
        y += step
        if -step / y < 1e-8:
            break
    return y


def moderated_interval(d: np.ndarray, k: int, delta: float, c2: float, d0: float) -> tuple[float, float]:
    """`interval` with the moderated variance (module docstring): prior relative variance
    c2 with d0 degrees of freedom (inf: the prior alone, normal quantile)."""
    from scipy.stats import norm
    from scipy.stats import t as student_t

    m = len(d)
    est = float(d.mean())
    if m >= k:
        return est, est
    prior = c2 * est ** 2
    if math.isinf(d0):
        var, q = prior, float(norm.ppf(1 - delta / 2))
    else:
        own = float(d.var(ddof=1)) * (m - 1) if m >= 2 else 0.0
        var, q = (d0 * prior + own) / (d0 + m - 1), float(student_t.ppf(1 - delta / 2, d0 + m - 1))
    half = q * math.sqrt(var / m) * math.sqrt((k - m) / (k - 1))
    return est - half, est + half


IN, OUT, OPEN = "in", "out", "open"


def decide(lower: Sequence[float], upper: Sequence[float], budget: int,
           status: Sequence[str] | None = None) -> list[str]:
    """New statuses from the bounds (the rule of the module docstring). `status`: the
    previous round's (decided tasks keep theirs); default all OPEN. Each pass decides every
    task the rule decides at once (sorted bounds: O(C log C)); passes repeat until none does."""
    lo, hi = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
    st = np.array(list(status) if status is not None else [OPEN] * len(lo), dtype=object)
    while True:
        cand = np.flatnonzero(st == OPEN)
        b = budget - int(np.sum(st == IN))
        if len(cand) == 0:
            break
        if b <= 0 or len(cand) <= b:
            st[cand] = OUT if b <= 0 else IN
            break
        c_lo, c_hi = lo[cand], hi[cand]
        # others of C whose upper bound reaches this task's lower bound (itself excluded: lo <= hi)
        above = len(cand) - np.searchsorted(np.sort(c_hi), c_lo, side="left") - 1
        # tasks of C whose lower bound is above this task's upper bound (never itself)
        surely = len(cand) - np.searchsorted(np.sort(c_lo), c_hi, side="right")
        into = cand[above < b]
        if len(into):
            st[into[np.argsort(-lo[into], kind="stable")[:b]]] = IN
            continue
        out = cand[surely >= b]
        if not len(out):
            break
        st[out] = OUT
    return [str(s) for s in st]


def finish(status: Sequence[str], u: Sequence[float], ids: Sequence[str], budget: int) -> list[str]:
    """After the last round: the open tasks (all exact) ranked by (-U, task_id) fill the
    remaining places; the rest are out."""
    st = list(status)
    b = budget - sum(s == IN for s in st)
    rest = sorted((i for i, s in enumerate(st) if s == OPEN), key=lambda i: (-u[i], ids[i]))
    for r, i in enumerate(rest):
        st[i] = IN if r < b else OUT
    return st


def top_b(u: Sequence[float], ids: Sequence[str], budget: int) -> set[str]:
    """The full run's top B: the B highest U, ties by task_id (the selection's order)."""
    order = sorted(range(len(u)), key=lambda i: (-u[i], ids[i]))
    return {ids[i] for i in order[:budget]}
