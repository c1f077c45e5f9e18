"""Pool readers on the real shared data and on tiny files built in tmp_path.

Real data: ../shared/data (see its SOURCES.md) -- NIV2 (60 task files, split lists,
index.tsv), the Alpaca 5,000-task subset, and Self-Instruct's seed and user-oriented
files. Set RAYSYS_SHARED_DATA to use another copy (see conftest.needs_data).
"""
from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest
from conftest import SHARED_DATA, needs_data

from raysys.errors import InvalidFile
from raysys.pools.canonical import write_parquet_tasks
from raysys.pools.classify import derive_is_classification
from raysys.pools.load import detect_format, load_pool
from raysys.schema import Demonstration, Instance, Task

DATA = SHARED_DATA
NIV2 = DATA / "niv2"
ALPACA = DATA / "alpaca" / "alpaca_random5000_subset.json"
SEED = DATA / "self_instruct" / "seed_tasks.jsonl"
USER = DATA / "self_instruct" / "user_oriented_instructions.jsonl"


NIV2_TEST_TASKS = {
    "task1393_superglue_copa_text_completion",
    "task648_answer_generation",
    "task957_e2e_nlg_text_generation_generate",
}


# ---------------------------------------------------------------- tiny-file builders

def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def alpaca_entries() -> list[dict]:
    return [
        {"instruction": "Add the two numbers.", "input": "2 3", "output": "5"},
        {"instruction": "Name a primary colour.", "input": "", "output": "Red"},
    ]


def self_instruct_records() -> list[dict]:
    return [
        {"id": "s1", "name": "sentiment", "instruction": "Is the review positive or negative?",
         "instances": [{"input": "Great film.", "output": "Positive"}], "is_classification": True},
        {"id": "s2", "name": "story", "instruction": "Write a two-sentence story.",
         "instances": [{"input": "", "output": "It rained. We stayed in and read."}], "is_classification": False},
    ]


def canonical_records() -> list[dict]:
    return [
        {"task_id": "c1", "instruction": "Answer yes or no.",
         "demonstrations": [{"input": "Is fire hot?", "output": "yes"}],
         "instances": [{"id": "c1-a", "input": "Is ice hot?", "outputs": ["no"]},
                       {"id": "c1-b", "input": "Is the sun hot?", "outputs": ["yes", "Yes"]}],
         "is_classification": True, "categories": ["QA"], "source": "handmade",
         "metadata": {"split": "train", "nested": {"k": [1, 2]}}},
        {"task_id": "c2", "instruction": "Reverse the word.",
         "instances": [{"id": "c2-a", "input": "abc", "outputs": ["cba"]}],
         "is_classification": False, "metadata": {}},
    ]


CANONICAL_TASKS = [
    Task(task_id="c1", instruction="Answer yes or no.",
         demonstrations=(Demonstration("Is fire hot?", "yes"),),
         instances=(Instance("c1-a", "Is ice hot?", ("no",)), Instance("c1-b", "Is the sun hot?", ("yes", "Yes"))),
         is_classification=True, categories=("QA",), source="handmade",
         metadata={"split": "train", "nested": {"k": [1, 2]}}),
    Task(task_id="c2", instruction="Reverse the word.",
         instances=(Instance("c2-a", "abc", ("cba",)),), is_classification=False),
]


def niv2_task_dict(definition: str = "Answer the question with yes or no.") -> dict:
    return {
        "Definition": [definition],
        "Positive Examples": [{"input": "Is water wet?", "output": "yes", "explanation": "."}],
        "Negative Examples": [],
        "Instances": [{"id": "t-1", "input": "Is fire cold?", "output": ["no"]}],
        "Categories": ["Question Answering"],
    }


def hf_save(obj, path: Path) -> Path:
    obj.save_to_disk(str(path))
    return path


# ---------------------------------------------------------------- NIV2 (real data)

def _niv2_index() -> dict[str, dict]:
    with open(NIV2 / "index.tsv", encoding="utf-8", newline="") as f:
        return {row["task"]: row for row in csv.DictReader(f, delimiter="\t")}


def _niv2_splits() -> dict[str, str]:
    split_of = {}
    for name in ("train", "test"):
        for line in (NIV2 / "splits" / f"{name}_tasks.txt").read_text(encoding="utf-8").splitlines():
            if line.strip():
                split_of[line.strip()] = name
    return split_of


