"""Run tracking, the one home of it: what makes a run resumable and its outputs safe.

- **Run keys.** `run_key` hashes everything that changes a run's numbers (a config, the
  model, the inputs) into a short name: a rerun with the same inputs finds its earlier
  work, a changed one starts afresh. `model_ref` and `pool_stats` say what a model and a
  pool are for that purpose (a local folder by its absolute path; a pool by its files'
  names, sizes and modification times).
- **Part files.** A run on an actor pool writes each finished batch as part files in its
  run folder: `details-<id>.parquet` first (when kept), then `scores-<id>.parquet`, the
  commit record of the batch. `Parts` finds what is done and merges the parts into one
  row per task, the first part winning when a retried batch wrote a task twice; the
  details kept are those of the winning part.
- **Subset pools.** Some tasks of a pool written as a Parquet pool of their own, once.
- **Atomic folders.** A folder appears whole or not at all (`atomic_dir`; single files:
  raysys.io.atomic_path).
- **CPU shares.** Actors and training workers on CPUs take at least a quarter CPU each,
  and one CPU stays free for Ray Data's own tasks (each asks for a whole CPU: with none
  free a pipeline waits forever): `cpu_share`.

Knows nothing of models or Ray's APIs.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from raysys.errors import InvalidFile, RaysysError
from raysys.io import publish_dir, write_parquet
from raysys.schema import Task

# ---------------------------------------------------------------- run keys


def model_ref(model: str) -> str:
    """A model as a run key sees it: a local folder by its absolute path, else its name."""
    return os.path.abspath(model) if os.path.exists(model) else model


def pool_stats(pool: str | os.PathLike) -> list:
    """(name, size, mtime) of the pool's file(s): an edited pool starts a new run."""
    path = Path(pool)
    files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
    return [(str(f.relative_to(path)) if path.is_dir() else f.name, f.stat().st_size, f.stat().st_mtime_ns)
            for f in files if f.exists()]


def run_key(blob: Any, prefix: str = "") -> str:
    """`prefix` + a 16-hex-digit hash of the JSON value `blob`."""
    return prefix + hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def tasks_content(tasks: Iterable[Task]) -> list:
    """What a run trained on tasks depends on, as a JSON value for `run_key`: each task's id,
    instruction, instances and demonstrations (an edited task starts a new run)."""
    return [[t.task_id, t.instruction, [(i.id, i.input, list(i.outputs)) for i in t.instances],
             [(d.input, d.output) for d in t.demonstrations]] for t in tasks]


# ---------------------------------------------------------------- part files


@dataclass(frozen=True)
class Parts:
    """The part files of one run in `folder`."""

    folder: Path

    def write(self, rows: list[dict[str, Any]], details: list[dict[str, Any]] | None = None,
              detail_schema: pa.Schema | None = None) -> None:
        """One batch's rows (and its detail rows, first: a scores part commits the batch)."""
        name = uuid.uuid4().hex
        if details is not None:
            write_parquet(self.folder / f"details-{name}.parquet", pa.Table.from_pylist(details, schema=detail_schema))
        write_parquet(self.folder / f"scores-{name}.parquet", pa.Table.from_pylist(rows))

    def _scores(self) -> list[Path]:
        return sorted(self.folder.glob("scores-*.parquet"))

    def done(self) -> set[str]:
        """The task ids of every committed batch."""
        out: set[str] = set()
        for part in self._scores():
            out.update(pq.read_table(part, columns=["task_id"]).column("task_id").to_pylist())
        return out

    def merge(self, order: Sequence[str], what: str = "scored") -> tuple[pa.Table, dict[str, str]]:
        """One row per task of `order`, in that order (the first part wins), and the part
        each row came from; RaysysError naming a missing task (rerun to finish it)."""
        rank = {tid: i for i, tid in enumerate(order)}
        chosen: dict[str, str] = {}  # task_id -> part id
        tables = []
        for part in self._scores():
            t = pq.read_table(part)
            keep = []
            for tid in t.column("task_id").to_pylist():
                keep.append(tid in rank and tid not in chosen)
                if keep[-1]:
                    chosen[tid] = part.stem.removeprefix("scores-")
            tables.append(t.filter(pa.array(keep, type=pa.bool_())))
        missing = [tid for tid in order if tid not in chosen]
        if missing:
            raise RaysysError(f"{len(missing)} task(s) were not {what} (e.g. {missing[0]}); rerun the same command "
                              f"to finish them (finished work is kept in {self.folder})")
        table = pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})
        ids = table.column("task_id").to_pylist()
        return table.take(pa.array(sorted(range(table.num_rows), key=lambda i: rank[ids[i]]))), chosen

    def merged_details(self, chosen: dict[str, str], schema: pa.Schema) -> pa.Table:
        """The detail rows of the parts `merge` chose, task by task."""
        tables = []
        for part in sorted(self.folder.glob("details-*.parquet")):
            t = pq.read_table(part)
            name = part.stem.removeprefix("details-")
            tables.append(t.filter(pa.array([chosen.get(tid) == name for tid in t.column("task_id").to_pylist()],
                                            type=pa.bool_())))
        return pa.concat_tables(tables) if tables else schema.empty_table()


