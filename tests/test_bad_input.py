"""Bad input: every case gives a clear error naming the file and the record; per-record
cases can be skipped (skip_invalid / --skip-invalid) and are listed in the skip report.

The direct load_pool checks run on every case; the CLI (a real subprocess, ~0.5-2 s each)
runs on a few representative ones.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from raysys.errors import InvalidFile, InvalidRecord
from raysys.pools.canonical import write_parquet_tasks
from raysys.pools.load import load_pool, write_skip_report
from raysys.schema import Instance, Task

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- tiny-file builders

def si(task_id: str, instruction: str = "Repeat the input.", instances=None, **extra) -> dict:
    """A Self-Instruct record."""
    if instances is None:
        instances = [{"input": "hello", "output": "hello"}]
    return {"id": task_id, "instruction": instruction, "instances": instances, **extra}


def alp(instruction: str = "Add the numbers.", input: str = "1 2", output: str = "3") -> dict:
    """An Alpaca entry."""
    return {"instruction": instruction, "input": input, "output": output}


def canon(task_id: str, instruction: str = "Copy the input.") -> dict:
    """A canonical JSONL task."""
    return {"task_id": task_id, "instruction": instruction,
            "instances": [{"id": f"{task_id}-0", "input": "x", "outputs": ["x"]}], "metadata": {"k": task_id}}


def niv2_task(definition: str = "Answer yes or no.", instances=None) -> dict:
    if instances is None:
        instances = [{"id": "i-0", "input": "Is ice cold?", "output": ["yes"]}]
    return {"Definition": [definition], "Positive Examples": [{"input": "Is fire hot?", "output": "yes"}],
            "Negative Examples": [], "Instances": instances, "Categories": ["Question Answering"]}


def dump(obj) -> bytes:
    return json.dumps(obj).encode("utf-8")


def write_lines(path: Path, lines: list[bytes]) -> Path:
    """A JSONL file of raw byte lines (so a line can be broken on purpose)."""
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def write_niv2(folder: Path, tasks: dict[str, bytes]) -> Path:
    (folder / "tasks").mkdir(parents=True)
    for name, data in tasks.items():
        (folder / "tasks" / f"{name}.json").write_bytes(data)
    return folder


# ---------------------------------------------------------------- the cases

@dataclass(frozen=True)
class Built:
    path: Path  # what to load
    bad_file: Path  # the file the error must name
    where: str  # the record location the error must name
    reason: str  # a part of the reason
    good: tuple[str, ...] | None  # task ids kept with skip_invalid; None: whole-file error


def malformed_jsonl(tmp: Path) -> Built:
    p = write_lines(tmp / "si.jsonl", [
        dump(si("a")),
        b'{"id": "b", "instruction": "Echo.", "instances": [{"input": "x", "output": "x"}',
        dump(si("c")),
    ])
    return Built(p, p, "line 2", "malformed JSON at column", ("a", "c"))


def malformed_json_file(tmp: Path) -> Built:
    bad_line = '  {"instruction": "Sub." "input": "3 1", "output": "2"},'
    text = "[\n" + "  " + json.dumps(alp()) + ",\n" + bad_line + "\n  " + json.dumps(alp("Mul.")) + "\n]\n"
    p = tmp / "alpaca.json"
    p.write_text(text, encoding="utf-8")
    column = bad_line.index('"input"') + 1
    return Built(p, p, f"line 3 column {column}", "malformed JSON", None)


def alpaca_missing_output(tmp: Path) -> Built:
    entries = [alp(), {"instruction": "Sub.", "input": "3 1"}, alp("Mul.")]
    p = tmp / "alpaca.json"
    p.write_text(json.dumps(entries, indent=2), encoding="utf-8")
    return Built(p, p, "index 1", "missing required field 'output'", ("alpaca-00000", "alpaca-00002"))


def self_instruct_missing_instances(tmp: Path) -> Built:
    rec = si("b")
    del rec["instances"]
    p = write_lines(tmp / "si.jsonl", [dump(si("a")), dump(rec), dump(si("c"))])
    return Built(p, p, "line 2", "missing required field 'instances'", ("a", "c"))


def empty_instruction(tmp: Path) -> Built:
    p = write_lines(tmp / "alpaca.jsonl", [dump(alp()), dump(alp(" \t \n ")), dump(alp("Mul."))])
    return Built(p, p, "line 2", "empty instruction", ("alpaca-00000", "alpaca-00002"))


def niv2_empty_definition(tmp: Path) -> Built:
    folder = write_niv2(tmp / "niv2", {"task001_ok": dump(niv2_task()), "task002_blank": dump(niv2_task("   "))})
    return Built(folder, folder / "tasks" / "task002_blank.json", "task task002_blank", "empty instruction",
                 ("task001_ok",))


def duplicate_task_id(tmp: Path) -> Built:
    p = write_lines(tmp / "pool.jsonl", [dump(canon("t1")), dump(canon("t2")), dump(canon("t1", "Other."))])
    return Built(p, p, "line 3", "duplicate task_id 't1' (first at line 1)", ("t1", "t2"))


def non_utf8_json_file(tmp: Path) -> Built:
    data = (b'[\n  {"instruction": "Add.", "input": "1 2", "output": "3"},\n'
            b'  {"instruction": "Caf\xff", "input": "", "output": "x"}\n]\n')
    p = tmp / "alpaca.json"
    p.write_bytes(data)
    return Built(p, p, "line 3", "not valid UTF-8", None)


def non_utf8_jsonl_line(tmp: Path) -> Built:
    p = write_lines(tmp / "si.jsonl", [
        dump(si("a")),
        b'{"id": "b", "instruction": "Caf\xff", "instances": [{"input": "", "output": "x"}]}',
        dump(si("c")),
    ])
    return Built(p, p, "line 2", "not valid UTF-8", ("a", "c"))


def self_instruct_zero_instances(tmp: Path) -> Built:
    p = write_lines(tmp / "si.jsonl", [dump(si("a")), dump(si("b", instances=[])), dump(si("c"))])
    return Built(p, p, "line 2", "zero instances", ("a", "c"))


def niv2_zero_instances(tmp: Path) -> Built:
    folder = write_niv2(tmp / "niv2", {"task001_ok": dump(niv2_task()), "task002_empty": dump(niv2_task(instances=[]))})
    return Built(folder, folder / "tasks" / "task002_empty.json", "task task002_empty", "zero instances",
                 ("task001_ok",))


def niv2_broken_task_file(tmp: Path) -> Built:
    folder = write_niv2(tmp / "niv2", {"task001_ok": dump(niv2_task()), "task003_broken": b'{\n  "Definition": [\n'})
    return Built(folder, folder / "tasks" / "task003_broken.json", "task task003_broken", "malformed JSON at line",
                 ("task001_ok",))


CASES: dict[str, Callable[[Path], Built]] = {
    f.__name__: f
    for f in (
        malformed_jsonl, malformed_json_file, alpaca_missing_output, self_instruct_missing_instances,
        empty_instruction, niv2_empty_definition, duplicate_task_id, non_utf8_json_file, non_utf8_jsonl_line,
        self_instruct_zero_instances, niv2_zero_instances, niv2_broken_task_file,
    )
}
PER_RECORD = [name for name in CASES if name not in ("malformed_json_file", "non_utf8_json_file")]
WHOLE_FILE = ["malformed_json_file", "non_utf8_json_file"]


def build(name: str, tmp_path: Path) -> Built:
    case = CASES[name](tmp_path)
    assert (case.good is None) == (name in WHOLE_FILE)
    return case


# ---------------------------------------------------------------- direct load_pool checks

@pytest.mark.parametrize("name", list(CASES))
def test_error_names_file_and_record(tmp_path, name):
    case = build(name, tmp_path)
    kind = InvalidFile if case.good is None else InvalidRecord
    with pytest.raises(kind) as info:
        load_pool(case.path)
    err = info.value
    message = str(err)
    assert str(case.bad_file) in message
    assert case.where in message
    assert case.reason in message
    assert err.source == str(case.bad_file)
    if kind is InvalidRecord:
        assert err.where == case.where
        assert message == f"{case.bad_file}: {case.where}: {err.reason}"


@pytest.mark.parametrize("name", PER_RECORD)
def test_skip_invalid_keeps_good_and_reports_bad(tmp_path, name):
    case = build(name, tmp_path)
    pool = load_pool(case.path, skip_invalid=True)
    assert tuple(t.task_id for t in pool.tasks) == case.good
    assert len(pool.skipped) == 1
    (skip,) = pool.skipped
    assert skip.source == str(case.bad_file)
    assert skip.where == case.where
    assert case.reason in skip.reason

    report = tmp_path / "out" / "skipped.jsonl"
    write_skip_report(pool.skipped, report)
    lines = report.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [
        {"source": str(case.bad_file), "where": case.where, "reason": skip.reason}
    ]


@pytest.mark.parametrize("name", WHOLE_FILE)
def test_whole_file_errors_are_not_skippable(tmp_path, name):
    case = build(name, tmp_path)
    with pytest.raises(InvalidFile) as info:
        load_pool(case.path, skip_invalid=True)
    assert case.where in str(info.value)


def test_skip_report_lists_every_bad_record(tmp_path):
    p = write_lines(tmp_path / "si.jsonl", [
        dump(si("a")),
        b"{not json",
        dump(si("b", instances=[])),
        dump(si("c", instruction="  ")),
        dump(si("a")),
        dump(si("d")),
    ])
    pool = load_pool(p, skip_invalid=True)
    assert [t.task_id for t in pool.tasks] == ["a", "d"]
    assert [s.where for s in pool.skipped] == ["line 2", "line 3", "line 4", "line 5"]
    write_skip_report(pool.skipped, tmp_path / "r.jsonl")
    rows = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["where"] for r in rows] == ["line 2", "line 3", "line 4", "line 5"]
    assert "duplicate task_id 'a' (first at line 1)" in rows[3]["reason"]


def test_all_records_bad_with_skip_invalid_gives_empty_pool(tmp_path):
    p = write_lines(tmp_path / "si.jsonl", [dump(si("a", instances=[])), b"[1, 2"])
    pool = load_pool(p, "self_instruct", skip_invalid=True)
    assert pool.tasks == ()
    assert [s.where for s in pool.skipped] == ["line 1", "line 2"]


def test_bad_first_jsonl_line_is_skippable_with_explicit_format(tmp_path):
    p = write_lines(tmp_path / "si.jsonl", [b"{oops", dump(si("b"))])
    pool = load_pool(p, "self_instruct", skip_invalid=True)
    assert [t.task_id for t in pool.tasks] == ["b"]
    assert [s.where for s in pool.skipped] == ["line 1"]


def test_bad_first_jsonl_line_is_skippable_with_detection(tmp_path):
    p = write_lines(tmp_path / "si.jsonl", [b"{oops", dump(si("b")), dump(si("c"))])
    pool = load_pool(p, skip_invalid=True)
    assert [t.task_id for t in pool.tasks] == ["b", "c"]
    assert [s.where for s in pool.skipped] == ["line 1"]


def test_detection_names_true_line_of_non_utf8_first_record(tmp_path):
    p = tmp_path / "si.jsonl"
    p.write_bytes(b"\n\n" + b'{"instruction": "Caf\xff", "instances": []}\n')
    with pytest.raises(InvalidFile) as info:
        load_pool(p)
    assert "line 3" in str(info.value)


# ---------------------------------------------------------------- atomic output (in process)

def _tmp_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp"))


def test_outputs_get_the_usual_permissions(tmp_path):
    import os

    from raysys.io import write_text
    from raysys.models import init_tiny

    mask = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "x")
        init_tiny(tmp_path / "m")
    finally:
        os.umask(mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    assert (tmp_path / "m").stat().st_mode & 0o777 == 0o755  # not mkdtemp's 0700


def test_write_parquet_tasks_is_atomic(tmp_path, monkeypatch):
    import raysys.io

    tasks = [Task(task_id="t", instruction="Copy.", instances=(Instance("t-0", "x", ("x",)),))]
    out = tmp_path / "pool.parquet"
    write_parquet_tasks(tasks, out)
    before = out.read_bytes()

    def half_write(table, where, *args, **kwargs):
        Path(where).write_bytes(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(raysys.io.pq, "write_table", half_write)
    with pytest.raises(OSError, match="disk full"):
        write_parquet_tasks(tasks * 2, out)
    assert out.read_bytes() == before
    with pytest.raises(OSError, match="disk full"):
        write_parquet_tasks(tasks, tmp_path / "new.parquet")
    assert not (tmp_path / "new.parquet").exists()
    assert _tmp_leftovers(tmp_path) == []


# ---------------------------------------------------------------- the CLI (real subprocesses)

def cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("PYTHONWARNINGS", None)
    return subprocess.run(
        [sys.executable, "-m", "raysys.cli", *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )


def assert_clean_error(run: subprocess.CompletedProcess, *needles: str) -> None:
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("raysys: error:"), run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    for needle in needles:
        assert needle in run.stderr, (needle, run.stderr)


def read_report(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("name", ["malformed_jsonl", "niv2_zero_instances", "duplicate_task_id"])
def test_cli_inspect_error_then_skip(tmp_path, name):
    case = build(name, tmp_path)
    run = cli("pool", "inspect", case.path, "--json", cwd=tmp_path)
    assert_clean_error(run, str(case.bad_file), case.where, case.reason)
    assert run.stdout == ""

    report = tmp_path / "R.jsonl"
    run = cli("pool", "inspect", case.path, "--json", "--skip-invalid", "--skip-report", report, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    summary = json.loads(run.stdout)
    assert summary["num_skipped"] == 1
    assert summary["num_tasks"] == len(case.good)
    assert [(r["source"], r["where"]) for r in read_report(report)] == [(str(case.bad_file), case.where)]
    assert str(report) in run.stderr  # tells the user where the reasons are


def test_cli_whole_file_error_even_with_skip_invalid(tmp_path):
    case = build("non_utf8_json_file", tmp_path)
    run = cli("pool", "inspect", case.path, "--json", "--skip-invalid", "--skip-report", tmp_path / "R.jsonl",
              cwd=tmp_path)
    assert_clean_error(run, str(case.bad_file), case.where, case.reason)


def test_cli_convert_failure_leaves_no_output_and_keeps_existing(tmp_path):
    case = build("alpaca_missing_output", tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    fresh = out_dir / "fresh.parquet"
    run = cli("pool", "convert", case.path, "--out", fresh, cwd=tmp_path)
    assert_clean_error(run, str(case.bad_file), case.where, case.reason)
    assert not fresh.exists()
    assert _tmp_leftovers(out_dir) == []

    existing = out_dir / "existing.parquet"
    write_parquet_tasks([Task(task_id="old", instruction="Old.", instances=(Instance("o", "", ("o",)),))], existing)
    before = existing.read_bytes()
    run = cli("pool", "convert", case.path, "--out", existing, cwd=tmp_path)
    assert_clean_error(run, str(case.bad_file), case.where)
    assert existing.read_bytes() == before
    assert _tmp_leftovers(out_dir) == []
    assert sorted(p.name for p in out_dir.iterdir()) == ["existing.parquet"]


def test_cli_convert_skip_invalid(tmp_path):
    case = build("alpaca_missing_output", tmp_path)
    out = tmp_path / "out" / "pool.parquet"
    report = tmp_path / "R.jsonl"
    run = cli("pool", "convert", case.path, "--out", out, "--skip-invalid", "--skip-report", report, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert f"wrote {len(case.good)} tasks" in run.stdout
    assert tuple(t.task_id for t in load_pool(out).tasks) == case.good
    assert [(r["source"], r["where"]) for r in read_report(report)] == [(str(case.bad_file), case.where)]
    assert _tmp_leftovers(out.parent) == []


def test_cli_convert_all_bad_with_skip_invalid_writes_nothing(tmp_path):
    p = write_lines(tmp_path / "si.jsonl", [dump(si("a", instances=[])), dump(si("b", instances=[]))])
    out = tmp_path / "out" / "pool.parquet"
    report = tmp_path / "R.jsonl"
    run = cli("pool", "convert", p, "--out", out, "--skip-invalid", "--skip-report", report, cwd=tmp_path)
    # stderr: the skip notice, then the error line
    notice, error = run.stderr.splitlines()
    assert notice.startswith("raysys: skipped 2 invalid record(s)") and str(report) in notice
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert error.startswith("raysys: error:") and str(p) in error and "no valid tasks" in error
    assert not out.exists()
    assert [r["where"] for r in read_report(report)] == ["line 1", "line 2"]
    assert not out.parent.exists() or _tmp_leftovers(out.parent) == []


def test_cli_convert_out_is_a_folder_is_a_clean_error(tmp_path):
    src = write_lines(tmp_path / "si.jsonl", [dump(si("a"))])
    out = tmp_path / "out.parquet"
    out.mkdir()
    run = cli("pool", "convert", src, "--out", out, cwd=tmp_path)
    assert _tmp_leftovers(tmp_path) == []
    assert_clean_error(run, str(out))
