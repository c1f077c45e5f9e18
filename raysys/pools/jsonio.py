"""Reading JSONL with errors that name the file and the record.

`iter_jsonl` yields an `InvalidRecord` for a bad line and goes on, so the pool loader can
skip it. Lines are parsed as strictly as whole documents (raysys.io.read_json, the reader
of JSON files): NaN, Infinity and the like are malformed JSON.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from raysys.errors import InvalidRecord
from raysys.io import cannot_read
from raysys.jsontypes import NotJSON, loads

_BOM = b"\xef\xbb\xbf"


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any] | InvalidRecord]:
    """(line number, parsed object) for each non-blank line, or an InvalidRecord.

    A file that cannot be opened or read is an InvalidFile (not skippable)."""
    try:
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                if lineno == 1 and raw.startswith(_BOM):
                    raw = raw[len(_BOM) :]
                item = _line(path, lineno, raw)
                if item is not None:
                    yield item
    except OSError as e:  # a folder, no permission, an I/O error while reading
        raise cannot_read(path, e) from None


def _line(path: Path, lineno: int, raw: bytes) -> tuple[int, Any] | InvalidRecord | None:
    where = f"line {lineno}"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return InvalidRecord(path, where, f"not valid UTF-8 (byte {e.start} of the line)")
    if not text.strip():
        return None
    try:
        return lineno, loads(text)
    except NotJSON as e:
        at = f" at column {e.colno}" if e.colno is not None else ""
        return InvalidRecord(path, where, f"malformed JSON{at}: {e.msg}")
