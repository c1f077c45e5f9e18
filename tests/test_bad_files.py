"""Files that cannot be parsed, whatever the reason, for each format: each is a one-line
RaysysError naming the file (and the record or line where there is one), never a
traceback. A broken record inside a pool (a JSONL line, an NIV2 task file) is skippable and
listed in the skip report; a broken whole file is not.

Direct load_pool / reader calls for every case; a real CLI subprocess for a few.
"""
from __future__ import annotations

import builtins
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_bad_input import assert_clean_error, cli, read_report

from raysys.errors import InvalidFile, InvalidRecord
from raysys.io import read_json, write_json, write_jsonl
from raysys.pools.canonical import write_parquet_tasks
from raysys.pools.load import load_pool
from raysys.schema import Instance, Task

DEEP = "[" * 100_000 + "]" * 100_000
HUGE_INT = "9" * 5000
GOOD_SI = json.dumps({"id": "a", "instruction": "Echo.", "instances": [{"input": "x", "output": "x"}]})
GOOD_NIV2 = json.dumps({"Definition": ["Echo."], "Instances": [{"id": "i", "input": "x", "output": ["x"]}]})
TASK = Task(task_id="t", instruction="Copy.", instances=(Instance("t-0", "x", ("x",)),))


@dataclass(frozen=True)
class Bad:
    fmt: str | None  # passed to load_pool (None: detected)
    name: str  # file (or folder) to create
    content: bytes | None  # None: a folder
    reason: str  # a part of the reason
    where: str | None = None  # the record (per-record, skippable) or None (the whole file)


def text(s: str) -> bytes:
    return s.encode("utf-8")


# Whole-file problems: JSON documents, Parquet files.
WHOLE = {
    "json-empty": Bad("alpaca", "a.json", b"", "empty file"),
    "json-blank": Bad("alpaca", "a.json", b" \n\t\n", "empty file"),
    "json-bom-only": Bad("alpaca", "a.json", b"\xef\xbb\xbf", "empty file"),
    "json-empty-detected": Bad(None, "a.json", b"", "empty file"),
    "json-truncated": Bad("alpaca", "a.json", text('[{"instruction": "Add.",\n "output": "3"'),
                          "malformed JSON at line 2 column"),
    "json-trailing-data": Bad("alpaca", "a.json", text('[]\n[]'), "malformed JSON at line 2 column 1: Extra data"),
    "json-nan": Bad("alpaca", "a.json", text('[{"instruction": "Add.", "output": NaN}]'),
                    "malformed JSON at line 1 column 36: NaN is not a JSON value"),
    "json-float-overflow": Bad("alpaca", "a.json", text('[{"x": 1e999}]'), "number 1e999 is too large"),
    "json-huge-int": Bad("alpaca", "a.json", text('[\n' + HUGE_INT + ']'),
                         "malformed JSON at line 2 column 1: an integer has more than"),
    "json-deep": Bad("alpaca", "a.json", text(DEEP), "malformed JSON: nested too deeply"),
    "json-lone-surrogate": Bad("alpaca", "a.json", text('[{"instruction": "\\ud800", "output": "x"}]'),
                               "lone surrogate"),
    "json-top-number": Bad("alpaca", "a.json", b"42", "expected a JSON array of entries, got number"),
    "json-top-string": Bad("alpaca", "a.json", b'"x"', "expected a JSON array of entries, got string"),
    "json-top-null": Bad("alpaca", "a.json", b"null", "expected a JSON array of entries, got null"),
    "json-top-object": Bad("alpaca", "a.json", b"{}", "expected a JSON array of entries, got object"),
    "json-top-number-detected": Bad(None, "a.json", b"42", "cannot detect the format"),
    "json-folder": Bad("alpaca", "a.json", None, "is a folder, expected a file"),
    "jsonl-folder": Bad("self_instruct", "a.jsonl", None, "is a folder, expected a file"),
    "jsonl-empty-detected": Bad(None, "a.jsonl", b"", "empty file"),
    "jsonl-blank-lines-explicit": Bad("jsonl", "a.jsonl", b"\n \n", "no tasks found"),
    "jsonl-only-bad-lines-detected": Bad(None, "a.jsonl", b"NaN\n[1]\n", "no line is a JSON object (line 1:"),
    "parquet-empty": Bad(None, "p.parquet", b"", "not a readable Parquet file"),
    "parquet-garbage": Bad(None, "p.parquet", b"PAR1 this is not parquet", "not a readable Parquet file"),
    "parquet-json-inside": Bad(None, "p.parquet", text(GOOD_SI), "not a readable Parquet file"),
    "parquet-folder": Bad("parquet", "p.parquet", None, "not a readable Parquet file"),
    "niv2-splits-not-utf8": Bad("niv2", "niv2", None, "not valid UTF-8 at line 2"),
    "hf-corrupt-dataset-info": Bad("hf", "hf", None, "cannot load Hugging Face dataset"),
}

