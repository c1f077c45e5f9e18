"""Wrong JSON types, field by field, for every reader and for the non-pool inputs.

A matrix rather than a list: FIELDS names every field each reader takes (a path into a
good record), the JSON types it accepts and whether it is required. Each case puts a value
of another type there (a string, number, object, array, boolean, null, or the NaN /
Infinity literals that JSON does not have) into one record of a small file, then checks
that load_pool names the file, the record and the field, and that skip_invalid keeps the
good records and lists the bad one. No Ray, no models: the whole file takes a few seconds.
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raysys.errors import InvalidFile, InvalidRecord
from raysys.pools.load import load_pool
from raysys.pools.niv2 import META_LISTS
from raysys.selection.candidates import read_scores
from raysys.selection.run import _group_labels, target_instructions
from raysys.selection.select import read_task_ids

S, N, B, O, A, NULL = "string", "number", "boolean", "object", "array", "null"
JSON_KINDS = (S, N, O, A, B)
LITERALS = ("NaN", "Infinity", "-Infinity")  # Python's json writes and reads these; JSON has none
VALUE = {S: "text", N: 7, B: True, O: {"k": "v"}, A: ["v"], NULL: None,
         "NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}
REQ, OPT = True, False
FLAG = (B, S, NULL)  # is_classification: true/false/null or a flag string ("classification")
RECORD = ""  # the path of the record itself

# ---------------------------------------------------------------- good records and their fields

def alpaca_record(name: str) -> dict:
    return {"id": name, "instruction": f"Add ({name}).", "input": "1 2", "output": "3"}


def self_instruct_record(name: str) -> dict:
    return {"id": name, "name": f"n-{name}", "instruction": f"Echo ({name}).",
            "instances": [{"input": "x", "output": ["x"]}], "is_classification": False, "motivation_app": "app"}


def niv2_record(name: str) -> dict:
    return {"Definition": [f"Answer ({name})."], "Positive Examples": [{"input": "q", "output": ["a"]}],
            "Instances": [{"id": "i-0", "input": "q", "output": ["a"]}], "Categories": ["QA"],
            **{src: ["v"] for src in META_LISTS.values()}}


def canonical_record(name: str) -> dict:
    return {"task_id": name, "instruction": f"Copy ({name}).", "demonstrations": [{"input": "x", "output": "x"}],
            "instances": [{"id": "i-0", "input": "x", "outputs": ["x"]}], "is_classification": True,
            "categories": ["QA"], "source": "hand", "metadata": {"k": "v"}}


def niv2_hub_record(name: str) -> dict:
    return {"task_name": name, "definition": f"Answer ({name}).", "inputs": "q", "targets": ["a"], "id": f"{name}-0"}


def strings_field(path: str, required: bool) -> list[tuple[str, tuple[str, ...], bool]]:
    """An array of strings, and its first element."""
    return [(path, (A,), required), (f"{path}[0]", (S,), REQ)]


ALPACA = [(RECORD, (O,), REQ), ("instruction", (S,), REQ), ("output", (S,), REQ), ("input", (S,), OPT),
          ("id", (S,), OPT)]
SELF_INSTRUCT = [
    (RECORD, (O,), REQ), ("id", (S,), OPT), ("name", (S,), OPT), ("instruction", (S,), REQ),
    ("instances", (A,), REQ), ("instances[0]", (O,), REQ), ("instances[0].input", (S,), OPT),
    ("instances[0].output", (S, A), REQ), ("instances[0].output[0]", (S,), REQ),
    ("is_classification", FLAG, OPT), ("motivation_app", (S,), OPT),
]
NIV2 = [
    (RECORD, (O,), REQ), ("Definition", (S, A), REQ), ("Definition[0]", (S,), REQ),
    ("Positive Examples", (A,), OPT), ("Positive Examples[0]", (O,), REQ),
    ("Positive Examples[0].input", (S,), REQ), ("Positive Examples[0].output", (S, A), REQ),
    ("Positive Examples[0].output[0]", (S,), REQ),
    ("Instances", (A,), REQ), ("Instances[0]", (O,), REQ), ("Instances[0].id", (S,), OPT),
    ("Instances[0].input", (S,), REQ), ("Instances[0].output", (S, A), REQ), ("Instances[0].output[0]", (S,), REQ),
    *strings_field("Categories", OPT), *(f for src in META_LISTS.values() for f in strings_field(src, OPT)),
]
CANONICAL = [
    (RECORD, (O,), REQ), ("task_id", (S,), REQ), ("instruction", (S,), REQ),
    ("demonstrations", (A,), OPT), ("demonstrations[0]", (O,), REQ),
    ("demonstrations[0].input", (S,), REQ), ("demonstrations[0].output", (S,), REQ),
    ("instances", (A,), REQ), ("instances[0]", (O,), REQ), ("instances[0].id", (S,), OPT),
    ("instances[0].input", (S,), OPT), ("instances[0].outputs", (S, A), REQ), ("instances[0].outputs[0]", (S,), REQ),
    ("is_classification", FLAG, OPT), *strings_field("categories", OPT), ("source", (S,), OPT),
    ("metadata", (O, S), OPT),  # a string must hold a JSON object: see test_metadata_string_*
]
NIV2_HUB = [("task_name", (S,), REQ), ("definition", (S,), REQ), ("inputs", (S,), REQ),
            ("targets", (S, A), REQ), ("targets[0]", (S,), REQ), ("id", (S,), OPT)]


@dataclass(frozen=True)
class Reader:
    fmt: str  # load_pool's format
    record: object  # name -> a good record
    fields: list
    layout: str  # how the file is written: see `write`
    literals: bool  # the file is JSON text, so the NaN / Infinity literals can occur
    every_kind: bool = True  # False: one wrong type per field (the rows go through checks tested above)


READERS = {
    "alpaca-json": Reader("alpaca", alpaca_record, ALPACA, "json-array", True),
    "alpaca-jsonl": Reader("alpaca", alpaca_record, ALPACA, "jsonl", True),
    "self_instruct": Reader("self_instruct", self_instruct_record, SELF_INSTRUCT, "jsonl", True),
    "niv2": Reader("niv2", niv2_record, NIV2, "niv2-folder", True),
    "canonical-jsonl": Reader("jsonl", canonical_record, CANONICAL, "jsonl", True),
    "canonical-parquet": Reader("parquet", canonical_record, [f for f in CANONICAL if f[0]], "parquet", False),
    # HF rows of these columns go through the same functions as the files above (alpaca,
    # self_instruct, canonical): one wrong type per field shows that they are checked.
    "hf-alpaca": Reader("hf", alpaca_record, ALPACA[1:], "hf", False, every_kind=False),
    "hf-self_instruct": Reader("hf", self_instruct_record, SELF_INSTRUCT[1:], "hf", False, every_kind=False),
    "hf-canonical": Reader("hf", canonical_record, [f for f in CANONICAL if f[0]], "hf", False, every_kind=False),
    "hf-niv2-hub": Reader("hf", niv2_hub_record, NIV2_HUB, "hf", False),
}


@dataclass(frozen=True)
class Case:
    reader: str
    path: str
    kind: str  # a JSON type, or one of LITERALS
    required: bool

    def __str__(self) -> str:
        return f"{self.reader}:{self.path or '(record)'}:{self.kind}"


def wrong_kinds(reader: Reader, path: str, ok: tuple[str, ...], required: bool) -> list[str]:
    kinds = [k for k in JSON_KINDS if k not in ok]
    if required or path.endswith("]"):  # an optional field may be null (= absent)
        kinds.append(NULL)
    if reader.literals:
        kinds += LITERALS
    elif N not in ok:
        kinds.append("NaN")  # a float column's NaN where strings belong
    return kinds if reader.every_kind else kinds[:1]


CASES = [Case(name, path, kind, required) for name, r in READERS.items()
         for path, ok, required in r.fields for kind in wrong_kinds(r, path, ok, required)]


# ---------------------------------------------------------------- writing the files

def put(record: dict, path: str, value):
    """`record` with the value at `path` (``instances[0].output[0]``) replaced."""
    if path == RECORD:
        return value
    out = copy.deepcopy(record)
    steps = [int(t[1:-1]) if t.startswith("[") else t for t in re.findall(r"\[\d+\]|[^.\[\]]+", path)]
    node = out
    for step in steps[:-1]:
        node = node[step]
    node[steps[-1]] = value
    return out


@dataclass(frozen=True)
class Built:
    path: Path  # what load_pool reads
    bad_file: Path  # the file the error must name
    where: str  # the record the error must name
    good: tuple[str, ...]  # task ids kept with skip_invalid
    skipped: tuple[str, ...]  # records listed in the skip report


def write(reader: Reader, tmp: Path, bad_record) -> Built:
    """Three records, the middle one bad (JSON layouts), or three rows of the same bad
    record (Arrow layouts: a column holds one type)."""
    good = [reader.record("a"), reader.record("c")]
    layout = reader.layout
    if layout == "json-array":
        p = tmp / "alpaca.json"
        p.write_text(json.dumps([good[0], bad_record, good[1]], indent=1), encoding="utf-8")
        return Built(p, p, "index 1", ("a", "c"), ("index 1",))
    if layout == "jsonl":
        p = tmp / "pool.jsonl"
        p.write_text("".join(json.dumps(r) + "\n" for r in (good[0], bad_record, good[1])), encoding="utf-8")
        return Built(p, p, "line 2", ("a", "c"), ("line 2",))
    if layout == "niv2-folder":
        (tmp / "niv2" / "tasks").mkdir(parents=True)
        for name, rec in (("task001_a", good[0]), ("task002_b", bad_record), ("task003_c", good[1])):
            (tmp / "niv2" / "tasks" / f"{name}.json").write_text(json.dumps(rec), encoding="utf-8")
        return Built(tmp / "niv2", tmp / "niv2" / "tasks" / "task002_b.json", "task task002_b",
                     ("task001_a", "task003_c"), ("task task002_b",))
    rows = [bad_record] * 3
    if layout == "parquet":
        p = tmp / "pool.parquet"
        pq.write_table(pa.Table.from_pylist(rows), p)
    else:
        import datasets

        p = tmp / "hf"
        datasets.Dataset.from_list(rows).save_to_disk(str(p))
    return Built(p, p, "row 0", (), ("row 0", "row 1", "row 2"))


def expected_reason(case: Case) -> str:
    if case.kind in LITERALS and READERS[case.reader].literals:
        return f"{case.kind} is not a JSON value"
    got = N if case.kind in LITERALS else case.kind
    if case.path == RECORD:
        return f"expected a JSON object, got {got}"
    if got == NULL and case.required and not case.path.endswith("]"):
        return f"missing required field {case.path!r}"
    return f"field {case.path!r} must be"


# ---------------------------------------------------------------- the matrix

@pytest.mark.parametrize("case", CASES, ids=str)
def test_wrong_type_names_file_record_and_field(tmp_path, case):
    reader = READERS[case.reader]
    built = write(reader, tmp_path, put(reader.record("b"), case.path, VALUE[case.kind]))
    whole_file = reader.layout == "json-array" and case.kind in LITERALS  # the document does not parse
    with pytest.raises(InvalidFile if whole_file else InvalidRecord) as info:
        load_pool(built.path, reader.fmt)
    message = str(info.value)
    assert message.startswith(f"{built.bad_file}: "), message
    assert expected_reason(case) in message, message
    assert "\n" not in message
    if whole_file:
        assert re.search(r"at line \d+ column \d+", message), message
        return
    assert info.value.where == built.where
    if expected_reason(case).startswith("field"):
        got = N if case.kind in LITERALS else case.kind
        assert message.endswith(f", got {got}"), message

    pool = load_pool(built.path, reader.fmt, skip_invalid=True)
    assert tuple(t.task_id for t in pool.tasks) == built.good
    assert tuple(s.where for s in pool.skipped) == built.skipped
    assert {s.source for s in pool.skipped} == {str(built.bad_file)}
    assert all(expected_reason(case) in s.reason for s in pool.skipped)


def test_matrix_covers_every_reader_and_field():
    covered = {(c.reader, c.path) for c in CASES}
    assert covered == {(name, f[0]) for name, r in READERS.items() for f in r.fields}
    assert len(CASES) > 300


@pytest.mark.parametrize("reader", ["self_instruct", "canonical-jsonl"])
@pytest.mark.parametrize("value", ["maybe", 1, 0])
def test_flag_strings_and_numbers(tmp_path, reader, value):
    # A boolean is not a number and a number is not a boolean, whatever Python thinks.
    r = READERS[reader]
    built = write(r, tmp_path, put(r.record("b"), "is_classification", value))
    with pytest.raises(InvalidRecord, match="field 'is_classification' must be true, false") as info:
        load_pool(built.path, r.fmt)
    assert info.value.where == "line 2"


@pytest.mark.parametrize("layout", ["canonical-jsonl", "canonical-parquet"])
@pytest.mark.parametrize("value, reason", [
    ("not json", "field 'metadata' is a string but not a JSON document at column 1"),
    ('{"k": NaN}', "field 'metadata' is a string but not a JSON document at column 7: NaN is not a JSON value"),
    ("[1, 2]", "field 'metadata' must hold a JSON object, got array"),
    ("", "field 'metadata' is a string but not a JSON document"),
])
def test_metadata_string_must_hold_a_json_object(tmp_path, layout, value, reason):
    r = READERS[layout]
    built = write(r, tmp_path, put(r.record("b"), "metadata", value))
    with pytest.raises(InvalidRecord) as info:
        load_pool(built.path, r.fmt)
    assert info.value.where == built.where and reason in info.value.reason


def test_metadata_string_of_an_object_is_read(tmp_path):
    p = tmp_path / "pool.parquet"
    pq.write_table(pa.Table.from_pylist([put(canonical_record("b"), "metadata", '{"split": "train"}')]), p)
    assert [dict(t.metadata) for t in load_pool(p).tasks] == [{"split": "train"}]


# ---------------------------------------------------------------- task-id lists, groups, targets, scores

ID_LIST_VALUES = {k: VALUE[k] for k in (N, B, O, A, NULL)} | {"an empty string": ""}


@pytest.mark.parametrize("shape", ["list", "selected.json"])
@pytest.mark.parametrize("kind", list(ID_LIST_VALUES))
def test_task_id_list_element_types(tmp_path, shape, kind):
    ids = ["t1", ID_LIST_VALUES[kind], "t3"]
    p = tmp_path / "ids.json"
    p.write_text(json.dumps(ids if shape == "list" else {"raysys_selection": 1, "task_ids": ids}), encoding="utf-8")
    with pytest.raises(InvalidFile) as info:
        read_task_ids(p)
    assert str(info.value) == f"{p}: task_ids[1]: a task id must be a non-empty string, got {kind}"


@pytest.mark.parametrize("text, got", [("7", "got number"), ('"t1"', "got string"), ("null", "got null"),
                                       ("true", "got boolean"), ('{"ids": []}', "got an object with task_ids null"),
                                       ('{"task_ids": {"a": 1}}', "got an object with task_ids object")])
def test_task_id_list_top_level_types(tmp_path, text, got):
    p = tmp_path / "ids.json"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidFile, match=re.escape(got)) as info:
        read_task_ids(p)
    assert str(info.value).startswith(f"{p}: expected a selected.json")


@pytest.mark.parametrize("literal", LITERALS)
def test_task_id_list_literals_are_not_json(tmp_path, literal):
    p = tmp_path / "ids.json"
    p.write_text(f'["t1",\n {literal}]', encoding="utf-8")
    with pytest.raises(InvalidFile) as info:
        read_task_ids(p)
    assert str(info.value) == f"{p}: malformed JSON at line 2 column 2: {literal} is not a JSON value"


@pytest.mark.parametrize("data, reason", [
    (["a"], "got array"), (7, "got number"), (None, "got null"), ("g", "got string"),
    *[({"g": VALUE[k]}, f"group 'g': expected an array of task ids, got {k}") for k in (S, N, B, O, NULL)],
    *[({"g": ["t1", VALUE[k]]}, f"group 'g'[1]: a task id must be a non-empty string, got {k}")
      for k in (N, B, O, A, NULL)],
])
def test_groups_file_types(tmp_path, data, reason):
    p = tmp_path / "groups.json"
    p.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(InvalidFile) as info:
        _group_labels(str(p), ["t1"])
    assert str(info.value).startswith(f"{p}: ") and reason in str(info.value)


def test_targets_file_must_be_utf8_text(tmp_path):
    p = tmp_path / "targets.txt"
    p.write_bytes(b"Answer yes or no.\nCaf\xff\n")
    with pytest.raises(InvalidFile, match="not valid UTF-8 at line 2"):
        target_instructions(str(p))
    (tmp_path / "folder.txt").mkdir()
    with pytest.raises(InvalidFile, match="is a folder"):
        target_instructions(str(tmp_path / "folder.txt"))


SCORES_OK = {"task_id": ["a", "b"], "prompt_uncertainty": [0.1, 0.2], "prediction_probability": [0.5, 0.6],
             "perplexity": [3.0, 4.0], "is_classification": [True, None]}


@pytest.mark.parametrize("column, values, reason", [
    ("task_id", [1, 2], "column 'task_id' must hold strings, got Arrow type int64"),
    ("task_id", [True, False], "column 'task_id' must hold strings, got Arrow type bool"),
    ("task_id", [["a"], ["b"]], "column 'task_id' must hold strings"),
    ("task_id", ["a", None], "row 1: task_id must be a non-empty string, got null"),
    ("task_id", ["a", ""], "row 1: task_id must be a non-empty string, got an empty string"),
    ("prompt_uncertainty", ["0.1", "0.2"], "column 'prompt_uncertainty' must hold numbers, got Arrow type string"),
    ("prompt_uncertainty", [True, False], "column 'prompt_uncertainty' must hold numbers, got Arrow type bool"),
    ("prediction_probability", [{"k": 1.0}] * 2, "column 'prediction_probability' must hold numbers"),
    ("prediction_probability", [0.5, float("inf")], "row 1 (task 'b'): prediction_probability is not a finite"),
    ("perplexity", ["high", "low"], "column 'perplexity' must hold numbers, got Arrow type string"),
    ("is_classification", [1, 0], "column 'is_classification' must hold booleans (or nulls), got Arrow type int64"),
    ("is_classification", ["yes", "no"], "column 'is_classification' must hold booleans"),
])
def test_scores_file_types(tmp_path, column, values, reason):
    p = tmp_path / "scores.parquet"
    pq.write_table(pa.table({**SCORES_OK, column: values}), p)
    with pytest.raises(InvalidFile) as info:
        read_scores(p)
    assert str(info.value).startswith(f"{p}: ") and reason in str(info.value)


def test_scores_file_with_the_right_types_is_read(tmp_path):
    p = tmp_path / "scores.parquet"
    pq.write_table(pa.table({**SCORES_OK, "is_classification": [None, None]}), p)
    assert read_scores(p)["task_id"] == ["a", "b"]
