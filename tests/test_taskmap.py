"""Task Map: the rank rule on hand-built tables, the tables, and the PNGs on real scores."""
from __future__ import annotations

import json

import matplotlib.image
import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import run_cli

from raysys.config import TaskMapConfig
from raysys.selection.run import run_taskmap
from raysys.selection.taskmap import categorize, counts_table, shift_summary


def test_rank_rule_on_a_hand_built_table():
    u = np.array([0.5, 0.1, 0.9, 0.3, 0.7, 0.2])
    p = np.array([0.2, 0.8, 0.6, 0.4, 0.1, 0.9])
    assert categorize(u, p).tolist() == ["Difficult", "Easy", "Ambiguous", "Difficult", "Ambiguous", "Easy"]
    # other shares: half ambiguous (c, e, a), then a third of the rest easy (f)
    cfg = TaskMapConfig(ambiguous_share=0.5, easy_share=1 / 3)
    assert categorize(u, p, cfg).tolist() == ["Ambiguous", "Difficult", "Ambiguous", "Difficult", "Ambiguous", "Easy"]
    assert set(categorize(u, p, TaskMapConfig(0.0, 1.0))) == {"Easy"}
    assert set(categorize(u, p, TaskMapConfig(1.0, 0.0))) == {"Ambiguous"}


def test_ties_go_to_the_task_first_in_the_file():
    u = np.array([0.5, 0.5, 0.5, 0.1])
    p = np.array([0.3, 0.3, 0.3, 0.3])
    # 1 of 4 ambiguous: the first of three equal; then round(3 / 2) = 2 easy: the next two
    assert categorize(u, p, TaskMapConfig(0.25, 0.5)).tolist() == ["Ambiguous", "Easy", "Easy", "Difficult"]


def test_rule_against_a_straightforward_loop():
    rng = np.random.default_rng(0)
    u, p = rng.random(101), rng.random(101)
    got = categorize(u, p)
    by_u = sorted(range(101), key=lambda i: (-u[i], i))
    amb = set(by_u[:34])  # round(101 / 3)
    rest = sorted((i for i in range(101) if i not in amb), key=lambda i: (-p[i], i))
    easy = set(rest[:34])  # round(67 / 2)
    want = ["Ambiguous" if i in amb else "Easy" if i in easy else "Difficult" for i in range(101)]
    assert got.tolist() == want
    rows = counts_table(u, p, got)
    for row in rows:
        members = [i for i in range(101) if want[i] == row["category"]]
        assert row["tasks"] == len(members)
        assert row["mean_prompt_uncertainty"] == pytest.approx(sum(u[i] for i in members) / len(members))
        assert row["mean_prediction_probability"] == pytest.approx(sum(p[i] for i in members) / len(members))


def test_shift_summary():
    rows = shift_summary(np.array([0.4, 0.2, 0.3]), np.array([0.1, 0.1, 0.3]), np.array(["rel", "rel", "unrel"]))
    assert rows[0]["group"] == "rel" and rows[0]["tasks"] == 2
    assert rows[0]["mean_uncertainty_before"] == pytest.approx(0.3)
    assert rows[0]["mean_uncertainty_after"] == pytest.approx(0.1)
    assert rows[0]["mean_change"] == pytest.approx(-0.2) and rows[0]["relative_change"] == pytest.approx(-2 / 3)
    assert rows[1]["group"] == "unrel" and rows[1]["mean_change"] == 0.0


def _png(path):
    img = matplotlib.image.imread(path)
    assert img.shape[0] > 400 and img.shape[1] > 600  # a readable figure, not an empty file
    assert img[..., :3].std() > 0.05  # something is drawn
    return img


def test_taskmap_on_real_scores_writes_png_and_table(niv2_scored, tmp_path):
    pool, scores = niv2_scored
    r = run_cli("taskmap", "--scores", scores, "--out", tmp_path / "map.png", "--table", tmp_path / "counts.csv")
    assert r.returncode == 0, r.stderr
    _png(tmp_path / "map.png")
    t = pq.read_table(scores)
    cat = categorize(np.array(t.column("prompt_uncertainty")), np.array(t.column("prediction_probability")))
    lines = (tmp_path / "counts.csv").read_text().splitlines()
    assert lines[0].startswith("category,tasks,share")
    assert [int(x.split(",")[1]) for x in lines[1:]] == [int((cat == c).sum()) for c in ("Ambiguous", "Easy",
                                                                                        "Difficult")]
    assert "Ambiguous" in r.stdout and "wrote" in r.stdout


def test_shift_view_with_groups(niv2_scored, tmp_path):
    import pyarrow as pa

    _, scores = niv2_scored
    t = pq.read_table(scores)
    ids = t.column("task_id").to_pylist()
    u = np.array(t.column("prompt_uncertainty"))
    after = t.set_column(t.column_names.index("prompt_uncertainty"), "prompt_uncertainty",
                         pa.array(np.where(np.arange(len(ids)) < 6, u / 4, u)))  # the first six drop to a quarter
    pq.write_table(after, tmp_path / "after.parquet")
    (tmp_path / "groups.json").write_text(json.dumps({"related": ids[:6], "unrelated": ids[6:]}))
    result = run_taskmap(str(tmp_path / "after.parquet"), str(tmp_path / "m.png"), before=str(scores),
                         groups=str(tmp_path / "groups.json"))
    _png(tmp_path / "m.shift.png")
    rel, unrel = result["shift_summary"]
    assert rel["group"] == "related" and rel["relative_change"] == pytest.approx(-0.75)
    assert unrel["tasks"] == len(ids) - 6 and unrel["mean_change"] == 0.0
    assert (tmp_path / "m.shift.csv").read_text().startswith("group,tasks,mean_uncertainty_before")
    (tmp_path / "g2.json").write_text(json.dumps({"a": ids[:2], "b": ids[1:3]}))
    r = run_cli("taskmap", "--scores", tmp_path / "after.parquet", "--out", tmp_path / "x.png", "--before", scores,
                "--groups", tmp_path / "g2.json")
    assert r.returncode == 2 and "is in two groups" in r.stderr and "Traceback" not in r.stderr
