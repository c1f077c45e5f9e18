"""Conversational pools: rows of `messages` (`{"role", "content"}` turns: TRL's SFTTrainer,
Tulu 3, SmolTalk, UltraChat) or ShareGPT `conversations` (`{"from", "value"}`; human/user,
gpt/assistant, system), from JSONL, a JSON array, Parquet or a Hugging Face dataset.

A row is one example: its last turn (an assistant's) is the target; the user turn before it
is the instance's input, the one text prompt uncertainty perturbs; the turns before that
(a system turn first, then user and assistant turns alternating) are its context
(raysys.schema: a conversation task). Turns are checked strictly: a role the format does
not know, a content that is not a string, turns out of order or a last turn that is not the
assistant's are errors naming the file, the row and the turn. Keys of a turn other than its
role and content (a `name`, say) are not read.

Rows sharing a task column form one task (`task_column`; by default the first of
TASK_COLUMNS the first row has, `task_id` first, so that raysys's own exports read back
as the tasks they came from; "" for none), its instances in file order, each with the
row's `instance_id` or `id`, else `<task>-<n>`. Without one, each row is its own task,
with the row's `id` or `<format>-<index>` (index from 0 in file order, counting every row).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raysys import jsontypes as jt
from raysys.errors import InvalidFile, InvalidRecord, first_line
from raysys.io import read_json
from raysys.jsontypes import FieldError
from raysys.pools.jsonio import iter_jsonl
from raysys.pools.record import Item, Record, fields_of, library_rows
from raysys.schema import Instance, Message, Task, turns_problem

TASK_COLUMNS = ("task_id", "task", "source", "category")


@dataclass(frozen=True)
class Layout:
    """How a format spells a conversation: its column, a turn's keys, its role names."""

    column: str
    role: str
    content: str
    roles: Mapping[str, str]  # the file's role name -> raysys.schema.ROLES
    said: Mapping[str, str] = field(default_factory=dict)  # a role as messages name it to the user


LAYOUTS = {
    "messages": Layout("messages", "role", "content", {"system": "system", "user": "user", "assistant": "assistant"}),
    "sharegpt": Layout("conversations", "from", "value", {"system": "system", "human": "user", "user": "user",
                                                          "gpt": "assistant", "assistant": "assistant"},
                       {"user": "human", "assistant": "gpt"}),
}


def format_of_columns(columns: Iterable[str]) -> str | None:
    """The conversational format whose column is among `columns` (None if neither)."""
    cols = set(columns)
    return next((fmt for fmt, lay in LAYOUTS.items() if lay.column in cols), None)


def example(row: Mapping[str, Any], layout: Layout) -> tuple[tuple[Message, ...], str, str]:
    """(context, last user turn, last assistant turn) of a row; FieldError naming the turn."""
    col = layout.column
    turns = []
    for path, turn in jt.items(jt.field(row, col, jt.ARRAY), col):
        role = jt.field(turn, layout.role, path=path)
        if role not in layout.roles:
            raise FieldError(f"field '{path}.{layout.role}': unknown role {role!r} "
                             f"(one of {', '.join(layout.roles)})")
        turns.append(Message(layout.roles[role], jt.field(turn, layout.content, path=path)))
    if not turns:
        raise FieldError(f"field {col!r} holds no turns")
    why = turns_problem(turns, layout.said)
    if why:
        raise FieldError(f"field {col!r}, {why}")
    if len(turns) < 2 or turns[-2].role != "user":
        raise FieldError(f"field {col!r} has no user turn")
    if not turns[-2].content.strip():
        raise FieldError(f"field {col!r}, turn {len(turns) - 2}: the last user turn is empty")
    return tuple(turns[:-2]), turns[-2].content, turns[-1].content


@dataclass
class _Group:
    where: str
    instances: list[Instance] = field(default_factory=list)
    first_at: dict[str, str] = field(default_factory=dict)


def records(rows: Iterable[tuple[str, Any] | InvalidRecord], fmt: str, source,
            task_column: str | None = None) -> Iterator[Item]:
    """The tasks of (where, row) pairs (an InvalidRecord passes through); see the module
    docstring. A grouped task is yielded after the last row."""
    layout, column, index = LAYOUTS[fmt], task_column, -1
    groups: dict[str, _Group] = {}
    for item in rows:
        index += 1
        if isinstance(item, InvalidRecord):
            yield item
            continue
        where, row = item
        if column is None and isinstance(row, Mapping):  # decided by the first row that is an object
            column = next((c for c in TASK_COLUMNS if c in row), "")
        try:
            with fields_of(source, where):
                row = jt.record(row)
                context, user, answer = example(row, layout)
                rid = jt.field(row, "id", default=None)
                iid = jt.field(row, "instance_id", default=None) or rid
                name = jt.field(row, column) if column else None
        except InvalidRecord as e:
            yield e
            continue
        if name is None:
            tid = rid or f"{fmt}-{index:05d}"
            yield Record(str(source), where, Task(
                task_id=tid, instruction="", instances=(Instance(f"{tid}-0", user, (answer,), context),),
                source=fmt, metadata={"index": index}, conversation=True))
            continue
        g = groups.setdefault(name, _Group(where))
        iid = iid or f"{name}-{len(g.instances)}"
        if iid in g.first_at:
            yield InvalidRecord(source, where, f"duplicate id {iid!r} in task {name!r} (first at {g.first_at[iid]})")
            continue
        g.first_at[iid] = where
        g.instances.append(Instance(iid, user, (answer,), context))
    for name, g in groups.items():
        yield Record(str(source), f"task {name!r} (first at {g.where})", Task(
            task_id=name, instruction="", instances=tuple(g.instances), source=fmt,
            categories=(name,) if column == "category" else (), metadata={"task_column": column},
            conversation=True))


def read(path: str | Path, fmt: str, task_column: str | None = None, split: str | None = None) -> Iterator[Item]:
    """Every task of a conversational file in format `fmt` (a Hugging Face dataset:
    raysys.pools.hf, which hands its rows to `records`)."""
    yield from records(_rows(path, split), fmt, path, task_column)


def _rows(path: str | Path, split: str | None) -> Iterator[tuple[str, Any] | InvalidRecord]:
    p = Path(path)
    if split is not None:
        raise InvalidFile(p, "--split applies to niv2 and hf pools, not a conversational file")
    if p.suffix == ".jsonl":
        for item in iter_jsonl(p):
            yield item if isinstance(item, InvalidRecord) else (f"line {item[0]}", item[1])
    elif p.suffix == ".json":
        data = read_json(p)
        if not isinstance(data, list):
            raise InvalidFile(p, f"expected a JSON array of conversations, got {jt.type_name(data)}")
        yield from ((f"index {i}", row) for i, row in enumerate(data))
    elif p.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(p)
        except Exception as e:  # noqa: BLE001  (pyarrow raises several types for a file that is not Parquet)
            raise InvalidFile(p, f"not a readable Parquet file ({first_line(e)})") from None
        rows = (rec for batch in pf.iter_batches(batch_size=4096) for rec in batch.to_pylist())
        yield from ((f"row {i}", row) for i, row in library_rows(p, rows))
    else:
        raise InvalidFile(p, f"unknown file type {p.suffix!r} for a conversational pool "
                             "(.jsonl, .json, .parquet or a Hugging Face dataset)")
