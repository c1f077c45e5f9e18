"""Atomic file output: write to a temporary name beside the target, then rename.

A reader never sees a half-written file, and an interrupted run leaves the previous
output (or nothing) in place.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from raysys.errors import InvalidFile


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto `path` on success.

    An output that cannot be written (a folder in the way, no permission) raises
    InvalidFile naming it, and the temporary file is removed either way.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as e:
        raise InvalidFile(target, f"cannot write here ({e.strerror or e})") from None
    os.close(fd)
    try:
        yield Path(tmp)
        try:
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
            os.replace(tmp, target)
        except OSError as e:
            raise InvalidFile(target, f"cannot write ({e.strerror or e})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_dir(tmp: str | os.PathLike) -> None:
    """Give a folder made by tempfile.mkdtemp (0700) the usual permissions before renaming it."""
    os.chmod(tmp, 0o777 & ~_umask())


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file's value; a missing or undecodable file is InvalidFile naming it."""
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidFile(p, "no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidFile(p, f"not valid JSON ({e})") from None


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> None:
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def write_parquet(path: str | os.PathLike, table: pa.Table) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
