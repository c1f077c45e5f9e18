"""Loading a pool: format detection, validation, duplicate ids, and the skip report.

`load_pool` reads any supported format into a `Pool`. Every task is validated
(raysys.schema.problems), task ids must be unique, and tasks without a source flag get
one from raysys.pools.classify. A bad record raises InvalidRecord naming the file and the
record, unless skip_invalid is set: then it is kept in `Pool.skipped` with its reason
(write it with `write_skip_report`) and loading goes on. Nothing is dropped silently.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from raysys.errors import InvalidFile, InvalidRecord
from raysys.io import cannot_read, write_jsonl
from raysys.pools import alpaca, canonical, conversation, hf, niv2, self_instruct
from raysys.pools.classify import with_flag
from raysys.pools.jsonio import iter_jsonl
from raysys.pools.record import Record
from raysys.schema import Task, problems

FORMATS = ("niv2", "alpaca", "self_instruct", "jsonl", "parquet", "hf", "messages", "sharegpt")


@dataclass(frozen=True)
class Skipped:
    source: str
    where: str
    reason: str


@dataclass(frozen=True)
class Pool:
    path: str
    format: str
    tasks: tuple[Task, ...]
    skipped: tuple[Skipped, ...] = ()


def detect_format(path: str | Path) -> str:
    """The format of `path`, from its layout, extension and first record."""
    text = str(path)
    if text.startswith("hf:"):
        return "hf"
    p = Path(path)
    if not p.exists():
        raise InvalidFile(p, "no such file or folder")
    if p.is_dir():
        if any((p / f).exists() for f in ("dataset_info.json", "state.json", "dataset_dict.json")):
            return "hf"
        if (p / "tasks").is_dir() or any(p.glob("*.json")):
            return "niv2"
        raise InvalidFile(p, "folder is neither an NIV2 task folder nor a Hugging Face dataset")
    if p.suffix == ".parquet":
        return _parquet_format(p)
    if p.suffix == ".json":
        try:
            with open(p, "rb") as f:
                head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
        except OSError as e:
            raise cannot_read(p, e) from None
        if not head:
            raise InvalidFile(p, "empty file")
        if head.startswith(b"["):
            return _first_element_format(p)
        if head.startswith(b"{"):
            return "niv2"
        raise InvalidFile(p, "cannot detect the format of this JSON file; pass --format")
    if p.suffix == ".jsonl":
        first = _first_jsonl_record(p)
        if "instances" not in first and (found := conversation.format_of_columns(first)):
            return found
        if "task_id" in first:
            return "jsonl"
        if "instances" in first:
            return "self_instruct"
        if "instruction" in first and "output" in first:
            return "alpaca"
        raise InvalidFile(p, f"line 1 has fields {sorted(first)}: cannot detect the format; pass --format")
    raise InvalidFile(p, f"unknown file type {p.suffix!r}; pass --format (one of {', '.join(FORMATS)})")


def _parquet_format(p: Path) -> str:
    """parquet (raysys's own), or messages / sharegpt by the file's columns."""
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(p).names
    except Exception:  # noqa: BLE001  (not Parquet: the canonical reader says so, naming the file)
        return "parquet"
    return "parquet" if "instances" in names else (conversation.format_of_columns(names) or "parquet")


def _first_element_format(p: Path) -> str:
    """A JSON array of Alpaca entries, or of messages / ShareGPT rows (by its first element;
    read from the file's first 64 KiB when it fits there, else from the whole file)."""
    import json

    try:
        with open(p, "rb") as f:
            head = f.read(1 << 16).decode("utf-8", "ignore").lstrip("\ufeff \t\r\n")[1:].lstrip()
        first, _ = json.JSONDecoder().raw_decode(head)
    except (OSError, ValueError):
        from raysys.io import read_json

        data = read_json(p)
        first = data[0] if isinstance(data, list) and data else None
    return (conversation.format_of_columns(first) if isinstance(first, dict) else None) or "alpaca"


def _first_jsonl_record(p: Path) -> dict:
    """The first line that parses as a JSON object: a bad line before it is left for the
    reader to report (or skip), so detection never blocks --skip-invalid."""
    first_bad = None
    for item in iter_jsonl(p):
        if isinstance(item, InvalidRecord):
            first_bad = first_bad or f"{item.where}: {item.reason}"
            continue
        lineno, rec = item
        if isinstance(rec, dict):
            return rec
        first_bad = first_bad or f"line {lineno} is not a JSON object"
    if first_bad:
        raise InvalidFile(p, f"no line is a JSON object ({first_bad}): cannot detect the format")
    raise InvalidFile(p, "empty file")


def _reader(path: str | Path, fmt: str, split: str | None, task_column: str | None):
    p = Path(path)
    if fmt in conversation.LAYOUTS:
        if str(path).startswith("hf:") or p.is_dir():
            return hf.read(path, split, task_column, fmt)
        return conversation.read(path, fmt, task_column, split)
    if fmt == "niv2":
        return niv2.read(p, split)
    if fmt == "alpaca":
        return alpaca.read(p)
    if fmt == "self_instruct":
        return self_instruct.read(p)
    if fmt == "jsonl":
        return canonical.read_jsonl(p)
    if fmt == "parquet":
        return canonical.read_parquet(p)
    if fmt == "hf":
        return hf.read(path, split, task_column)
    raise InvalidFile(path, f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")


def load_pool(
    path: str | Path,
    fmt: str | None = None,
    *,
    skip_invalid: bool = False,
    split: str | None = None,
    task_column: str | None = None,
) -> Pool:
    """Read, validate and de-duplicate a pool; see the module docstring. `task_column`:
    conversational rows' grouping (raysys.pools.conversation; None: the default rule)."""
    fmt = fmt or detect_format(path)
    hub = str(path).startswith("hf:")
    if fmt != "hf" and not hub and not Path(path).exists():
        raise InvalidFile(path, "no such file or folder")
    if split is not None and not (fmt in ("niv2", "hf") or hub or Path(path).is_dir()):
        raise InvalidFile(path, f"--split applies to niv2 and hf pools, not {fmt}")
    if task_column is not None and fmt not in ("hf", *conversation.LAYOUTS):
        raise InvalidFile(path, f"--task-column applies to conversational pools (messages, sharegpt), not {fmt}")
    tasks: list[Task] = []
    skipped: list[Skipped] = []
    first_seen: dict[str, str] = {}
    for item in _reader(path, fmt, split, task_column):
        try:
            if isinstance(item, InvalidRecord):
                raise item
            tasks.append(_checked(item, first_seen))
        except InvalidRecord as e:
            if not skip_invalid:
                raise
            skipped.append(Skipped(e.source, e.where, e.reason))
    if not tasks and not skipped:
        raise InvalidFile(path, "no tasks found")
    return Pool(path=str(path), format=fmt, tasks=tuple(tasks), skipped=tuple(skipped))


def _checked(rec: Record, first_seen: dict[str, str]) -> Task:
    found = problems(rec.task)
    if found:
        raise InvalidRecord(rec.source, rec.where, "; ".join(found))
    tid = rec.task.task_id
    if tid in first_seen:
        raise InvalidRecord(rec.source, rec.where, f"duplicate task_id {tid!r} (first at {first_seen[tid]})")
    first_seen[tid] = rec.where
    return with_flag(rec.task)


def write_skip_report(skipped: tuple[Skipped, ...] | list[Skipped], path: str | Path) -> None:
    """One JSON line per skipped record: source, where, reason (atomic)."""
    write_jsonl(path, ({"source": s.source, "where": s.where, "reason": s.reason} for s in skipped))
