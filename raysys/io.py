"""Files in and out.

Output is atomic: write to a temporary name beside the target, then rename. A reader
never sees a half-written file, and an interrupted run leaves the previous output (or
nothing) in place. JSON is written strictly (NaN and Infinity, which are not JSON, are
written as null) so that raysys can read back what it writes.

Input: `read_json` is the one reader of JSON documents (user files and raysys's own
alike): strict JSON (raysys.jsontypes.loads), and any file that cannot be read, decoded
or parsed is an InvalidFile naming it and the line. JSONL is read line by line in
raysys.pools.jsonio, with the same parser.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from raysys.errors import InvalidFile
from raysys.jsontypes import NotJSON, loads


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
            os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600; outputs get the usual permissions
            os.replace(tmp, target)
        except OSError as e:
            raise InvalidFile(target, f"cannot write ({e.strerror or e})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_dir(tmp: str | os.PathLike) -> None:
    """Give a folder made by tempfile.mkdtemp (0700) the usual permissions before renaming it."""
    os.chmod(tmp, 0o777 & ~umask())


def cannot_read(path: str | os.PathLike, e: OSError) -> InvalidFile:
    """The InvalidFile for a file that could not be opened or read."""
    if isinstance(e, FileNotFoundError):
        reason = "no such file"
    elif isinstance(e, IsADirectoryError):
        reason = "is a folder, expected a file"
    elif isinstance(e, PermissionError):
        reason = "permission denied"
    else:
        reason = f"cannot read ({e.strerror or e})"
    return InvalidFile(path, reason)


def read_bytes(path: str | os.PathLike) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise cannot_read(path, e) from None


def decode(data: bytes, source: str | os.PathLike) -> str:
    """UTF-8 text of `data` (a leading BOM is dropped), or InvalidFile naming the line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InvalidFile(source, f"not valid UTF-8 at line {line} (byte offset {e.start})") from None


def parse_json(text: str, source: str | os.PathLike) -> Any:
    """The value of a JSON document, or InvalidFile naming `source` and the line."""
    if not text.strip():
        raise InvalidFile(source, "empty file, expected a JSON document")
    try:
        return loads(text)
    except NotJSON as e:
        at = f" at line {e.lineno} column {e.colno}" if e.lineno is not None else ""
        raise InvalidFile(source, f"malformed JSON{at}: {e.msg}") from None


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file's value; see the module docstring for what is refused."""
    return parse_json(decode(read_bytes(path), path), path)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, _dumps(obj, indent=2) + "\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> None:
    write_text(path, "".join(_dumps(r) + "\n" for r in rows))


def _dumps(obj: Any, indent: int | None = None) -> str:
    try:
        return json.dumps(obj, indent=indent, ensure_ascii=False, allow_nan=False)
    except ValueError:  # a NaN or an infinity somewhere: JSON spells a missing number null
        return json.dumps(_finite(obj), indent=indent, ensure_ascii=False, allow_nan=False)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_rows_csv(path: str | os.PathLike, rows: Iterable[dict], columns: Iterable[str]) -> None:
    """An experiment's rows as a CSV with these columns in this order (a missing value is
    an empty cell), written atomically."""
    import pandas as pd

    cols = list(columns)
    with atomic_path(path) as tmp:
        pd.DataFrame([{c: r.get(c) for c in cols} for r in rows], columns=cols).to_csv(tmp, index=False)


def write_parquet(path: str | os.PathLike, table: pa.Table) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)

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
