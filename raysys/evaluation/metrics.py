"""Answer metrics and their aggregation (pure; the rouge-score package for Rouge-L).

- Rouge-L: rouge-score's RougeScorer(["rougeL"], use_stemmer=True) F-measure against each
  reference, the best over references, x 100 (as Super-NaturalInstructions reports it).
- Exact match: 100 when the prediction equals a reference after stripping surrounding
  whitespace (case and inner spacing count: the synthetic rewriting tasks' metric).
Aggregates pool instances: overall = the mean over all evaluated instances; classification
/ generative = the same over the instances of those tasks (tasks of unknown type count in
overall only); per task = the mean over its instances.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Iterable, Mapping, Sequence


@lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, references: Sequence[str]) -> float:
    if not references:
        raise ValueError("rouge_l needs at least one reference")
    return 100.0 * max(_scorer().score(ref, prediction)["rougeL"].fmeasure for ref in references)


def exact_match(prediction: str, references: Sequence[str]) -> float:
    return 100.0 if any(prediction.strip() == ref.strip() for ref in references) else 0.0


def aggregate(task_rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Overall / classification / generative means from per-task rows holding
    `rougeL_sum`, `exact_match_sum`, `n_instances` and `is_classification`."""
    groups: dict[str, list[float]] = {"overall": [0, 0, 0], "classification": [0, 0, 0], "generative": [0, 0, 0]}
    for r in task_rows:
        keys = ["overall"]
        if r.get("is_classification") is True:
            keys.append("classification")
        elif r.get("is_classification") is False:
            keys.append("generative")
        for k in keys:
            groups[k][0] += r["rougeL_sum"]
            groups[k][1] += r["exact_match_sum"]
            groups[k][2] += r["n_instances"]

    def mean(i: int, k: str) -> float | None:
        return groups[k][i] / groups[k][2] if groups[k][2] else None

    return {"rougeL": {k: mean(0, k) for k in groups}, "exact_match": {k: mean(1, k) for k in groups},
            "n_instances": {k: int(groups[k][2]) for k in groups}}


def split_metrics(rows: Sequence[dict]) -> dict:
    """metrics.json's aggregate over a subset of its per-task rows (per-task means x instances)."""
    return aggregate({**r, "rougeL_sum": r["rougeL"] * r["n_instances"],
                      "exact_match_sum": r["exact_match"] * r["n_instances"]} for r in rows)


def flat_metrics(m: dict) -> dict[str, float | None]:
    """rougeL / exact_match overall, and per classification and generative tasks."""
    out: dict[str, float | None] = {}
    for metric in ("rougeL", "exact_match"):
        for group in ("overall", "classification", "generative"):
            out[metric if group == "overall" else f"{metric}_{group}"] = m[metric][group]
    return out
