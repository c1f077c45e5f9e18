"""The instruction-similarity experiment (`raysys experiment similarity`): targets per
seed, what each strategy selects (checked against a direct cosine-similarity ranking),
the rows and the summary over seeds (checked against numpy), resuming, the shared
"mean +- std" helpers, and one real run through the CLI with the tiny model on Ray."""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import NOISE, run_cli

from raysys.config.experiments import SimilarityConfig
from raysys.errors import ConfigError
from raysys.experiments.similarity import draw_targets
from raysys.stats import mean_std, paired


def test_mean_std_and_paired_differences():
    assert mean_std([1.0, 2.0, 4.0]) == (pytest.approx(7 / 3), pytest.approx(np.std([1, 2, 4], ddof=1)))
    assert mean_std([3.0, None, float("nan")]) == (3.0, None) and mean_std([]) == (None, None)
    rows = [{"strategy": s, "seed": seed, "x": v} for s, seed, v in
            [("a", 0, 0.5), ("a", 1, 0.2), ("a", 2, 0.9), ("b", 0, 0.4), ("b", 1, 0.3), ("b", 3, 0.0)]]
    p = paired(rows, "x", "a", "b")
    assert p["pairs"] == 2 and p["differences"] == pytest.approx([0.1, -0.1])  # seeds 2 and 3 have no pair
    assert p["mean"] == pytest.approx(0.0) and p["std"] == pytest.approx(np.std([0.1, -0.1], ddof=1))
    assert p["a_better"] == 1


def test_targets_are_drawn_per_seed():
    ids = [f"t{i}" for i in range(30)]
    a, b = draw_targets(ids, 5, 0), draw_targets(ids, 5, 1)
    assert len(a) == 5 and a == sorted(a, key=ids.index) and a != b and draw_targets(ids, 5, 0) == a
    assert draw_targets(ids, 0, 3) == ids
    with pytest.raises(ConfigError, match="target_tasks = 31 but the targets' pool has 30"):
        draw_targets(ids, 31, 0)
    with pytest.raises(ConfigError, match="strategies must be"):
        SimilarityConfig(strategies=("similarity", "perplexity-high"))
    with pytest.raises(ConfigError, match="align.encoder is set apart"):
        SimilarityConfig(align=replace(SimilarityConfig().align, encoder="/elsewhere"))


def _h(*parts) -> float:
    return int.from_bytes(hashlib.sha256(json.dumps(parts).encode()).digest()[:8], "big") / 2**64


class _Stages:
    """The loop's real selection; training writes the task list; evaluation gives a
    Rouge-L known from the trained tasks and the targets. Calls are counted."""

    calls: list = []

    def __init__(self, cfg, pool, targets_pool, targets_file, encoder):
        from raysys.stages import RayStages, StageSettings

        self.real = RayStages(StageSettings.of(cfg, targets=str(targets_file),
                                               select=replace(cfg.select, encoder=encoder)), pool, targets_pool)
        self.encoder = encoder

    def select(self, strategy, budget, seed, task_ids, scores, out_dir, *, model=""):
        _Stages.calls.append(("select", str(out_dir)))
        return self.real.select(strategy, budget, seed, task_ids, scores, out_dir, model=model)

    def train(self, model, task_ids, out, *, val_ids=(), cfg=None):
        _Stages.calls.append(("train", str(out.parent)))
        out.mkdir(parents=True, exist_ok=True)
        (out / "tasks.json").write_text(json.dumps(list(task_ids)))
        return str(out), {"train_loss": _h("loss", list(task_ids))}

    def evaluate(self, model, splits, out_dir):
        _Stages.calls.append(("evaluate", str(out_dir)))
        p = Path(model, "tasks.json")
        trained = json.loads(p.read_text()) if p.is_file() else []
        return {"test": {"rougeL": _h(trained, splits["test"]), "exact_match": _h("em", trained)}}