@needs_data
def test_niv2_folder_matches_task_files():
    pool = load_pool(NIV2)
    assert pool.format == "niv2"
    assert pool.skipped == ()
    files = sorted((NIV2 / "tasks").glob("*.json"))
    assert len(files) == 60 and len(pool.tasks) == 60
    by_id = {t.task_id: t for t in pool.tasks}
    assert set(by_id) == {f.stem for f in files}
    split_of = _niv2_splits()
    for f in files:
        raw = json.loads(f.read_text(encoding="utf-8"))
        task = by_id[f.stem]
        assert task.instruction.strip(), f.stem
        assert task.instruction == "\n".join(raw["Definition"])
        # Demonstrations are the file's Positive Examples, in order. (The files hold 5 for
        # the 57 MMLU tasks and 2-3 for the test tasks; index.tsv's n_positive_examples,
        # from another metadata table, says 2 -- so compare with the files, not a constant.)
        assert len(task.demonstrations) >= 2
        assert [(d.input, d.output) for d in task.demonstrations] == [
            (ex["input"], ex["output"]) for ex in raw["Positive Examples"]
        ]
        assert [i.id for i in task.instances] == [i["id"] for i in raw["Instances"]]
        assert [i.input for i in task.instances] == [i["input"] for i in raw["Instances"]]
        assert [list(i.outputs) for i in task.instances] == [i["output"] for i in raw["Instances"]]
        assert list(task.categories) == raw["Categories"]
        assert task.metadata["split"] == split_of[f.stem]
        assert task.source == "niv2"


@needs_data
def test_niv2_derived_flag_matches_index_cls_gen():
    index = _niv2_index()
    saved = {name: row for name, row in index.items() if row["task_file_saved"] == "yes"}
    assert len(saved) == 60
    assert all(row["cls_gen"] in ("classification", "generative") for row in saved.values())
    pool = load_pool(NIV2)
    got = {t.task_id: t.is_classification for t in pool.tasks}
    want = {name: row["cls_gen"] == "classification" for name, row in saved.items()}
    assert got == want
    assert sum(want.values()) == 58  # both labels occur, so a constant rule cannot pass


@needs_data
def test_niv2_split_test_keeps_only_test_tasks():
    pool = load_pool(NIV2, split="test")
    assert {t.task_id for t in pool.tasks} == NIV2_TEST_TASKS
    assert all(t.metadata["split"] == "test" for t in pool.tasks)
    train = load_pool(NIV2, split="train")
    assert len(train.tasks) == 57 and not NIV2_TEST_TASKS & {t.task_id for t in train.tasks}


@needs_data
def test_niv2_unknown_split_is_an_error():
    with pytest.raises(InvalidFile, match="no split 'dev'"):
        load_pool(NIV2, split="dev")


@needs_data
def test_niv2_single_task_file():
    f = NIV2 / "tasks" / "task648_answer_generation.json"
    pool = load_pool(f)
    assert pool.format == "niv2"
    assert [t.task_id for t in pool.tasks] == ["task648_answer_generation"]
    raw = json.loads(f.read_text(encoding="utf-8"))
    assert len(pool.tasks[0].instances) == len(raw["Instances"])


# ---------------------------------------------------------------- classification rule

@needs_data
def test_derived_rule_agrees_with_self_instruct_seed_flags():
    pool = load_pool(SEED)
    assert all(t.is_classification is not None for t in pool.tasks)
    decided = agree = 0
    for task in pool.tasks:
        guess = derive_is_classification(dataclasses.replace(task, is_classification=None))
        if guess is not None:
            decided += 1
            agree += guess == task.is_classification
    assert decided >= 0.70 * len(pool.tasks), f"decided only {decided}/{len(pool.tasks)}"
    assert agree >= 0.95 * decided, f"agrees on only {agree}/{decided}"


def test_derived_rule_fills_missing_flags_only(tmp_path):
    # Rule 2 (label set named in the definition) vs a source flag that says otherwise.
    labels = {"instruction": "Answer yes or no.", "instances": [{"input": "Is ice cold?", "output": "Yes"}]}
    records = [
        {"id": "derived", **labels},
        {"id": "flagged", **labels, "is_classification": False},
    ]
    pool = load_pool(write_jsonl(tmp_path / "rule.jsonl", records))
    assert {t.task_id: t.is_classification for t in pool.tasks} == {"derived": True, "flagged": False}


def _rule_task(instruction: str, outputs: list[str]) -> Task:
    return Task(task_id="r", instruction=instruction,
                instances=tuple(Instance(f"r-{k}", f"in {k}", (o,)) for k, o in enumerate(outputs)))


