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

from raysys import jsontypes as jt
from raysys.jsontypes import FieldError

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
    """Inverse of `to_row`; also accepts metadata given as an object (canonical JSONL), an
    instance's output spelled `output` (one string or several), and the flag strings of
    `parse_flag`.

    Every field is checked for its JSON type (raysys.jsontypes): a FieldError names the
    field, so that readers can add the file and the record.
    """
    row = jt.record(row)
    task_id = jt.field(row, "task_id")
    instruction = jt.field(row, "instruction")
    instances = tuple(_instance(raw, path, k) for k, (path, raw) in enumerate(jt.items(
        jt.field(row, "instances", jt.ARRAY), "instances")))
    return Task(
        task_id=task_id,
        instruction=instruction,
        demonstrations=tuple(Demonstration(jt.field(d, "input", path=path), jt.field(d, "output", path=path))
                             for path, d in jt.items(row.get("demonstrations"), "demonstrations")),
        instances=instances,
        is_classification=flag(row.get("is_classification")),
        categories=jt.strings(row.get("categories"), "categories"),
        source=jt.field(row, "source", default=""),
        metadata=_metadata(row.get("metadata")),
    )


def to_table(tasks: Iterable[Task]) -> pa.Table:
    return pa.Table.from_pylist([to_row(t) for t in tasks], schema=TASK_SCHEMA)


def _instance(raw: Mapping[str, Any], path: str, index: int) -> Instance:
    key = "outputs" if raw.get("outputs") is not None or "output" not in raw else "output"
    outputs = jt.field(raw, key, (jt.ARRAY, jt.STRING), path=path)
    return Instance(
        id=jt.field(raw, "id", path=path, default=str(index)),
        input=jt.field(raw, "input", path=path, default=""),
        outputs=(outputs,) if isinstance(outputs, str) else jt.strings(outputs, f"{path}.{key}"),
    )


def _metadata(value: Any) -> dict[str, Any]:
    """Metadata as an object, or as a string holding one (how Parquet stores it)."""
    if isinstance(value, str):
        try:
            value = jt.loads(value)
        except jt.NotJSON as e:
            at = f" at column {e.colno}" if e.colno is not None else ""
            raise FieldError(f"field 'metadata' is a string but not a JSON document{at}: {e.msg}") from None
        if not isinstance(value, Mapping):
            raise FieldError(f"field 'metadata' must hold a JSON object, got {jt.type_name(value)}")
    return {} if value is None else dict(jt.checked(value, jt.OBJECT, "metadata"))


def flag(value: Any, name: str = "is_classification") -> bool | None:
    """`parse_flag` of a field's value, or FieldError naming the field."""
    if jt.type_name(value) not in (jt.BOOLEAN, jt.NULL, jt.STRING):
        raise FieldError(f"field {name!r} must be true, false, null or a string such as \"classification\", "
                         f"got {jt.type_name(value)}")
    try:
        return parse_flag(value)
    except ValueError:
        raise FieldError(f"field {name!r} must be true, false or unknown, got {value!r}") from None


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
