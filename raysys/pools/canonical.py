"""raysys's own formats: canonical Parquet (one row per task, `TASK_SCHEMA`) and
canonical JSONL (one task object per line, same field names; metadata may be an object).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from raysys.errors import InvalidFile, InvalidRecord
from raysys.io import write_jsonl, write_parquet
from raysys.pools.jsonio import iter_jsonl
from raysys.pools.record import Item, Record
from raysys.schema import REQUIRED_FIELDS, Task, from_row, to_row, to_table


def record_from_row(row: Any, source: Path, where: str) -> Item:
    if not isinstance(row, dict):
        return InvalidRecord(source, where, f"expected a JSON object, got {type(row).__name__}")
    try:
        return Record(str(source), where, from_row(row))
    except KeyError as e:
        return InvalidRecord(source, where, f"missing required field {e.args[0]!r}")
    except (TypeError, ValueError, json.JSONDecodeError) as e:
        return InvalidRecord(source, where, str(e))


def read_jsonl(path: Path) -> Iterator[Item]:
    for item in iter_jsonl(path):
        if isinstance(item, InvalidRecord):
            yield item
        else:
            yield record_from_row(item[1], path, f"line {item[0]}")


def read_parquet(path: Path, batch_size: int = 4096) -> Iterator[Item]:
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as e:
        raise InvalidFile(path, f"not a readable Parquet file ({e})") from None
    missing = [c for c in REQUIRED_FIELDS if c not in pf.schema_arrow.names]
    if missing:
        raise InvalidFile(path, f"not a raysys task file: missing columns {missing}")
    row = 0
    for batch in pf.iter_batches(batch_size=batch_size):
        for rec in batch.to_pylist():
            yield record_from_row(rec, path, f"row {row}")
            row += 1


def write_parquet_tasks(tasks: list[Task], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write tasks as canonical Parquet, atomically; `metadata` goes into the file's
    key-value metadata (e.g. the hash of the config that made it)."""
    table = to_table(tasks)
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    write_parquet(path, table)


def write_jsonl_tasks(tasks: list[Task], path: str | Path) -> None:
    """Write tasks as canonical JSONL (metadata as an object), atomically."""
    write_jsonl(path, ({**to_row(t), "metadata": dict(t.metadata)} for t in tasks))


def write_tasks(tasks: list[Task], path: str | Path) -> None:
    """Canonical Parquet or JSONL, chosen by the extension of `path`."""
    suffix = Path(path).suffix
    if suffix == ".parquet":
        write_parquet_tasks(tasks, path)
    elif suffix == ".jsonl":
        write_jsonl_tasks(tasks, path)
    else:
        raise InvalidFile(path, "output must end in .parquet or .jsonl")


def file_metadata(path: str | Path) -> dict[str, str]:
    """The key-value metadata of a Parquet file ({} when unreadable or absent)."""
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return {}
    return {k.decode(): v.decode() for k, v in meta.items()}
