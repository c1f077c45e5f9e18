"""Evaluation on held-out tasks: Rouge-L and exact match (metrics), batched greedy
generation over the scoring actor pool (evaluate)."""
