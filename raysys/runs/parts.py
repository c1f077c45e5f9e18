"""Part files: a run on an actor pool writes each finished batch as part files in its run
folder: `details-<id>.parquet` first (when kept), then `scores-<id>.parquet`, the commit
record of the batch. `Parts` finds what is done and merges the parts into one row per
task, the first part winning when a retried batch wrote a task twice; the details kept
are those of the winning part. Knows nothing of models or Ray.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from raysys.errors import RaysysError
from raysys.io import write_parquet


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
