"""Alpaca-style data: a JSON array (or JSONL) of {instruction, input, output} entries.

Every entry is its own task with one instance (Alpaca has no task grouping). The task id
is the entry's `id` when present, else `alpaca-<index>` (index from 0 in file order).
`instruction` and `output` are required strings; `input` and `id` are optional strings.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from raysys.errors import InvalidFile, InvalidRecord
from raysys.io import read_json
from raysys.jsontypes import field, record, type_name
from raysys.pools.jsonio import iter_jsonl
from raysys.pools.record import Item, Record, fields_of
from raysys.schema import Instance, Task

SOURCE = "alpaca"


def task_from_entry(entry: Any, index: int, source, where: str) -> Task:
    """One entry's task; every field is checked for its JSON type (all are strings)."""
    with fields_of(source, where):
        entry = record(entry)
        instruction = field(entry, "instruction")
        output = field(entry, "output")
        inp = field(entry, "input", default="")
        task_id = field(entry, "id", default=f"alpaca-{index:05d}")
    return Task(
        task_id=task_id,
        instruction=instruction,
        instances=(Instance(id=f"{task_id}-0", input=inp, outputs=(output,)),),
        source=SOURCE,
        metadata={"index": index},
    )


def read(path: Path) -> Iterator[Item]:
    if path.suffix == ".jsonl":
        index = 0
        for item in iter_jsonl(path):
            if isinstance(item, InvalidRecord):
                yield item
            else:
                yield _one(item[1], index, path, f"line {item[0]}")
            index += 1
        return
    data = read_json(path)
    if not isinstance(data, list):
        raise InvalidFile(path, f"expected a JSON array of entries, got {type_name(data)}")
    for index, entry in enumerate(data):
        yield _one(entry, index, path, f"index {index}")


def _one(entry: Any, index: int, path: Path, where: str) -> Item:
    try:
        return Record(str(path), where, task_from_entry(entry, index, path, where))
    except InvalidRecord as e:
        return e
