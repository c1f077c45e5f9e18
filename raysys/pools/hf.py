"""Hugging Face `datasets`: save_to_disk folders, and `load_dataset` names where a hub
is reachable (prefix the name with `hf:` or pass format `hf`).

Rows are mapped by their columns: canonical columns (task_id, instruction, instances),
Alpaca columns (instruction, output[, input]), Self-Instruct columns (instruction,
instances), NIV2-on-the-hub columns (task_name, definition, inputs, targets), whose
rows are grouped into one task per task_name, or conversations: `messages` or ShareGPT
`conversations` (raysys.pools.conversation). Every field is checked for its JSON type
as in the matching file reader.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from raysys.errors import InvalidFile, InvalidRecord, first_line
from raysys.jsontypes import ARRAY, STRING, field, strings
from raysys.pools import alpaca, canonical, conversation, self_instruct
from raysys.pools.record import Item, Record, fields_of, library_rows
from raysys.schema import Instance, Task

NIV2_HUB_COLUMNS = {"task_name", "definition", "inputs", "targets"}


def open_dataset(path: str, split: str | None):
    """The dataset (one split) at a save_to_disk folder or a hub name (`hf:` prefix)."""
    import datasets

    name = path.removeprefix("hf:")
    try:
        if Path(name).exists():
            ds = datasets.load_from_disk(name)
        else:
            ds = datasets.load_dataset(name, split=split)
    except FileNotFoundError as e:
        raise InvalidFile(path, f"not a Hugging Face dataset ({first_line(e)})") from None
    except Exception as e:  # hub unreachable, unknown name, corrupt files, ...: the user's input
        raise InvalidFile(path, f"cannot load Hugging Face dataset: {type(e).__name__}: {first_line(e)}") from None
    if isinstance(ds, datasets.DatasetDict):
        if split is None:
            split = "train" if "train" in ds else (next(iter(ds)) if len(ds) == 1 else None)
        if split not in ds:
            raise InvalidFile(path, f"choose a split with --split; splits: {sorted(ds)}")
        ds = ds[split]
    elif split is not None and Path(name).exists():
        raise InvalidFile(path, f"this saved dataset has no splits; drop --split {split}")
    return ds


def read(path: str | Path, split: str | None = None, task_column: str | None = None,
         fmt: str | None = None) -> Iterator[Item]:
    """The tasks of a dataset, by its columns, or as conversations in `fmt` (messages or
    sharegpt) when the user forced one."""
    path = str(path)
    ds = open_dataset(path, split)
    cols = set(ds.column_names)
    if fmt:
        yield from _conversations(ds, path, fmt, task_column)
    elif {"task_id", "instruction", "instances"} <= cols:
        for i, row in library_rows(path, ds):
            yield canonical.record_from_row(row, Path(path), f"row {i}")
    elif {"instruction", "instances"} <= cols:
        for i, row in library_rows(path, ds):
            where = f"row {i}"
            try:
                yield Record(path, where, self_instruct.task_from_record(row, f"row-{i}", path, where))
            except InvalidRecord as e:
                yield e
    elif {"instruction", "output"} <= cols:
        for i, row in library_rows(path, ds):
            where = f"row {i}"
            try:
                yield Record(path, where, alpaca.task_from_entry(row, i, path, where))
            except InvalidRecord as e:
                yield e
    elif NIV2_HUB_COLUMNS <= cols:
        yield from _grouped_niv2(ds, path)
    elif found := conversation.format_of_columns(cols):
        yield from _conversations(ds, path, found, task_column)
    else:
        raise InvalidFile(path, f"unrecognised columns {sorted(cols)}: expected canonical, Alpaca, Self-Instruct, "
                                "NIV2, messages or ShareGPT conversations columns")


def _conversations(ds, path: str, fmt: str, task_column: str | None) -> Iterator[Item]:
    yield from conversation.records(((f"row {i}", row) for i, row in library_rows(path, ds)), fmt, path, task_column)


def _grouped_niv2(ds, path: str) -> Iterator[Item]:
    """One task per task_name; a row with a field of the wrong type is its own bad record."""
    groups: dict[str, dict] = {}
    for i, row in library_rows(path, ds):
        try:
            with fields_of(path, f"row {i}"):
                name, definition, inp = (field(row, k) for k in ("task_name", "definition", "inputs"))
                targets = field(row, "targets", (STRING, ARRAY))
                outputs = (targets,) if isinstance(targets, str) else strings(targets, "targets")
                inst_id = field(row, "id", default=None)
        except InvalidRecord as e:
            yield e
            continue
        g = groups.setdefault(name, {"definition": definition, "instances": []})
        g["instances"].append(Instance(id=inst_id or f"{name}-{len(g['instances'])}", input=inp, outputs=outputs))
    for name, g in groups.items():
        yield Record(path, f"task {name}", Task(
            task_id=name, instruction=g["definition"], instances=tuple(g["instances"]), source="niv2"
        ))