# Per-record problems: one bad JSONL line or NIV2 task file among good ones.
PER_RECORD = {
    "jsonl-nan": Bad("self_instruct", "s.jsonl", text('{"id": "b", "instruction": NaN}'),
                     "malformed JSON at column 28: NaN is not a JSON value", "line 2"),
    "jsonl-infinity": Bad("self_instruct", "s.jsonl", text('{"id": "b", "x": -Infinity}'),
                          "-Infinity is not a JSON value", "line 2"),
    "jsonl-float-overflow": Bad("self_instruct", "s.jsonl", text('{"id": "b", "x": -1e400}'),
                                "number -1e400 is too large", "line 2"),
    "jsonl-huge-int": Bad("self_instruct", "s.jsonl", text('{"x": ' + HUGE_INT + '}'),
                          "malformed JSON at column 7: an integer has more than", "line 2"),
    "jsonl-deep": Bad("self_instruct", "s.jsonl", text(DEEP), "nested too deeply", "line 2"),
    "jsonl-lone-surrogate": Bad("self_instruct", "s.jsonl", text('{"id": "b", "instruction": "\\udc00"}'),
                                "lone surrogate", "line 2"),
    "jsonl-truncated": Bad("self_instruct", "s.jsonl", text('{"id": "b", "instruction": "Ec'),
                           "malformed JSON at column", "line 2"),
    "jsonl-not-utf8": Bad("self_instruct", "s.jsonl", b'{"id": "b", "instruction": "\xc3\x28"}',
                          "not valid UTF-8", "line 2"),
    "jsonl-array-line": Bad("self_instruct", "s.jsonl", b"[1, 2]", "expected a JSON object, got array", "line 2"),
    "jsonl-null-line": Bad("self_instruct", "s.jsonl", b"null", "expected a JSON object, got null", "line 2"),
    "niv2-empty-task": Bad("niv2", "niv2", b"", "empty file", "task task002_b"),
    "niv2-deep-task": Bad("niv2", "niv2", text(DEEP), "nested too deeply", "task task002_b"),
    "niv2-huge-int-task": Bad("niv2", "niv2", text('{"Definition": ' + HUGE_INT + '}'),
                              "an integer has more than", "task task002_b"),
    "niv2-nan-task": Bad("niv2", "niv2", text('{"Definition": ["x"],\n "Instances": [NaN]}'),
                         "malformed JSON at line 2 column 16: NaN is not a JSON value", "task task002_b"),
    "niv2-array-task": Bad("niv2", "niv2", text("[]"), "expected a JSON object, got array", "task task002_b"),
    "niv2-folder-task": Bad("niv2", "niv2", None, "is a folder, expected a file", "task task002_b"),
}


