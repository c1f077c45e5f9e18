"""What a reader yields: a located task, or an InvalidRecord for the loader to judge."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Union

from raysys.errors import InvalidRecord
from raysys.schema import Task


@dataclass(frozen=True)
class Record:
    source: str  # file the task came from
    where: str  # the record inside it: "line 3", "index 12", "task task042"
    task: Task


Item = Union[Record, InvalidRecord]
Reader = Iterator[Item]


def require(obj: dict, key: str, source, where: str, kind: type = str):
    """obj[key] checked for presence and type, else an InvalidRecord to raise."""
    if not isinstance(obj, dict):
        raise InvalidRecord(source, where, f"expected a JSON object, got {type(obj).__name__}")
    if key not in obj or obj[key] is None:
        raise InvalidRecord(source, where, f"missing required field {key!r}")
    if not isinstance(obj[key], kind):
        raise InvalidRecord(
            source, where, f"field {key!r} must be {kind.__name__}, got {type(obj[key]).__name__}"
        )
    return obj[key]
