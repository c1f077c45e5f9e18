"""Reading JSON and JSONL with errors that name the file and the record.

`read_json` fails for the whole file (one document); `iter_jsonl` yields an
`InvalidRecord` for a bad line and goes on, so the pool loader can skip it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from raysys.errors import InvalidFile, InvalidRecord

_BOM = b"\xef\xbb\xbf"


def decode(data: bytes, source: str | Path) -> str:
    """UTF-8 text of `data` (a leading BOM is dropped), or InvalidFile naming the line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InvalidFile(source, f"not valid UTF-8 at line {line} (byte offset {e.start})") from None


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InvalidFile(path, "no such file") from None
    except IsADirectoryError:
        raise InvalidFile(path, "is a folder, expected a file") from None
    except PermissionError:
        raise InvalidFile(path, "permission denied") from None


def parse_json(text: str, source: str | Path) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidFile(source, f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None


def read_json(path: Path) -> Any:
    return parse_json(decode(read_bytes(path), path), path)


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any] | InvalidRecord]:
    """(line number, parsed object) for each non-blank line, or an InvalidRecord."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if lineno == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
            where = f"line {lineno}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield InvalidRecord(path, where, f"not valid UTF-8 (byte {e.start} of the line)")
                continue
            if not text.strip():
                continue
            try:
                yield lineno, json.loads(text)
            except json.JSONDecodeError as e:
                yield InvalidRecord(path, where, f"malformed JSON at column {e.colno}: {e.msg}")