@pytest.mark.parametrize(
    "instruction, outputs, want",
    [
        ("Label it.", ["pos", "neg"] * 5, True),  # rule 1: 2 labels over 10 instances
        ("Label it.", ["a", "b", "c", "d", "e", "f", "a", "b", "c", "d"], False),  # 6 distinct > n/2
        ("Label it.", [f"label {k % 11}" for k in range(30)], False),  # 11 distinct > MAX_LABELS
        ("Answer True or False.", ["true", "False."], True),  # rule 2: labels named in the definition
        ("Explain.", ["It is a long free text answer with many words."], False),  # rule 3
        ("Explain.", ["Paris"], None),  # rule 4: one short answer decides nothing
    ],
    ids=["rule1-few-labels", "rule1-half-distinct", "rule1-too-many-labels", "rule2", "rule3", "rule4"],
)
def test_derived_rule_cases(instruction, outputs, want):
    assert derive_is_classification(_rule_task(instruction, outputs)) is want


# ---------------------------------------------------------------- Alpaca and Self-Instruct (real data)

@needs_data
def test_alpaca_subset():
    raw = json.loads(ALPACA.read_text(encoding="utf-8"))
    pool = load_pool(ALPACA)
    assert pool.format == "alpaca"
    assert len(raw) == len(pool.tasks) == 5000
    assert len({t.task_id for t in pool.tasks}) == 5000
    for entry, task in zip(raw, pool.tasks):
        assert len(task.instances) == 1
        assert task.instruction == entry["instruction"]
        assert task.instances[0].input == entry["input"]
        assert task.instances[0].outputs == (entry["output"],)
        assert task.source == "alpaca"
    assert sum(1 for t in pool.tasks if t.instances[0].input) == 1943  # SOURCES.md


@needs_data
def test_self_instruct_seed():
    raw = [json.loads(line) for line in SEED.read_text(encoding="utf-8").splitlines() if line.strip()]
    pool = load_pool(SEED)
    assert pool.format == "self_instruct"
    assert len(pool.tasks) == len(raw) == 175
    assert [t.task_id for t in pool.tasks] == [r["id"] for r in raw]
    assert [t.is_classification for t in pool.tasks] == [r["is_classification"] for r in raw]
    n_cls = sum(1 for r in raw if r["is_classification"] is True)
    assert sum(1 for t in pool.tasks if t.is_classification) == n_cls
    assert 0 < n_cls < 175
    for r, t in zip(raw, pool.tasks):
        assert [(i.input, i.outputs) for i in t.instances] == [(i["input"], (i["output"],)) for i in r["instances"]]


@needs_data
def test_self_instruct_user_oriented():
    raw = [json.loads(line) for line in USER.read_text(encoding="utf-8").splitlines() if line.strip()]
    pool = load_pool(USER)
    assert pool.format == "self_instruct"
    assert len(pool.tasks) == len(raw) == 252
    assert [t.categories for t in pool.tasks] == [(r["motivation_app"],) for r in raw]
    assert [t.instruction for t in pool.tasks] == [r["instruction"] for r in raw]
    assert len({t.task_id for t in pool.tasks}) == 252


# ---------------------------------------------------------------- format detection

@needs_data
@pytest.mark.parametrize(
    "path, fmt",
    [
        (NIV2, "niv2"),
        (NIV2 / "tasks" / "task957_e2e_nlg_text_generation_generate.json", "niv2"),
        (ALPACA, "alpaca"),
        (SEED, "self_instruct"),
        (USER, "self_instruct"),
    ],
    ids=["niv2-folder", "niv2-task-file", "alpaca-json", "self-instruct-seed", "self-instruct-user"],
)
def test_detect_format_real_files(path, fmt):
    assert detect_format(path) == fmt
    assert load_pool(path).format == fmt


def _tiny_niv2_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "tasks_flat"
    folder.mkdir()
    (folder / "task001_yes_no.json").write_text(json.dumps(niv2_task_dict()), encoding="utf-8")
    return folder


def _tiny_alpaca_jsonl(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "alpaca.jsonl", alpaca_entries())


def _tiny_alpaca_json(tmp_path: Path) -> Path:
    p = tmp_path / "alpaca.json"
    p.write_text(json.dumps(alpaca_entries(), indent=1), encoding="utf-8")
    return p


def _tiny_self_instruct(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "si.jsonl", self_instruct_records())


def _tiny_canonical(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "canonical.jsonl", canonical_records())


def _tiny_parquet(tmp_path: Path) -> Path:
    p = tmp_path / "pool.parquet"
    write_parquet_tasks(CANONICAL_TASKS, p)
    return p


def _tiny_hf_dataset(tmp_path: Path) -> Path:
    import datasets

    return hf_save(datasets.Dataset.from_list(alpaca_entries()), tmp_path / "hf_ds")


