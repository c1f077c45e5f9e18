"""Super-NaturalInstructions (NIV2) task folders.

Accepts a folder with tasks/*.json and optional splits/*.txt (the official layout), a
folder of task files, or one task file. Keeps Definition, Positive Examples (as
demonstrations), Instances and Categories; domains, reasoning, languages, license and the
split a task belongs to go into metadata. Each task file is one record: a broken file is
skippable like a bad JSONL line.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from raysys.errors import InvalidFile, InvalidRecord
from raysys.pools.jsonio import decode, parse_json, read_bytes
from raysys.pools.record import Item, Record, require
from raysys.schema import Demonstration, Instance, Task

SOURCE = "niv2"


def task_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    folder = path / "tasks" if (path / "tasks").is_dir() else path
    files = sorted(folder.glob("*.json"))
    if not files:
        raise InvalidFile(path, "no NIV2 task files (*.json) found")
    return files


def read_splits(path: Path) -> dict[str, str]:
    """task name -> split name, from splits/<name>_tasks.txt (or splits/<name>.txt)."""
    folder = path / "splits"
    split_of: dict[str, str] = {}
    if path.is_dir() and folder.is_dir():
        for f in sorted(folder.glob("*.txt")):
            name = f.stem.removesuffix("_tasks")
            for line in decode(read_bytes(f), f).splitlines():
                if line.strip():
                    split_of.setdefault(line.strip(), name)
    return split_of


def read(path: Path, split: str | None = None) -> Iterator[Item]:
    split_of = read_splits(path)
    if split is not None and split_of and split not in set(split_of.values()):
        raise InvalidFile(path, f"no split {split!r}; splits: {sorted(set(split_of.values()))}")
    for f in task_files(path):
        name = f.stem
        if split is not None and split_of.get(name) != split:
            continue
        try:
            raw = parse_json(decode(read_bytes(f), f), f)
            yield Record(str(f), f"task {name}", task_from_dict(raw, name, split_of.get(name), f))
        except InvalidFile as e:  # a bad file is one bad record of the pool
            yield InvalidRecord(f, f"task {name}", e.reason)
        except InvalidRecord as e:
            yield e


def task_from_dict(raw: dict, name: str, split: str | None, source) -> Task:
    where = f"task {name}"
    definition = require(raw, "Definition", source, where, (list, str))
    if isinstance(definition, list):
        definition = "\n".join(d for d in definition if isinstance(d, str))
    instances = require(raw, "Instances", source, where, list)
    demos = []
    for k, ex in enumerate(raw.get("Positive Examples") or []):
        w = f"{where} Positive Examples[{k}]"
        out = require(ex, "output", source, w, (str, list))
        if isinstance(out, list):  # a few tasks list several acceptable outputs: show the first
            out = str(out[0]) if out else ""
        demos.append(Demonstration(require(ex, "input", source, w), out))
    insts = []
    for k, inst in enumerate(instances):
        w = f"{where} Instances[{k}]"
        outs = require(inst, "output", source, w, (list, str))
        insts.append(Instance(
            id=str(inst.get("id", f"{name}-{k}")),
            input=require(inst, "input", source, w),
            outputs=(outs,) if isinstance(outs, str) else tuple(str(o) for o in outs),
        ))
    meta = {
        "split": split,
        "domains": list(raw.get("Domains") or []),
        "reasoning": list(raw.get("Reasoning") or []),
        "input_language": list(raw.get("Input_language") or []),
        "output_language": list(raw.get("Output_language") or []),
        "instance_license": list(raw.get("Instance License") or []),
        "datasets": list(raw.get("Source") or []),
    }
    return Task(
        task_id=name,
        instruction=definition,
        demonstrations=tuple(demos),
        instances=tuple(insts),
        is_classification=None,  # NIV2 has no flag: derived by raysys.pools.classify
        categories=tuple(raw.get("Categories") or ()),
        source=SOURCE,
        metadata=meta,
    )
