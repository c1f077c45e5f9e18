"""Super-NaturalInstructions (NIV2) task folders.

Accepts a folder with tasks/*.json and optional splits/*.txt (the official layout), a
folder of task files, or one task file. Keeps Definition, Positive Examples (as
demonstrations), Instances and Categories; domains, reasoning, languages, license and the
split a task belongs to go into metadata. Each task file is one record: a broken file is
skippable like a bad JSONL line. Every field taken is checked for its JSON type (Definition
a string or an array of strings, examples and instances objects of strings, outputs a
string or an array of strings, the list fields arrays of strings).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from raysys.errors import InvalidFile, InvalidRecord
from raysys.io import decode, read_bytes, read_json
from raysys.jsontypes import ARRAY, STRING, field, items, record, strings
from raysys.pools.record import Item, Record, fields_of
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
            yield Record(str(f), f"task {name}", task_from_dict(read_json(f), name, split_of.get(name), f))
        except InvalidFile as e:  # a bad file is one bad record of the pool
            yield InvalidRecord(f, f"task {name}", e.reason)
        except InvalidRecord as e:
            yield e


# NIV2's list-of-strings fields that go into metadata, by metadata key.
META_LISTS = {"domains": "Domains", "reasoning": "Reasoning", "input_language": "Input_language",
              "output_language": "Output_language", "instance_license": "Instance License", "datasets": "Source"}


def task_from_dict(raw: Any, name: str, split: str | None, source) -> Task:
    """One task file's task; every field it takes is checked for its JSON type."""
    with fields_of(source, f"task {name}"):
        raw = record(raw)
        definition = field(raw, "Definition", (STRING, ARRAY))
        if not isinstance(definition, str):
            definition = "\n".join(strings(definition, "Definition"))
        instances = items(field(raw, "Instances", ARRAY), "Instances")
        demos = []
        for path, ex in items(raw.get("Positive Examples"), "Positive Examples"):
            out = field(ex, "output", (STRING, ARRAY), path=path)
            if not isinstance(out, str):  # a few tasks list several acceptable outputs: show the first
                out = (strings(out, f"{path}.output") or ("",))[0]
            demos.append(Demonstration(field(ex, "input", path=path), out))
        insts = []
        for k, (path, inst) in enumerate(instances):
            outs = field(inst, "output", (ARRAY, STRING), path=path)
            insts.append(Instance(
                id=field(inst, "id", path=path, default=f"{name}-{k}"),
                input=field(inst, "input", path=path),
                outputs=(outs,) if isinstance(outs, str) else strings(outs, f"{path}.output"),
            ))
        meta = {"split": split, **{key: list(strings(raw.get(src), src)) for key, src in META_LISTS.items()}}
        categories = strings(raw.get("Categories"), "Categories")
    return Task(
        task_id=name,
        instruction=definition,
        demonstrations=tuple(demos),
        instances=tuple(insts),
        is_classification=None,  # NIV2 has no flag: derived by raysys.pools.classify
        categories=categories,
        source=SOURCE,
        metadata=meta,
    )
