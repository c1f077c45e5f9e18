"""Self-Instruct JSONL: seed tasks and user-oriented instructions.

One record per line with `instruction` and `instances` ([{input, output}]). Seed tasks
carry `is_classification` (kept as the source's flag) and `name`; user-oriented
instructions carry `motivation_app` (kept as the task's category). The task id is `id`,
else `name`, else `line-<n>`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from raysys.errors import InvalidRecord
from raysys.pools.jsonio import iter_jsonl
from raysys.pools.record import Item, Record, require
from raysys.schema import Instance, Task, parse_flag

SOURCE = "self_instruct"


def task_from_record(rec: Any, default_id: str, source, where: str) -> Task:
    instruction = require(rec, "instruction", source, where)
    instances = require(rec, "instances", source, where, list)
    task_id = str(rec.get("id") or rec.get("name") or default_id)
    insts = []
    for k, inst in enumerate(instances):
        w = f"{where} instances[{k}]"
        output = require(inst, "output", source, w, (str, list))
        insts.append(Instance(
            id=f"{task_id}-{k}",
            input=inst.get("input") or "",
            outputs=(output,) if isinstance(output, str) else tuple(output),
        ))
    try:
        flag = parse_flag(rec.get("is_classification"))
    except ValueError as e:
        raise InvalidRecord(source, where, str(e)) from None
    app = rec.get("motivation_app")
    meta = {k: rec[k] for k in ("name", "motivation_app") if rec.get(k)}
    return Task(
        task_id=task_id,
        instruction=instruction,
        instances=tuple(insts),
        is_classification=flag,
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
