"""The canonical task: the contract between every stage of raysys.

A pool is a list of tasks. A task has an instruction (the definition), optional
demonstrations (input/output pairs shown in the prompt) and instances (input plus one or
more reference outputs). Readers turn every source format into these objects; Parquet
stores them one row per task with the Arrow schema `TASK_SCHEMA` (version 2; a version 1
file, without `conversation` and `context`, reads as instruction tasks).

A *conversation* task (`conversation=True`, from `messages` or ShareGPT rows) has no
instruction of its own: each instance is a conversation whose `input` is the last user
turn, `context` the turns before it (a system turn first, then user and assistant turns
alternating) and `outputs` the final assistant turn. Its prompt is the model's chat
template over context + input; perturbations change the input (raysys.perturb).

`is_classification` is True, False or None (unknown). `metadata` holds any extra
JSON-serialisable facts (split, rule, source fields); it is stored as a JSON string so
that heterogeneous pools share one Arrow schema.

This module knows nothing of files or formats; see raysys/pools for those.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import pyarrow as pa

from raysys import jsontypes as jt
from raysys.jsontypes import FieldError

SCHEMA_VERSION = "2"
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Demonstration:
    input: str
    output: str


@dataclass(frozen=True)
class Message:
    role: str  # one of ROLES
    content: str


@dataclass(frozen=True)
class Instance:
    id: str
    input: str
    outputs: tuple[str, ...]
    context: tuple[Message, ...] = ()  # conversation tasks: the turns before `input` (the last user turn)


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
    conversation: bool = False  # instances are conversations: no instruction, the chat template renders each


def task_text(task: Task) -> str:
    """The words that state what a task asks (similarity, alignment, summaries): its
    instruction; a conversation task's, the last user turn of its first instance."""
    return task.instances[0].input if task.conversation and task.instances else task.instruction


def prompt_turns(inst: Instance, user: str | None = None) -> tuple[Message, ...]:
    """A conversation instance's prompt: its context, then its last user turn (`user` in
    place of its input, e.g. perturbed)."""
    return (*inst.context, Message("user", inst.input if user is None else user))


def turns_problem(turns: Sequence[Message], names: Mapping[str, str] | None = None) -> str | None:
    """Why `turns` cannot be a conversation (None when they can): roles known, a system turn
    only first, then user and assistant turns alternating from a user turn, the last one an
    assistant's (for an instance's context: the turn before its input; for a whole
    conversation: its target). `names`: how the file spells each role, for the message."""
    def said(role: str) -> str:
        return (names or {}).get(role, role)

    def a(role: str) -> str:
        return ("an " if said(role)[:1] in "aeio" else "a ") + said(role)  # a user, an assistant

    expect = "user"
    for k, m in enumerate(turns):
        if m.role not in ROLES:
            return f"turn {k}: unknown role {m.role!r} (one of {', '.join(ROLES)})"
        if m.role == "system":
            if k:
                return f"turn {k}: {a('system')} turn may only come first"
            continue
        if m.role != expect:
            return f"turn {k}: {a(m.role)} turn where {a(expect)} turn belongs (turns must alternate)"
        expect = "assistant" if expect == "user" else "user"
    if expect == "assistant":
        return f"turn {len(turns) - 1}: the last turn must be the {said('assistant')}'s, not the {said('user')}'s"
    return None


_MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])

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
                    [("id", pa.string()), ("input", pa.string()), ("outputs", pa.list_(pa.string())),
                     ("context", pa.list_(_MESSAGE))]
                )
            ),
        ),
        pa.field("is_classification", pa.bool_(), nullable=True),
        pa.field("categories", pa.list_(pa.string())),
        pa.field("source", pa.string()),
        pa.field("metadata", pa.string()),
        pa.field("conversation", pa.bool_()),
    ],
    metadata={"raysys_schema_version": SCHEMA_VERSION},
)

REQUIRED_FIELDS = ("task_id", "instruction", "instances")


def problems(task: Task) -> list[str]:
    """Every reason `task` is unusable (empty list when it is fine)."""
    found = []
    if not isinstance(task.task_id, str) or not task.task_id.strip():
        found.append("empty task_id")
    if not isinstance(task.instruction, str):
        found.append("instruction is not a string")
    elif task.conversation and task.instruction:
        found.append("a conversation task has no instruction of its own (its instances' turns are the prompt)")
    elif not task.conversation and not task.instruction.strip():
        found.append("empty instruction")
    if not task.conversation and any(inst.context for inst in task.instances):
        found.append("instances have conversation turns but the task is not a conversation task")
    if not task.instances:
        found.append("task has zero instances")
    seen: set[str] = set()
    for inst in task.instances:
        if inst.id in seen:
            found.append(f"duplicate instance id {inst.id!r}")
        seen.add(inst.id)
        if not inst.outputs:
            found.append(f"instance {inst.id!r} has no reference output")
        if task.conversation:
            why = turns_problem(inst.context)
            if why:
                found.append(f"instance {inst.id!r}: {why}")
            if not inst.input.strip():
                found.append(f"instance {inst.id!r}: empty last user turn")
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
            {"id": i.id, "input": i.input, "outputs": list(i.outputs),
             "context": [{"role": m.role, "content": m.content} for m in i.context]} for i in task.instances
        ],
        "is_classification": task.is_classification,
        "categories": list(task.categories),
        "source": task.source,
        "metadata": json.dumps(dict(task.metadata), sort_keys=True, ensure_ascii=False),
        "conversation": task.conversation,
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
        conversation=jt.field(row, "conversation", jt.BOOLEAN, default=False),
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
        context=tuple(Message(jt.field(m, "role", path=p), jt.field(m, "content", path=p))
                      for p, m in jt.items(raw.get("context"), f"{path}.context")),
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