def _tiny_hf_dataset_dict(tmp_path: Path) -> Path:
    import datasets

    dd = datasets.DatasetDict(
        train=datasets.Dataset.from_list(alpaca_entries()),
        test=datasets.Dataset.from_list(alpaca_entries()[:1]),
    )
    return hf_save(dd, tmp_path / "hf_dd")


@pytest.mark.parametrize(
    "build, fmt, n_tasks",
    [
        (_tiny_niv2_folder, "niv2", 1),
        (_tiny_alpaca_json, "alpaca", 2),
        (_tiny_alpaca_jsonl, "alpaca", 2),
        (_tiny_self_instruct, "self_instruct", 2),
        (_tiny_canonical, "jsonl", 2),
        (_tiny_parquet, "parquet", 2),
        (_tiny_hf_dataset, "hf", 2),
        (_tiny_hf_dataset_dict, "hf", 2),
    ],
    ids=["niv2-flat-folder", "alpaca-json", "alpaca-jsonl", "self-instruct", "canonical-jsonl",
         "parquet", "hf-dataset", "hf-dataset-dict"],
)
def test_detect_format_tiny_files(tmp_path, build, fmt, n_tasks):
    path = build(tmp_path)
    assert detect_format(path) == fmt
    pool = load_pool(path)
    assert pool.format == fmt
    assert len(pool.tasks) == n_tasks


def test_detect_format_hf_name_without_touching_disk():
    assert detect_format("hf:someone/some-dataset") == "hf"


@pytest.mark.parametrize("name", ["notes.txt", "pool.csv"])
def test_detect_format_unknown_suffix_asks_for_format(tmp_path, name):
    p = tmp_path / name
    p.write_text("hello\n", encoding="utf-8")
    with pytest.raises(InvalidFile, match="pass --format") as e:
        detect_format(p)
    assert str(p) in str(e.value)


def test_explicit_format_overrides_detection(tmp_path):
    # Canonical-looking JSONL (has task_id) read as Self-Instruct on request.
    p = _tiny_canonical(tmp_path)
    assert detect_format(p) == "jsonl"
    records = [dict(r, id=f"si-{r['task_id']}") for r in canonical_records()]
    for r in records:  # Self-Instruct spells the output "output"
        r["instances"] = [{"input": i["input"], "output": i["outputs"][0]} for i in r["instances"]]
    write_jsonl(p, records)
    pool = load_pool(p, "self_instruct")
    assert pool.format == "self_instruct"
    assert [t.task_id for t in pool.tasks] == ["si-c1", "si-c2"]
    assert {t.source for t in pool.tasks} == {"self_instruct"}
    # A suffix detection does not know at all.
    odd = tmp_path / "seed.data"
    write_jsonl(odd, self_instruct_records())
    with pytest.raises(InvalidFile):
        load_pool(odd)
    assert [t.task_id for t in load_pool(odd, "self_instruct").tasks] == ["s1", "s2"]


def test_unknown_explicit_format_is_an_error(tmp_path):
    with pytest.raises(InvalidFile, match="unknown format 'csv'"):
        load_pool(_tiny_self_instruct(tmp_path), "csv")


def test_split_rejected_for_formats_without_splits(tmp_path):
    with pytest.raises(InvalidFile, match="--split applies to niv2 and hf"):
        load_pool(_tiny_self_instruct(tmp_path), split="test")


