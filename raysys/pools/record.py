"""What a reader yields: a located task, or an InvalidRecord for the loader to judge; how
readers check a record's fields (`fields_of`); and rows read through a library that may
fail on a corrupt file (`library_rows`)."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Union

from raysys.errors import InvalidFile, InvalidRecord, first_line
from raysys.jsontypes import FieldError
from raysys.schema import Task


@dataclass(frozen=True)
class Record:
    source: str  # file the task came from
    where: str  # the record inside it: "line 3", "index 12", "task task042"
    task: Task


Item = Union[Record, InvalidRecord]
Reader = Iterator[Item]


@contextmanager
def fields_of(source, where: str) -> Iterator[None]:
    """Turn a FieldError (raysys.jsontypes) raised inside into an InvalidRecord naming the
    file and the record; the message already names the field."""
    try:
        yield
    except FieldError as e:
        raise InvalidRecord(source, where, str(e)) from None



def library_rows(source, rows: Iterable[Any]) -> Iterator[tuple[int, Any]]:
    """(index, row) for each row a library (pyarrow, datasets) reads. Corrupt data surfaces
    as many exception types there (ArrowInvalid, OSError, UnicodeDecodeError, even
    SystemError), so any error while reading the next row is an InvalidFile naming the row
    reading stopped at; errors in the caller's own handling of a row are not caught."""
    it = iter(rows)
    index = 0
    while True:
        try:
            row = next(it)
        except StopIteration:
            return
        except Exception as e:  # the file's fault, whatever pyarrow calls it
            raise InvalidFile(source, f"row {index} onwards cannot be read "
                                      f"({type(e).__name__}: {first_line(e)})") from None
        yield index, row
        index += 1
