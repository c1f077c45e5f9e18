"""raysys's own formats: canonical Parquet (one row per task, `TASK_SCHEMA`) and
canonical JSONL (one task object per line, same field names; metadata may be an object).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from raysys.errors import InvalidFile, InvalidRecord, first_line
from raysys.io import write_jsonl, write_parquet
from raysys.pools.jsonio import iter_jsonl
from raysys.pools.record import Item, Record, fields_of, library_rows
from raysys.schema import REQUIRED_FIELDS, Task, from_row, to_row, to_table


def record_from_row(row: Any, source: Path, where: str) -> Item:
    """The task of one row (every field checked by from_row), or the InvalidRecord."""
    try:
        with fields_of(source, where):
            return Record(str(source), where, from_row(row))
    except InvalidRecord as e:
        return e


def read_jsonl(path: Path) -> Iterator[Item]:
    for item in iter_jsonl(path):
        if isinstance(item, InvalidRecord):
            yield item
        else:
            yield record_from_row(item[1], path, f"line {item[0]}")


def read_parquet(path: Path, batch_size: int = 4096) -> Iterator[Item]:
    """Each row's task. Values are checked like JSON ones (a number column where strings
    belong is an InvalidRecord per row); a file that cannot be opened is an InvalidFile,
    and so is one that cannot be decoded, naming the row reading stopped at."""
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a file that is not Parquet
        raise InvalidFile(path, f"not a readable Parquet file ({first_line(e)})") from None
    missing = [c for c in REQUIRED_FIELDS if c not in pf.schema_arrow.names]
    if missing:
        raise InvalidFile(path, f"not a raysys task file: missing columns {missing}")
    rows = (rec for batch in pf.iter_batches(batch_size=batch_size) for rec in batch.to_pylist())
    for i, rec in library_rows(path, rows):
        yield record_from_row(rec, path, f"row {i}")


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
