"""Self-Instruct JSONL: seed tasks and user-oriented instructions.

One record per line with `instruction` and `instances` ([{input, output}]). Seed tasks
carry `is_classification` (kept as the source's flag) and `name`; user-oriented
instructions carry `motivation_app` (kept as the task's category). The task id is `id`,
else `name`, else `line-<n>`. Every field taken is checked for its JSON type: strings,
`instances` an array of objects, an output a string or an array of strings, and
`is_classification` a boolean, null or a flag string (raysys.schema.parse_flag).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from raysys.errors import InvalidRecord
from raysys.jsontypes import ARRAY, STRING, field, items, record, strings
from raysys.pools.jsonio import iter_jsonl
from raysys.pools.record import Item, Record, fields_of
from raysys.schema import Instance, Task, flag

SOURCE = "self_instruct"


def task_from_record(rec: Any, default_id: str, source, where: str) -> Task:
    """One record's task; every field it takes is checked for its JSON type."""
    with fields_of(source, where):
        rec = record(rec)
        instruction = field(rec, "instruction")
        name = field(rec, "name", default=None)
        task_id = field(rec, "id", default=None) or name or default_id
        insts = []
        for k, (path, inst) in enumerate(items(field(rec, "instances", ARRAY), "instances")):
            output = field(inst, "output", (STRING, ARRAY), path=path)
            insts.append(Instance(
                id=f"{task_id}-{k}",
                input=field(inst, "input", path=path, default=""),
                outputs=(output,) if isinstance(output, str) else strings(output, f"{path}.output"),
            ))
        is_cls = flag(rec.get("is_classification"))
        app = field(rec, "motivation_app", default=None)
    meta = {k: v for k, v in (("name", name), ("motivation_app", app)) if v}
    return Task(
        task_id=task_id,
        instruction=instruction,
        instances=tuple(insts),
        is_classification=is_cls,
        categories=(app,) if app else (),
        source=SOURCE,
        metadata=meta,
    )


def read(path: Path) -> Iterator[Item]:
    for item in iter_jsonl(path):
        if isinstance(item, InvalidRecord):
            yield item
            continue
        lineno, rec = item
        where = f"line {lineno}"
        try:
            yield Record(str(path), where, task_from_record(rec, f"line-{lineno}", path, where))
        except InvalidRecord as e:
            yield e
