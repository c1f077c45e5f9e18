"""The greedy answers a scoring found, and scoring them again: the one home of
`(task_id, instance_id) -> answer`.

A scores file keeps each task's answers (column `answers`: one {instance_id, answer} per
sampled instance). `ScoringConfig.answers_from` names such a file: a scoring with it
decodes nothing and scores those answers instead of the model's own, so U before and
after training is measured on the same answers (the novelty check scores the base
model's answers under the trained model). Racing's later rounds score round 0's answers
the same way (raysys.scoring.race_rounds).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from raysys.errors import InvalidFile
from raysys.schema import Task

COLUMN = "answers"
Answers = dict[tuple[str, str], str]  # (task_id, instance_id) -> the greedy answer


def answers_of(details: Sequence[dict]) -> Answers:
    """The greedy answers of scoring detail rows (the targets of j = 0)."""
    return {(r["task_id"], r["instance_id"]): r["target"] for r in details if r["perturbation"] == 0}


def column(instance_ids: Sequence[str], answers: Sequence[str]) -> list[dict[str, str]]:
    """A task's cell of the `answers` column."""
    return [{"instance_id": i, "answer": a} for i, a in zip(instance_ids, answers, strict=True)]


def read_answers(path: str | Path) -> Answers:
    """The answers a scores file holds; a clear error when it holds none."""
    import pyarrow.parquet as pq

    p = Path(path)
    if not p.is_file():
        raise InvalidFile(p, "no such scores file (answers_from names the scores whose answers to score)")
    if COLUMN not in pq.read_schema(p).names:
        raise InvalidFile(p, f"no {COLUMN} column: scored before raysys stored the answers; score it again")
    table = pq.read_table(p, columns=["task_id", COLUMN]).to_pylist()
    return {(r["task_id"], a["instance_id"]): a["answer"] for r in table for a in (r[COLUMN] or [])}


def given_answers(answers: Answers, tasks: Sequence[Task], instances: Sequence[Sequence[str]],
                  source: str | Path) -> list[str]:
    """The answers of each task's sampled `instances` (ids, task after task), in that order;
    an instance without one is an error naming the file and the task."""
    out = []
    for task, ids in zip(tasks, instances, strict=True):
        for i in ids:
            if (task.task_id, i) not in answers:
                raise InvalidFile(source, f"task {task.task_id!r} instance {i!r} has no answer: the file scored "
                                          "other tasks or instances (the same pool, instances and seed are needed)")
            out.append(answers[(task.task_id, i)])
    return out
