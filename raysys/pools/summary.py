"""A pool in numbers: what `raysys pool inspect` prints. Pure."""
from __future__ import annotations

from collections import Counter
from typing import Any

from raysys.pools.load import Pool
from raysys.schema import task_text


def _stats(values: list[int]) -> dict[str, float]:
    if not values:
        return {"min": 0, "mean": 0.0, "max": 0}
    return {"min": min(values), "mean": round(sum(values) / len(values), 2), "max": max(values)}


def summarize(pool: Pool, top: int = 10) -> dict[str, Any]:
    tasks = pool.tasks
    flags = Counter(t.is_classification for t in tasks)
    categories = Counter(c for t in tasks for c in t.categories)
    splits = Counter(str(t.metadata.get("split")) for t in tasks if t.metadata.get("split") is not None)
    return {
        "path": pool.path,
        "format": pool.format,
        "num_tasks": len(tasks),
        "num_instances": sum(len(t.instances) for t in tasks),
        "num_classification": flags[True],
        "num_generative": flags[False],
        "num_unknown": flags[None],
        "num_skipped": len(pool.skipped),
        "num_with_demonstrations": sum(1 for t in tasks if t.demonstrations),
        "num_conversation_tasks": sum(1 for t in tasks if t.conversation),
        "instances_per_task": _stats([len(t.instances) for t in tasks]),
        "instruction_words": _stats([len(task_text(t).split()) for t in tasks]),
        "turns_before_the_last": _stats([len(i.context) for t in tasks if t.conversation for i in t.instances]),
        "sources": dict(Counter(t.source for t in tasks)),
        "splits": dict(splits),
        "top_categories": dict(categories.most_common(top)),
    }


def render(summary: dict[str, Any]) -> str:
    """The summary as aligned 'key  value' lines for people."""
    lines = []
    for key, value in summary.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
        lines.append(f"{key:<24} {value}")
    return "\n".join(lines)
