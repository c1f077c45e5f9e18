"""Task metrics against hand-computed values."""
from __future__ import annotations

import math

import numpy as np

from raysys.scoring import signals


def test_prompt_uncertainty_and_prediction_probability():
    p0 = np.array([0.5, 0.2])
    pj = np.array([[0.4, 0.7, 0.5], [0.2, 0.1, 0.5]])
    # |.1|+|.2|+0 + 0+|.1|+|.3| = 0.7 over 6
    assert math.isclose(signals.prompt_uncertainty(p0, pj), 0.7 / 6)
    assert math.isclose(signals.prediction_probability(p0), 0.35)
    assert signals.prompt_uncertainty(p0, np.zeros((2, 0))) == 0.0


def test_perplexity_entropy_ifd():
    lp = np.array([math.log(0.5), math.log(0.25)])
    assert math.isclose(signals.perplexity(lp), (2 + 4) / 2)
    labels = np.log(np.array([[0.2, 0.2], [0.9, 0.1]]))  # first row uniform after normalising
    h1 = math.log(2)
    h2 = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    assert math.isclose(signals.label_entropy(labels), (h1 + h2) / 2)
    cond, alone = np.array([math.log(0.5)]), np.array([math.log(0.25)])
    assert math.isclose(signals.ifd(cond, alone), 2.0 / 4.0)  # PPL(y|x)=2, PPL(y)=4