# ---------------------------------------------------------------- subset pools


@functools.lru_cache(maxsize=4)
def pool_tasks(path: str) -> dict:
    """{task_id: Task} of a pool (read once per process)."""
    from raysys.pools import load_pool

    return {t.task_id: t for t in load_pool(path).tasks}


def pool_copy(pool: str, path: Path) -> str:
    """The pool (any format raysys reads) as canonical Parquet at `path`, written once and
    atomically: a file there is complete."""
    if not path.is_file():
        from raysys.pools import load_pool, write_parquet_tasks

        write_parquet_tasks(list(load_pool(pool).tasks), path)
    return str(path)


def as_parquet(pool: str, path: Path) -> str:
    """The pool itself when it is a Parquet file, else its canonical copy at `path`."""
    return str(pool) if str(pool).endswith(".parquet") and Path(pool).is_file() else pool_copy(pool, path)


def subset_pool(pool: str, task_ids: Sequence[str], path: Path) -> str:
    """The tasks (in the given order, once each) as their own Parquet pool at `path`,
    written once and atomically: a file there is complete, so a rerun finds the same
    pool file and resumes its parts. An id not in the pool is a RaysysError."""
    from raysys.pools import write_parquet_tasks

    if not path.is_file():
        tasks = pool_tasks(str(pool))
        missing = [t for t in task_ids if t not in tasks]
        if missing:
            raise RaysysError(f"{len(missing)} task id(s) are not in {pool} (e.g. {missing[0]!r})")
        write_parquet_tasks([tasks[t] for t in dict.fromkeys(task_ids)], path)
    return str(path)


# ---------------------------------------------------------------- atomic folders


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a new temporary folder beside `target`; on success it replaces `target`
    whole (with the usual permissions), on failure it is removed and `target` is left
    as it was."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as e:
        raise InvalidFile(target, f"cannot write here ({e.strerror or e})") from None
    try:
        yield tmp
        publish_dir(tmp)
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


# ---------------------------------------------------------------- CPU shares

MIN_CPU = 0.25  # the smallest CPU share an actor or a training worker gets


def cpu_share(n: int, cpus: float, what: str) -> tuple[float, int]:
    """(CPUs per process, torch threads per process) for `n` actors or workers on `cpus`
    CPUs, one of which stays free for Ray Data's tasks; a RaysysError naming `what`
    ("2 scorer actor(s)") when they do not fit."""
    per = min(1.0, (cpus - 1) / n)
    if per < MIN_CPU:
        raise RaysysError(f"{what} need at least {cpus_needed(n):g} CPUs; the cluster has {cpus:g}")
    return per, max(1, int(cpus // n))


def cpus_needed(n: int) -> float:
    """The fewest CPUs that host `n` actors or workers (and Ray Data's tasks)."""
    return n * MIN_CPU + 1
