"""Task-level metrics from likelihoods (numpy only). Shapes documented per function.

p is always exp(mean token log-probability of the target, EOS included).
"""
from __future__ import annotations

import numpy as np


def prompt_uncertainty(p0: np.ndarray, pj: np.ndarray) -> float:
    """Mean over instances i and perturbations j of |p_ij - p_i0|.
    p0: (n,) original-prompt probabilities; pj: (n, k) perturbed-prompt probabilities."""
    if pj.size == 0:
        return 0.0
    return float(np.mean(np.abs(pj - p0[:, None])))


def prediction_probability(p0: np.ndarray) -> float:
    """Mean p_i0 over instances. p0: (n,)."""
    return float(np.mean(p0))


def perplexity(mean_logprob: np.ndarray) -> float:
    """Mean over instances of the per-instance perplexity exp(-mean token log-prob). (n,)."""
    return float(np.mean(np.exp(-mean_logprob)))


def label_entropy(label_mean_logprob: np.ndarray) -> float:
    """Mean over instances of the entropy (nats) of the normalised label likelihoods.
    label_mean_logprob: (n, c), one column per candidate label; p = exp(entry), normalised
    over the c labels of each instance."""
    if label_mean_logprob.size == 0:
        return float("nan")
    p = np.exp(label_mean_logprob - label_mean_logprob.max(axis=1, keepdims=True))
    q = p / p.sum(axis=1, keepdims=True)
    return float(np.mean(-(q * np.log(np.clip(q, 1e-300, None))).sum(axis=1)))


def ifd(mean_logprob_conditioned: np.ndarray, mean_logprob_alone: np.ndarray) -> float:
    """Instruction-following difficulty, mean over instances of PPL(y | prompt) / PPL(y alone)
    = exp(mean_logprob_alone - mean_logprob_conditioned). Both (n,)."""
    return float(np.mean(np.exp(mean_logprob_alone - mean_logprob_conditioned)))
