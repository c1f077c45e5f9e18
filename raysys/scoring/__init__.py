"""Scoring: likelihoods, task metrics, the per-actor scorer and the Ray Data pipeline."""