def build(tmp: Path, bad: Bad) -> tuple[Path, Path]:
    """(what to load, the file the error must name)."""
    p = tmp / bad.name
    if bad.fmt == "niv2":
        tasks = p / "tasks"
        tasks.mkdir(parents=True)
        (tasks / "task001_a.json").write_text(GOOD_NIV2, encoding="utf-8")
        (tasks / "task003_c.json").write_text(GOOD_NIV2, encoding="utf-8")
        if bad.where is None:  # the splits list is broken
            (p / "splits").mkdir()
            (p / "splits" / "train_tasks.txt").write_bytes(b"task001_a\ntask\xff\n")
            return p, p / "splits" / "train_tasks.txt"
        bad_task = tasks / "task002_b.json"
        if bad.content is None:
            bad_task.mkdir()
        else:
            bad_task.write_bytes(bad.content)
        return p, bad_task
    if bad.fmt == "hf":
        p.mkdir()
        (p / "dataset_info.json").write_text("{not json", encoding="utf-8")
        (p / "state.json").write_text("{not json", encoding="utf-8")
        return p, p
    if bad.content is None:
        p.mkdir()
    elif bad.where is not None:  # a bad line between two good ones
        p.write_bytes(text(GOOD_SI) + b"\n" + bad.content + b"\n" + text(GOOD_SI.replace('"a"', '"c"')) + b"\n")
    else:
        p.write_bytes(bad.content)
    return p, p


@pytest.mark.parametrize("name", list(WHOLE))
def test_unparseable_file_is_one_line_naming_it(tmp_path, name):
    bad = WHOLE[name]
    path, bad_file = build(tmp_path, bad)
    for skip in (False, True):  # a whole file is never skipped
        with pytest.raises(InvalidFile) as info:
            load_pool(path, bad.fmt, skip_invalid=skip)
        message = str(info.value)
        assert message.startswith(f"{bad_file}: ") and bad.reason in message, message
        assert "\n" not in message


@pytest.mark.parametrize("name", list(PER_RECORD))
def test_unparseable_record_is_named_and_skippable(tmp_path, name):
    bad = PER_RECORD[name]
    path, bad_file = build(tmp_path, bad)
    with pytest.raises(InvalidRecord) as info:
        load_pool(path, bad.fmt)
    assert str(info.value).startswith(f"{bad_file}: {bad.where}: ")
    assert bad.reason in info.value.reason and "\n" not in str(info.value)
    pool = load_pool(path, bad.fmt, skip_invalid=True)
    assert len(pool.tasks) == 2
    assert [(s.source, s.where) for s in pool.skipped] == [(str(bad_file), bad.where)]


