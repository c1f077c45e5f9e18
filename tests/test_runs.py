"""Run tracking (raysys.runs): run keys, part files and their merge, subset pools,
atomic folders, CPU shares. No Ray, no model."""
from __future__ import annotations

import os

import pyarrow as pa
import pytest

from raysys.cluster import cpu_share, cpus_needed
from raysys.config import SynthConfig
from raysys.errors import RaysysError
from raysys.io import atomic_dir
from raysys.pools.canonical import write_parquet_tasks
from raysys.pools.load import load_pool
from raysys.pools.markov import generate
from raysys.pools.subset import subset_pool
from raysys.runs.keys import model_ref, pool_stats, run_key, tasks_content
from raysys.runs.parts import Parts

DETAILS = pa.schema([("task_id", pa.string()), ("v", pa.int64())])


def test_run_key_is_stable_and_sensitive(tmp_path):
    assert run_key({"a": 1, "b": [1, 2]}) == run_key({"b": [1, 2], "a": 1})  # key order does not matter
    assert run_key({"a": 1}) != run_key({"a": 2})
    assert run_key({"a": 1}, "eval-").startswith("eval-") and len(run_key({"a": 1})) == 16
    assert model_ref(str(tmp_path)) == str(tmp_path.resolve()) and model_ref("org/name") == "org/name"
    f = tmp_path / "pool.jsonl"
    f.write_text("x\n")
    before = pool_stats(f)
    f.write_text("xy\n")  # an edited pool is another run
    assert pool_stats(f) != before and pool_stats(f)[0][:2] == ("pool.jsonl", 3)
    tasks = generate(SynthConfig(rules=3, examples_per_rule=2, seed=0))
    edited = [tasks[0].__class__(**{**tasks[0].__dict__, "instruction": "other"})] + tasks[1:]
    assert run_key(tasks_content(tasks)) != run_key(tasks_content(edited))


def test_parts_merge_first_part_wins_in_order_with_its_details(tmp_path):
    parts = Parts(tmp_path)
    parts.write([{"task_id": "b", "x": 1.0}, {"task_id": "a", "x": 2.0}],
                [{"task_id": "b", "v": 1}, {"task_id": "a", "v": 2}], DETAILS)
    first = {p.stem.removeprefix("scores-") for p in tmp_path.glob("scores-*")}
    parts.write([{"task_id": "a", "x": 9.0}, {"task_id": "c", "x": 3.0}],  # a retried batch repeats "a"
                [{"task_id": "a", "v": 9}, {"task_id": "c", "v": 3}], DETAILS)
    assert parts.done() == {"a", "b", "c"}
    names = sorted(p.stem.removeprefix("scores-") for p in tmp_path.glob("scores-*"))
    table, chosen = parts.merge(["c", "a", "b"])
    assert table.column("task_id").to_pylist() == ["c", "a", "b"]
    # both parts hold "a": the part that sorts first wins, and its details come with it
    a_from_first = names[0] in first
    assert chosen["a"] == names[0] and table.column("x").to_pylist() == [3.0, 2.0 if a_from_first else 9.0, 1.0]
    details = parts.merged_details(chosen, DETAILS).to_pylist()
    assert sorted((d["task_id"], d["v"]) for d in details) == [("a", 2 if a_from_first else 9), ("b", 1), ("c", 3)]
    with pytest.raises(RaysysError, match="1 task\\(s\\) were not scored \\(e.g. d\\); rerun"):
        parts.merge(["a", "d"])
    assert parts.merge(["a"])[0].num_rows == 1  # tasks of other runs' order are left out


def test_subset_pool_writes_once_and_names_missing_ids(tmp_path):
    tasks = generate(SynthConfig(rules=5, examples_per_rule=1, seed=1))
    pool = tmp_path / "pool.parquet"
    write_parquet_tasks(tasks, pool)
    ids = [tasks[3].task_id, tasks[1].task_id, tasks[3].task_id]
    out = subset_pool(str(pool), ids, tmp_path / "sub.parquet")
    assert [t.task_id for t in load_pool(out).tasks] == ids[:2]  # in order, once each
    with pytest.raises(RaysysError, match="1 task id\\(s\\) are not in .*'nope'"):
        subset_pool(str(pool), ["nope"], tmp_path / "other.parquet")
    assert not (tmp_path / "other.parquet").exists()


def test_atomic_dir_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("1")
    assert (target / "a.txt").read_text() == "1" and os.stat(target).st_mode & 0o055  # usual permissions
    with pytest.raises(ValueError):
        with atomic_dir(target) as tmp:
            (tmp / "b.txt").write_text("2")
            raise ValueError("interrupted")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]  # the old folder is left as it was
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # and no temporary folder is left behind
    with atomic_dir(target) as tmp:
        (tmp / "c.txt").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["c.txt"]  # replaced whole


@pytest.mark.parametrize("n, cpus, want", [(1, 2, (1.0, 2)), (2, 2, (0.5, 1)), (2, 8, (1.0, 4)), (4, 2, (0.25, 1))])
def test_cpu_share_leaves_one_cpu_free(n, cpus, want):
    assert cpu_share(n, cpus, "x") == want
    assert cpus_needed(n) == n * 0.25 + 1


def test_cpu_share_fails_fast_naming_the_numbers():
    with pytest.raises(RaysysError, match="5 scorer actor\\(s\\) need at least 2.25 CPUs; the cluster has 2"):
        cpu_share(5, 2, "5 scorer actor(s)")
