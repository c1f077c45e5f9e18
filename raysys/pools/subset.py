"""Pools as files: a pool read once per process (`pool_tasks`), copied as canonical Parquet
(`pool_copy`, `as_parquet`), and some of its tasks written as a Parquet pool of their own,
once (`subset_pool`): a rerun finds the same file and resumes its parts.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

from raysys.errors import RaysysError
from raysys.pools.canonical import write_parquet_tasks
from raysys.pools.load import detect_format, load_pool


@functools.lru_cache(maxsize=4)
def pool_tasks(path: str) -> dict:
    """{task_id: Task} of a pool (read once per process)."""
    return {t.task_id: t for t in load_pool(path).tasks}


def pool_copy(pool: str, path: Path) -> str:
    """The pool (any format raysys reads) as canonical Parquet at `path`, written once and
    atomically: a file there is complete."""
    if not path.is_file():
        write_parquet_tasks(list(load_pool(pool).tasks), path)
    return str(path)


def as_parquet(pool: str, path: Path) -> str:
    """The pool itself when it is a canonical Parquet file, else its canonical copy at `path`."""
    canonical = str(pool).endswith(".parquet") and Path(pool).is_file() and detect_format(pool) == "parquet"
    return str(pool) if canonical else pool_copy(pool, path)


def has_conversations(parquet: str) -> bool:
    """Whether a canonical Parquet pool holds a conversation task (a version 1 file: none)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if "conversation" not in pq.read_schema(parquet).names:
        return False
    return bool(pc.any(pq.read_table(parquet, columns=["conversation"]).column("conversation")).as_py())


def subset_pool(pool: str, task_ids: Sequence[str], path: Path) -> str:
    """The tasks (in the given order, once each) as their own Parquet pool at `path`,
    written once and atomically: a file there is complete, so a rerun finds the same
    pool file and resumes its parts. An id not in the pool is a RaysysError."""
    if not path.is_file():
        tasks = pool_tasks(str(pool))
        missing = [t for t in task_ids if t not in tasks]
        if missing:
            raise RaysysError(f"{len(missing)} task id(s) are not in {pool} (e.g. {missing[0]!r})")
        write_parquet_tasks([tasks[t] for t in dict.fromkeys(task_ids)], path)
    return str(path)