def test_similarity_run_selects_trains_and_summarizes(tmp_path):
    from raysys.experiments.similarity_run import run_similarity
    from raysys.pools.load import load_pool
    from raysys.selection.embed import embed, load_encoder

    cfg = SimilarityConfig(work_dir=str(tmp_path / "w"), synth=replace(SimilarityConfig().synth, rules=60),
                           target_tasks=4, budget=5, seeds=(0, 1), align=replace(SimilarityConfig().align, epochs=1))
    _Stages.calls = []
    out = run_similarity(cfg, _Stages, say=lambda m: None)
    rows = out["rows"]
    assert [(r["seed"], r["strategy"]) for r in rows] == [
        (s, k) for s in (0, 1) for k in ("base", "similarity", "similarity-aligned", "random")]
    tasks = {t.task_id: t for t in load_pool(tmp_path / "w" / "pool.parquet").tasks}
    enc = load_encoder("")
    ids = list(tasks)
    emb = embed(enc, [tasks[t].instruction for t in ids])
    for seed in (0, 1):
        chosen = json.loads(Path(tmp_path / "w" / f"seed-{seed}" / "similarity" / "selected.json").read_text())
        target_ids = draw_targets(ids, 4, seed)
        # the targets left the pool, and similarity took the top 5 by max cosine to them, computed here
        cand = [i for i, t in enumerate(ids) if t not in target_ids]
        t_emb = embed(enc, [tasks[t].instruction for t in target_ids])
        key = (emb[cand] @ t_emb.T).max(axis=1)
        want = [ids[cand[i]] for i in np.argsort(-key, kind="stable")[:5]]
        assert chosen["task_ids"] == want
        row = next(r for r in rows if r["seed"] == seed and r["strategy"] == "similarity")
        assert row["selected_similarity"] == pytest.approx(float(np.sort(key)[::-1][:5].mean()), abs=1e-6)
        rnd = next(r for r in rows if r["seed"] == seed and r["strategy"] == "random")
        assert rnd["selected_similarity"] < row["selected_similarity"]
        for r in rows:
            if r["seed"] == seed:  # the stand-in's numbers, from what was really trained and evaluated
                trained = json.loads(Path(tmp_path / "w" / f"seed-{seed}" / r["strategy"] / "selected.json")
                                     .read_text())["task_ids"] if r["strategy"] != "base" else []
                assert r["rougeL"] == pytest.approx(_h(trained, target_ids))
                assert r["n_train_tasks"] == len(trained)
    aligned = json.loads((tmp_path / "w" / "encoder-aligned" / "raysys_align.json").read_text())
    assert not set(aligned["heldout_task_ids"]) & set(draw_targets(ids, 4, 0) + draw_targets(ids, 4, 1))
    # the summary: mean and sample std over seeds; paired differences with the same seed
    s = out["strategies"]["similarity"]
    vals = [r["rougeL"] for r in rows if r["strategy"] == "similarity"]
    assert s["rougeL"] == pytest.approx(np.mean(vals)) and s["rougeL_std"] == pytest.approx(np.std(vals, ddof=1))
    d = out["paired"]["similarity - random"]["rougeL"]
    rnd = [r["rougeL"] for r in rows if r["strategy"] == "random"]
    assert d["differences"] == pytest.approx(np.subtract(vals, rnd).tolist())
    assert "similarity-aligned - base" in out["paired"] and "base - random" not in out["paired"]
    table = pd.read_csv(out["csv"])
    assert len(table) == 8 and set(table["model"]) == {"tiny"} and table["rougeL"].tolist() == pytest.approx(
        [r["rougeL"] for r in rows])
    assert Path(out["figure"]).stat().st_size > 5_000 and "paired similarity - random" in out["text"]
    # a rerun reads every finished (seed, strategy) back: no stage runs again
    n = len(_Stages.calls)
    again = run_similarity(cfg, _Stages, say=lambda m: None)
    assert len(_Stages.calls) == n and again["rows"] == rows


def test_similarity_with_the_tiny_model_through_the_cli(tmp_path):
    """The real stages end to end: the aligned encoder, Ray Train (one worker; two in
    tests/test_training.py), evaluation."""
    r = run_cli("experiment", "similarity", "--work-dir", tmp_path / "w", "synth.rules=40", "target_tasks=3",
                "budget=4", "seeds=[0]", "strategies=[similarity-aligned,random]", "train.epochs=1",
                "train.batch_size=8", "train.micro_batch_size=4", "train.workers=1",
                "evaluation.instances=2", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not [n for n in NOISE if n in r.stdout + r.stderr], r.stderr[-3000:]
    table = pd.read_csv(tmp_path / "w" / "similarity.csv")
    assert table["strategy"].tolist() == ["base", "similarity-aligned", "random"]
    assert (table["n_train_tasks"] == [0, 4, 4]).all() and table["train_tokens"][1:].gt(0).all()
    ev = json.loads((tmp_path / "w" / "seed-0" / "random" / "eval-0.json").read_text())
    n = np.array([t["n_instances"] for t in ev["per_task"]])
    assert table["rougeL"][2] == pytest.approx(np.dot([t["rougeL"] for t in ev["per_task"]], n) / n.sum())
    assert "paired similarity-aligned - random" in r.stdout