def test_missing_path_is_invalid_file(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(InvalidFile, match="no such file") as e:
        load_pool(missing)
    assert str(missing) in str(e.value)


# ---------------------------------------------------------------- canonical round trip

@needs_data
@pytest.mark.parametrize("path", [NIV2, ALPACA, SEED, USER], ids=["niv2", "alpaca", "seed", "user"])
def test_canonical_parquet_round_trip_real_pools(tmp_path, path):
    pool = load_pool(path)
    out = tmp_path / "pool.parquet"
    write_parquet_tasks(list(pool.tasks), out)
    again = load_pool(out)
    assert again.format == "parquet"
    assert list(again.tasks) == list(pool.tasks)
    assert again.skipped == ()


def test_canonical_jsonl_written_by_hand(tmp_path):
    pool = load_pool(_tiny_canonical(tmp_path))
    assert pool.format == "jsonl"
    assert list(pool.tasks) == CANONICAL_TASKS
    # ... and it survives Parquet unchanged (metadata object -> JSON string -> object).
    out = tmp_path / "c.parquet"
    write_parquet_tasks(list(pool.tasks), out)
    assert list(load_pool(out).tasks) == CANONICAL_TASKS


def test_canonical_jsonl_flag_strings_and_derivation(tmp_path):
    base = {"instruction": "Reply yes or no.", "instances": [{"id": "i", "input": "Is it?", "outputs": ["no"]}]}
    p = write_jsonl(tmp_path / "flags.jsonl", [
        {"task_id": "a", **base, "is_classification": "generative"},
        {"task_id": "b", **base, "is_classification": "classification"},
        {"task_id": "c", **base, "is_classification": None},  # unknown -> derived (rule 2)
    ])
    assert {t.task_id: t.is_classification for t in load_pool(p).tasks} == {"a": False, "b": True, "c": True}


# ---------------------------------------------------------------- Hugging Face datasets

def test_hf_alpaca_columns(tmp_path):
    import datasets

    entries = alpaca_entries()
    path = hf_save(datasets.Dataset.from_list(entries), tmp_path / "alp")
    pool = load_pool(path)
    assert pool.format == "hf"
    assert [(t.instruction, t.instances[0].input, t.instances[0].outputs) for t in pool.tasks] == [
        (e["instruction"], e["input"], (e["output"],)) for e in entries
    ]
    assert [t.source for t in pool.tasks] == ["alpaca", "alpaca"]
    # the same entries as an Alpaca JSON file give the same tasks
    assert list(load_pool(_tiny_alpaca_json(tmp_path)).tasks) == list(pool.tasks)


def test_hf_split_on_a_dataset_without_splits_is_an_error(tmp_path):
    import datasets

    path = hf_save(datasets.Dataset.from_list(alpaca_entries()), tmp_path / "alp")
    with pytest.raises(InvalidFile, match="no splits"):
        load_pool(path, split="test")


def test_hf_canonical_columns(tmp_path):
    import datasets

    rows = [
        {"task_id": "c1", "instruction": "Answer yes or no.",
         "instances": [{"id": "c1-a", "input": "Is ice hot?", "outputs": ["no"]},
                       {"id": "c1-b", "input": "Is the sun hot?", "outputs": ["yes", "Yes"]}],
         "is_classification": True, "categories": ["QA"], "source": "handmade"},
        {"task_id": "c2", "instruction": "Reverse the word.",
         "instances": [{"id": "c2-a", "input": "abc", "outputs": ["cba"]}],
         "is_classification": False, "categories": [], "source": ""},
    ]
    path = hf_save(datasets.Dataset.from_list(rows), tmp_path / "canon")
    pool = load_pool(path)
    assert pool.format == "hf"
    assert list(pool.tasks) == [
        Task(task_id="c1", instruction="Answer yes or no.",
             instances=(Instance("c1-a", "Is ice hot?", ("no",)), Instance("c1-b", "Is the sun hot?", ("yes", "Yes"))),
             is_classification=True, categories=("QA",), source="handmade"),
        Task(task_id="c2", instruction="Reverse the word.",
             instances=(Instance("c2-a", "abc", ("cba",)),), is_classification=False),
    ]


def test_hf_dataset_dict_splits(tmp_path):
    import datasets

    train = [{"instruction": f"Train task {i}.", "input": "", "output": f"answer number {i}"} for i in range(3)]
    test = [{"instruction": "Test task.", "input": "x", "output": "y"}]
    # test first, so "no split" must really look for train rather than take the first split
    path = hf_save(datasets.DatasetDict(test=datasets.Dataset.from_list(test),
                                         train=datasets.Dataset.from_list(train)), tmp_path / "dd")
    assert list(datasets.load_from_disk(str(path))) == ["test", "train"]
    assert [t.instruction for t in load_pool(path).tasks] == [e["instruction"] for e in train]
    assert [t.instruction for t in load_pool(path, split="train").tasks] == [e["instruction"] for e in train]
    assert [t.instruction for t in load_pool(path, split="test").tasks] == ["Test task."]
    with pytest.raises(InvalidFile, match="choose a split"):
        load_pool(path, split="validation")


def test_hf_unrecognised_columns(tmp_path):
    import datasets

    path = hf_save(datasets.Dataset.from_list([{"question": "q", "answer": "a"}]), tmp_path / "qa")
    with pytest.raises(InvalidFile, match="unrecognised columns") as e:
        load_pool(path)
    assert str(path) in str(e.value)


def test_hf_name_offline_is_invalid_file(monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    # datasets / huggingface_hub read the variable at import; they may already be imported.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    name = "hf:raysys-test-nobody/no-such-dataset-0000"
    with pytest.raises(InvalidFile) as e:
        load_pool(name)
    assert name in str(e.value)
    assert "cannot load Hugging Face dataset" in str(e.value)
