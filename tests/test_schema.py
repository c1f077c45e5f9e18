"""The canonical task: row round trip, Arrow schema, validation."""
from __future__ import annotations

import pyarrow as pa

from raysys.schema import TASK_SCHEMA, Demonstration, Instance, Task, from_row, problems, to_row, to_table

TASK = Task(
    task_id="t1", instruction="Say hi.", source="test", is_classification=None,
    instances=(Instance("a", "x", ("hi", "hello")), Instance("b", "", ("hey",))),
    demonstrations=(Demonstration("q", "hi"),), categories=("Greeting",), metadata={"split": "train", "n": 2},
)


def test_row_round_trip_and_schema():
    assert from_row(to_row(TASK)) == TASK
    table = to_table([TASK, TASK])
    assert table.schema.equals(TASK_SCHEMA, check_metadata=False)
    assert [from_row(r) for r in table.to_pylist()] == [TASK, TASK]
    assert table.column("is_classification").null_count == 2
    assert pa.types.is_string(table.schema.field("metadata").type)


def test_problems_found():
    bad = Task(task_id=" ", instruction="  ", instances=())
    found = problems(bad)
    assert "empty task_id" in found and "empty instruction" in found and "task has zero instances" in found
    dup = Task("t", "i", (Instance("a", "", ("o",)), Instance("a", "", ())))
    found = problems(dup)
    assert any("duplicate instance id" in f for f in found) and any("no reference output" in f for f in found)
    assert problems(TASK) == []
