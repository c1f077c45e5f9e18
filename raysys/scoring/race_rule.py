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
"""
from __future__ import annotations

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
