"""The canonical task: the contract between every stage of raysys.

A pool is a list of tasks. A task has an instruction (the definition), optional
demonstrations (input/output pairs shown in the prompt) and instances (input plus one or
more reference outputs). Readers turn every source format into these objects; Parquet
stores them one row per task with the Arrow schema `TASK_SCHEMA`.

`is_classification` is True, False or None (unknown). `metadata` holds any extra
JSON-serialisable facts (split, rule, source fields); it is stored as a JSON string so
that heterogeneous pools share one Arrow schema.

This module knows nothing of files or formats; see raysys/pools for those.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import pyarrow as pa

SCHEMA_VERSION = "1"


@dataclass(frozen=True)
class Demonstration:
    input: str
    output: str


@dataclass(frozen=True)
class Instance:
    id: str
    input: str
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class Task:
    task_id: str
    instruction: str
    instances: tuple[Instance, ...]
    demonstrations: tuple[Demonstration, ...] = ()
    is_classification: bool | None = None
    categories: tuple[str, ...] = ()
    source: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)


TASK_SCHEMA = pa.schema(
    [
        pa.field("task_id", pa.string(), nullable=False),
        pa.field("instruction", pa.string(), nullable=False),
        pa.field(
            "demonstrations",
            pa.list_(pa.struct([("input", pa.string()), ("output", pa.string())])),
        ),
        pa.field(
            "instances",
            pa.list_(
                pa.struct(
                    [("id", pa.string()), ("input", pa.string()), ("outputs", pa.list_(pa.string()))]
                )
            ),
        ),
        pa.field("is_classification", pa.bool_(), nullable=True),
        pa.field("categories", pa.list_(pa.string())),
        pa.field("source", pa.string()),
        pa.field("metadata", pa.string()),
    ],
    metadata={"raysys_schema_version": SCHEMA_VERSION},
)

REQUIRED_FIELDS = ("task_id", "instruction", "instances")


def problems(task: Task) -> list[str]:
    """Every reason `task` is unusable (empty list when it is fine)."""
    found = []
    if not isinstance(task.task_id, str) or not task.task_id.strip():
        found.append("empty task_id")
    if not isinstance(task.instruction, str) or not task.instruction.strip():
        found.append("empty instruction")
    if not task.instances:
        found.append("task has zero instances")
    seen: set[str] = set()
    for inst in task.instances:
        if inst.id in seen:
            found.append(f"duplicate instance id {inst.id!r}")
        seen.add(inst.id)
        if not inst.outputs:
            found.append(f"instance {inst.id!r} has no reference output")
    if task.is_classification not in (True, False, None):
        found.append(f"is_classification must be true, false or null, got {task.is_classification!r}")
    return found


def to_row(task: Task) -> dict[str, Any]:
    """A task as a plain dict matching `TASK_SCHEMA` (metadata as JSON)."""
    return {
        "task_id": task.task_id,
        "instruction": task.instruction,
        "demonstrations": [{"input": d.input, "output": d.output} for d in task.demonstrations],
        "instances": [
            {"id": i.id, "input": i.input, "outputs": list(i.outputs)} for i in task.instances
        ],
        "is_classification": task.is_classification,
        "categories": list(task.categories),
        "source": task.source,
        "metadata": json.dumps(dict(task.metadata), sort_keys=True, ensure_ascii=False),
    }


def from_row(row: Mapping[str, Any]) -> Task:
    """Inverse of `to_row`; also accepts metadata given as a dict (canonical JSONL).

    Raises KeyError for a missing required field and TypeError/ValueError for a value of
    the wrong shape, so readers can name the record.
    """
    for name in REQUIRED_FIELDS:
        if name not in row or row[name] is None:
            raise KeyError(name)
    meta = row.get("metadata") or {}
    if isinstance(meta, str):
        meta = json.loads(meta)
    if not isinstance(meta, dict):
        raise TypeError("metadata must be an object")
    return Task(
        task_id=_text(row["task_id"], "task_id"),
        instruction=_text(row["instruction"], "instruction"),
        demonstrations=tuple(
            Demonstration(_text(d["input"], "demonstration input"), _text(d["output"], "demonstration output"))
            for d in (row.get("demonstrations") or ())
        ),
        instances=tuple(_instance(i, k) for k, i in enumerate(row["instances"])),
        is_classification=parse_flag(row.get("is_classification")),
        categories=tuple(_text(c, "category") for c in (row.get("categories") or ())),
        source=_text(row.get("source") or "", "source"),
        metadata=meta,
    )


def to_table(tasks: Iterable[Task]) -> pa.Table:
    return pa.Table.from_pylist([to_row(t) for t in tasks], schema=TASK_SCHEMA)


def _instance(raw: Mapping[str, Any], index: int) -> Instance:
    if not isinstance(raw, Mapping):
        raise TypeError(f"instance {index} must be an object")
    outputs = raw.get("outputs")
    if outputs is None and "output" in raw:  # accept the singular spelling
        outputs = raw["output"]
    if isinstance(outputs, str):
        outputs = [outputs]
    if outputs is None:
        raise KeyError(f"instances[{index}].outputs")
    inst_id = raw.get("id")
    return Instance(
        id=str(index) if inst_id is None else str(inst_id),
        input=_text(raw.get("input", ""), f"instances[{index}].input"),
        outputs=tuple(_text(o, f"instances[{index}].outputs") for o in outputs),
    )


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__}")
    return value


def parse_flag(value: Any) -> bool | None:
    """true/false/unknown from a bool, None or the strings users write."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "yes", "1", "classification"}:
        return True
    if isinstance(value, str) and value.strip().lower() in {"false", "no", "0", "generative"}:
        return False
    if isinstance(value, str) and value.strip().lower() in {"", "unknown", "null", "none"}:
        return None
    raise ValueError(f"is_classification must be true, false or unknown, got {value!r}")
