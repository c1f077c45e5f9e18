"""Answer metrics and their aggregation (pure; the rouge-score package for Rouge-L).

- Rouge-L: rouge-score's RougeScorer(["rougeL"], use_stemmer=True) F-measure against each
  reference, the best over references, x 100 (as Super-NaturalInstructions reports it).
- Exact match: 100 when the prediction equals a reference after stripping surrounding
  whitespace (case and inner spacing count: the synthetic rewriting tasks' metric).
Aggregates pool instances: overall = the mean over all instances a metric was measured
on; classification / generative = the same over the instances of those tasks (tasks of
unknown type count in overall only); per task = the mean over its instances. NLL is
measured on every evaluated instance, Rouge-L and exact match on the answered ones, label
accuracy on those of classification tasks with a small label set
(raysys.evaluation.evaluator).
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


# each metric and the count of instances its per-task mean is over
WEIGHTS = {"rougeL": "n_answered", "exact_match": "n_answered", "nll": "n_instances", "label_accuracy": "n_labeled"}
GROUPS = ("overall", "classification", "generative")


def _count(row: Mapping[str, Any], key: str) -> int:
    """A task row's count `key` (n_instances, n_answered, n_labeled). Rows written before
    answers were counted apart (no n_answered) answered them all."""
    return int(row.get(key, row["n_instances"] if key == "n_answered" else 0) or 0)


def _weight(row: Mapping[str, Any], metric: str) -> int:
    """The instances behind a task row's mean of `metric` (0 when it was not measured)."""
    return 0 if row.get(metric) is None else _count(row, WEIGHTS[metric])


def aggregate(task_rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Per metric, its mean over every instance it was measured on, overall and per
    classification / generative tasks (tasks of unknown type count in overall only), from
    per-task rows holding each metric's mean and the counts of WEIGHTS; and those counts."""
    sums = {m: {g: [0.0, 0] for g in GROUPS} for m in WEIGHTS}
    counts = {c: {g: 0 for g in GROUPS} for c in ("n_instances", "n_answered", "n_labeled")}
    for r in task_rows:
        keys = ["overall"]
        if r.get("is_classification") is True:
            keys.append("classification")
        elif r.get("is_classification") is False:
            keys.append("generative")
        for m in WEIGHTS:
            n = _weight(r, m)
            for k in keys:
                sums[m][k][0] += r[m] * n if n else 0.0
                sums[m][k][1] += n
        for c, by_group in counts.items():
            for k in keys:
                by_group[k] += _count(r, c)
    out: dict[str, Any] = {m: {g: (s / n if n else None) for g, (s, n) in by_group.items()}
                           for m, by_group in sums.items()}
    return {**out, **counts}


def flat_metrics(m: dict) -> dict[str, float | None]:
    """Every metric overall (its name) and per classification and generative tasks
    (name_classification, name_generative)."""
    out: dict[str, float | None] = {}
    for metric in WEIGHTS:
        for group in GROUPS:
            out[metric if group == "overall" else f"{metric}_{group}"] = m[metric][group]
    return out
