"""The paired summary's statistics against independent computations: the 95 % interval
against scipy's paired t test, the detectable effect by simulating paired t tests, and
the normal approximation at large n."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from raysys.stats import confidence_interval, detectable_effect, paired, pairs_needed


def test_the_interval_is_scipys_paired_t_interval():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.3, 1, 9), rng.normal(0, 1, 9)
    rows = [{"strategy": s, "seed": i, "x": float(v)} for s, vals in (("a", a), ("b", b)) for i, v in enumerate(vals)]
    p = paired(rows, "x", "a", "b")
    ci = sps.ttest_rel(a, b).confidence_interval(0.95)
    assert (p["ci95_low"], p["ci95_high"]) == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert p["mean"] == pytest.approx(float(np.mean(a - b)))
    assert confidence_interval(1.0, None, 1) == (None, None) and paired(rows[:1], "x", "a", "b")["detectable"] is None


def test_the_detectable_effect_is_detected_80_percent_of_the_time():
    """At the effect it reports, simulated paired t tests (n = 8, SD 1.7) reject at 5 % in
    80 % of draws; half that effect is detected far less often."""
    sd, n = 1.7, 8
    d = detectable_effect(sd, n)
    rng = np.random.default_rng(1)

    def rejected(effect: float) -> float:
        x = rng.normal(effect, sd, size=(40_000, n))
        t = x.mean(axis=1) / (x.std(axis=1, ddof=1) / math.sqrt(n))
        return float(np.mean(np.abs(t) > sps.t.ppf(0.975, n - 1)))

    assert rejected(d) == pytest.approx(0.80, abs=0.01)
    assert rejected(d / 2) < 0.4
    # large n: the normal approximation (z_0.975 + z_0.8) x SD / sqrt(n)
    assert detectable_effect(1.0, 2000) == pytest.approx((1.959964 + 0.841621) / math.sqrt(2000), rel=2e-3)
    assert detectable_effect(0.0, 5) == 0.0 and detectable_effect(1.0, 1) is None


def test_pairs_needed_is_the_first_n_that_detects_the_effect():
    n = pairs_needed(1.4, 1.0)
    assert detectable_effect(1.4, n) <= 1.0 < detectable_effect(1.4, n - 1)