def test_truncated_parquet(tmp_path):
    good = tmp_path / "good.parquet"
    write_parquet_tasks([TASK] * 50, good)
    data = good.read_bytes()
    for cut in (len(data) // 2, len(data) - 8, 4):
        p = tmp_path / f"cut{cut}.parquet"
        p.write_bytes(data[:cut])
        with pytest.raises(InvalidFile, match="not a readable Parquet file") as info:
            load_pool(p)
        assert str(info.value).startswith(f"{p}: ") and "\n" not in str(info.value)


def test_corrupt_parquet_anywhere_is_a_clean_error(tmp_path):
    # Bytes overwritten at offsets across the file: pages, page headers, the footer.
    good = tmp_path / "good.parquet"
    write_parquet_tasks([TASK] * 10, good)
    data = good.read_bytes()
    p = tmp_path / "pool.parquet"
    failures = 0
    for start in range(4, len(data) - 8, 61):
        p.write_bytes(data[:start] + b"\xff" * 16 + data[start + 16:])
        try:
            load_pool(p, skip_invalid=True)
        except (InvalidFile, InvalidRecord) as e:  # anything else fails the test
            failures += 1
            assert str(e).startswith(f"{p}: ") and str(e).isprintable(), str(e)
    assert failures > 10


def test_corrupt_hf_dataset_rows_are_a_clean_error(tmp_path):
    # datasets memory-maps the Arrow file: corrupt bytes surface while rows are read.
    import datasets

    path = tmp_path / "hf"
    rows = [{"instruction": f"Do {i}.", "input": "", "output": "x" * 50} for i in range(200)]
    datasets.Dataset.from_list(rows).save_to_disk(str(path))
    (arrow,) = path.glob("*.arrow")
    data = arrow.read_bytes()
    for frac in (0.3, 0.5, 0.8):
        at = int(len(data) * frac)
        arrow.write_bytes(data[:at] + b"\xff" * 64 + data[at + 64:])
        with pytest.raises(InvalidFile, match=r"row \d+ onwards cannot be read") as info:
            load_pool(path, skip_invalid=True)
        assert str(info.value).startswith(f"{path}: ")


def test_parquet_missing_column(tmp_path):
    p = tmp_path / "pool.parquet"
    pq.write_table(pa.table({"task_id": ["t"], "instruction": ["Copy."]}), p)
    with pytest.raises(InvalidFile, match=r"missing columns \['instances'\]"):
        load_pool(p)


@pytest.mark.parametrize("name, fmt", [("a.json", "alpaca"), ("a.jsonl", "self_instruct"), ("niv2", "niv2")])
def test_permission_denied(tmp_path, monkeypatch, name, fmt):
    # Simulated (the tests may run as root, who reads anything): opening the file fails.
    if fmt == "niv2":
        (tmp_path / "niv2" / "tasks").mkdir(parents=True)
        p = tmp_path / "niv2" / "tasks" / "task001_a.json"
    else:
        p = tmp_path / name
    p.write_text(GOOD_SI if fmt != "niv2" else GOOD_NIV2, encoding="utf-8")
    real_open = io.open

    def denied(file, *args, **kwargs):
        if str(file) == str(p):
            raise PermissionError(13, "Permission denied", str(p))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(io, "open", denied)
    monkeypatch.setattr(builtins, "open", denied)
    with pytest.raises((InvalidFile, InvalidRecord)) as info:
        load_pool(tmp_path / name, fmt)
    assert str(info.value).startswith(f"{p}: ") and str(info.value).endswith("permission denied")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files without permission")
def test_permission_denied_parquet(tmp_path):
    p = tmp_path / "p.parquet"
    write_parquet_tasks([TASK], p)
    p.chmod(0)
    with pytest.raises(InvalidFile) as info:
        load_pool(p)
    assert str(info.value).startswith(f"{p}: ")


# ---------------------------------------------------------------- raysys.io: the one JSON reader

def test_read_json_is_strict_and_names_the_file(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"a": [1,\n Infinity]}', encoding="utf-8")
    with pytest.raises(InvalidFile) as info:
        read_json(p)
    assert str(info.value) == f"{p}: malformed JSON at line 2 column 2: Infinity is not a JSON value"
    with pytest.raises(InvalidFile, match="no such file"):
        read_json(tmp_path / "missing.json")


def test_raysys_writes_json_it_can_read_back(tmp_path):
    # JSON has no NaN: a missing number is written as null, so raysys's own files stay readable.
    write_json(tmp_path / "r.json", {"loss": float("nan"), "rows": [{"em": float("inf")}, {"em": 0.5}]})
    assert read_json(tmp_path / "r.json") == {"loss": None, "rows": [{"em": None}, {"em": 0.5}]}
    write_jsonl(tmp_path / "r.jsonl", [{"x": float("-inf")}])
    assert (tmp_path / "r.jsonl").read_text(encoding="utf-8") == '{"x": null}\n'


# ---------------------------------------------------------------- the CLI (real subprocesses)

def test_cli_nan_in_a_jsonl_pool_is_one_line_then_skippable(tmp_path):
    path, bad_file = build(tmp_path, PER_RECORD["jsonl-nan"])
    run = cli("pool", "inspect", path, "--json", cwd=tmp_path)
    assert_clean_error(run, f"{bad_file}: line 2: malformed JSON at column 28: NaN is not a JSON value")
    assert len(run.stderr.strip().splitlines()) == 1
    report = tmp_path / "R.jsonl"
    run = cli("pool", "inspect", path, "--json", "--skip-invalid", "--skip-report", report, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert [(r["where"], "NaN" in r["reason"]) for r in read_report(report)] == [("line 2", True)]


def test_cli_truncated_parquet_is_one_line(tmp_path):
    good = tmp_path / "good.parquet"
    write_parquet_tasks([TASK], good)
    p = tmp_path / "cut.parquet"
    p.write_bytes(good.read_bytes()[:-20])
    run = cli("pool", "inspect", p, "--skip-invalid", cwd=tmp_path)
    assert_clean_error(run, str(p), "not a readable Parquet file")
    assert len(run.stderr.strip().splitlines()) == 1
