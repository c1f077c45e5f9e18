"""The two experiments: the diversity grid (cells, disjoint test rules, exact match, the
Tune driver, resume) and the novelty check (roles, ratio, Task Map moves), on cases whose
answers are known by construction, plus a real tiny model on each path."""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from raysys.config import GenerationConfig
from raysys.config.experiments import DiversityConfig, NoveltyConfig, SimilarityConfig
from raysys.errors import ConfigError, RaysysError
from raysys.experiments.diversity import (
    Cell,
    cell_result,
    cells,
    exact_matches,
    plot_heatmaps,
    prompt_rows,
    render,
    summarize,
    training_tasks,
    unseen_tasks,
)
from raysys.experiments.novelty import draw_roles, group_of, novelty_ratio
from raysys.pools.markov import generate, rewrite, rule_of

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
from conftest import needs_data, run_cli
from experiment_fakes import FakeNoveltyStages, Memorizer, Oracle, u0


def small(work, **kw) -> DiversityConfig:
    base = dict(work_dir=str(work), rules=(3, 12), examples_per_rule=(2, 5), steps=4, test_rules=10,
                test_examples_per_rule=5, seen_checked=6)
    base.update(kw)
    return DiversityConfig(**base)


# ---------------------------------------------------------------- diversity, pure

def test_grid_cells_and_their_pools_hold_by_construction(tmp_path):
    cfg = small(tmp_path, families=("unrestricted", "repeated:2"), skews=(0.0, 1.5), seeds=(0, 1))
    grid = cells(cfg)
    assert len(grid) == 2 * 2 * 2 * 2 * 2 and len({c.cell_id for c in grid}) == len(grid)
    for cell in grid:
        test = unseen_tasks(cfg, cell.family, cell.seed)
        train = training_tasks(cfg, cell, test)
        assert len(train) == cell.rules and len(test) == cfg.test_rules
        assert sum(len(t.instances) for t in train) == cell.rules * cell.examples_per_rule
        assert not {rule_of(t) for t in train} & {rule_of(t) for t in test}  # unseen by construction
        assert {t.metadata["family"] for t in train} == {cell.family.split(":")[0]}
        for t in train + test:
            x, y = rule_of(t)
            assert t.instruction == f"{x} -> {y}"
            for inst in t.instances:
                assert inst.outputs[0] == rewrite(inst.input, x, y)
        if cell.skew > 0:
            counts = [len(t.instances) for t in train]
            assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]
    # every cell of a (family, seed) is tested on the very same rules and inputs
    a, b = (unseen_tasks(cfg, "unrestricted", 0) for _ in range(2))
    assert [(t.instruction, [i.input for i in t.instances]) for t in a] == \
           [(t.instruction, [i.input for i in t.instances]) for t in b]
    assert {rule_of(t) for t in a} != {rule_of(t) for t in unseen_tasks(cfg, "unrestricted", 1)}


def test_transfer_test_rules_come_from_the_test_families(tmp_path):
    cfg = small(tmp_path, families=("repeated:4",), test_families=("repeated:2", "repeated:3"))
    test = unseen_tasks(cfg, "repeated:4", 0)
    assert {(t.metadata["family"], t.metadata["k"]) for t in test} == {("repeated", 2), ("repeated", 3)}
    assert all(rule_of(t)[0] == rule_of(t)[0][0] * t.metadata["k"] for t in test)


def test_exact_matches_against_a_direct_count(tmp_path):
    cfg = small(tmp_path, families=("repeated:2",), test_families=("repeated:2", "mirror:2"))
    rows = prompt_rows(unseen_tasks(cfg, "repeated:2", 0), "plain")
    rng = np.random.default_rng(0)
    preds = [r["target"] if rng.random() < 0.6 else r["target"] + "x" for r in rows]
    em = exact_matches(rows, preds)
    hits = [p == r["target"] for p, r in zip(preds, rows)]
    assert em["all"] == pytest.approx(np.mean(hits))
    for fam in ("repeated:2", "mirror:2"):
        assert em[fam] == pytest.approx(np.mean([h for h, r in zip(hits, rows) if r["family"] == fam]))
    assert em["copy"] == pytest.approx(np.mean([r["input"] == r["target"] for r in rows]))
    with pytest.raises(ValueError):
        exact_matches(rows, preds[:-1])


def test_summary_averages_seeds(tmp_path):
    cfg = small(tmp_path, seeds=(0, 1))
    rows = [cell_result(c, cfg, c.rules * c.examples_per_rule, [1.0, 0.5], 1.0,
                        {"all": c.seed / 4 + c.rules / 100, "copy": 0.1}, 0.5) for c in cells(cfg)]
    s = summarize(rows)
    assert len(s) == 4 and set(s["seeds"]) == {2}
    r = s[(s["rules"] == 12) & (s["examples_per_rule"] == 5)].iloc[0]
    assert r["unseen_em"] == pytest.approx((0 / 4 + 0.12 + 1 / 4 + 0.12) / 2)
    assert r["unseen_em_std"] == pytest.approx(np.std([0 / 4 + 0.12, 1 / 4 + 0.12], ddof=1))
    assert r["epochs"] == pytest.approx(4 * 64 / 60)
    assert "0.245 ± 0.177" in render(s)
    one = summarize([x for x in rows if x["seed"] == 0])
    assert one["unseen_em_std"].isna().all() and "±" not in render(one)
    assert Path(plot_heatmaps(s, tmp_path / "h.png")).stat().st_size > 5_000


def test_pairs_at_equal_distinct_examples_against_scipy():
    """equal_example_pairs: only cells with as many distinct examples pair up, more rules
    minus fewer, paired by seed; mean and t interval recomputed with scipy, the detectable
    difference checked by its power."""
    from scipy import stats as sps

    from raysys.experiments.diversity import equal_example_pairs, render_pairs

    rng = np.random.default_rng(3)
    shapes = [(8, 512), (64, 64), (8, 64), (64, 512), (512, 8)]  # 8 x 512 = 64 x 64 = 512 x 8 = 4096
    rows = [{"family": "unrestricted", "skew": 0.0, "rules": r, "examples_per_rule": e, "seed": seed,
             "unseen_em": float(rng.random()), "copy_em": 0.1} for seed in range(5) for r, e in shapes]
    pairs = equal_example_pairs(rows)
    assert [(p["more_rules"], p["fewer_rules"]) for p in pairs] == [
        ("64 x 64", "8 x 512"), ("512 x 8", "8 x 512"), ("512 x 8", "64 x 64")]
    em = {(r["rules"], r["examples_per_rule"], r["seed"]): r["unseen_em"] for r in rows}
    for p, (more, fewer) in zip(pairs, [((64, 64), (8, 512)), ((512, 8), (8, 512)), ((512, 8), (64, 64))]):
        d = np.array([em[(*more, s)] - em[(*fewer, s)] for s in range(5)])
        ci = sps.ttest_1samp(d, 0.0).confidence_interval(0.95)
        assert p["distinct_examples"] == 4096 and p["seeds"] == 5 and p["copy_floor"] == pytest.approx(0.1)
        assert p["difference"] == pytest.approx(d.mean()) and (p["ci95_low"], p["ci95_high"]) == pytest.approx(
            (ci.low, ci.high))
        assert p["more_rules_won"] == int((d > 0).sum())
        sd, crit = d.std(ddof=1), sps.t.ppf(0.975, 4)
        power = sps.nct.sf(crit, 4, p["detectable"] * np.sqrt(5) / sd) + sps.nct.cdf(-crit, 4, p["detectable"]
                                                                                    * np.sqrt(5) / sd)
        assert power == pytest.approx(0.8, abs=1e-6)
    assert "64 x 64 - 8 x 512" in render_pairs(pairs)


# ---------------------------------------------------------------- diversity, Tune and real model

@pytest.mark.ray
def test_diversity_on_tune_scores_known_learners_and_resumes(tmp_path):
    import experiment_fakes
    import ray
    import ray.cloudpickle

    from raysys.experiments.diversity_run import run_diversity

    ray.cloudpickle.register_pickle_by_value(experiment_fakes)  # trials run in other processes
    log = tmp_path / "fits.jsonl"
    cfg = small(tmp_path / "w")
    try:
        out = run_diversity(cfg, Memorizer(str(log)), num_cpus=2, say=lambda m: None)
        assert len(log.read_text().splitlines()) == 4
        for row in out["rows"]:
            # a memoriser copies unseen inputs: exactly the no-op share; it knows its training rows
            assert row["unseen_em"] == pytest.approx(row["copy_em"]) and row["seen_em"] == 1.0
            test = unseen_tasks(cfg, row["family"], row["seed"])
            assert row["copy_em"] == pytest.approx(np.mean([i.input == i.outputs[0] for t in test
                                                            for i in t.instances]))
        table = pd.read_csv(out["table"])
        assert list(zip(table["rules"], table["examples_per_rule"])) == [(3, 2), (3, 5), (12, 2), (12, 5)]
        assert Path(out["heatmap"]).stat().st_size > 5_000
        cells_csv = pd.read_csv(out["cells"])  # one row per cell and seed, naming the model
        assert len(cells_csv) == 4 and set(cells_csv["seed"]) == {0} and cells_csv["model"].str.contains("tiny").all()
        again = run_diversity(cfg, Memorizer(str(log)), num_cpus=2, say=lambda m: None)
        assert len(log.read_text().splitlines()) == 4 and again["rows"] == out["rows"]  # nothing redone
        with pytest.raises(RaysysError, match="other settings.*steps"):
            run_diversity(replace(cfg, steps=5), Memorizer(str(log)), say=lambda m: None)
    finally:
        ray.shutdown()


def test_a_learner_that_applies_the_rule_scores_one(tmp_path):
    from raysys.experiments.diversity_run import run_cell

    cfg = small(tmp_path, families=("repeated:2",), test_families=("repeated:2", "mirror:2"))
    row = run_cell(cfg, Cell("repeated:2", 1.0, 5, 3, 0), Oracle(str(tmp_path / "log")), tmp_path, say=lambda m: None)
    assert row["unseen_em"] == row["seen_em"] == row["unseen_em[mirror:2]"] == row["unseen_em[repeated:2]"] == 1.0


def test_a_real_cell_trains_the_tiny_model_from_scratch(tmp_path):
    import torch

    from raysys.experiments.diversity_run import TinyLearner, run_cell
    from raysys.models import load_model

    torch.set_num_threads(1)
    cfg = small(tmp_path, steps=60, tiny=replace(DiversityConfig().tiny, hidden_size=32, intermediate_size=64),
                train=replace(DiversityConfig().train, batch_size=16, micro_batch_size=16, learning_rate=3e-3))
    cell = Cell("unrestricted", 0.0, 4, 5, 0)
    row = run_cell(cfg, cell, TinyLearner(), tmp_path, say=lambda m: None)
    assert row["distinct_examples"] == 20 and row["examples_processed"] == 60 * 16
    assert row["final_train_loss"] < 2.5  # from ~4.6 (uniform over the vocabulary)
    assert 0.0 <= row["unseen_em"] <= 1.0 and 0.0 <= row["seen_em"] <= 1.0
    saved = tmp_path / "cells" / cell.cell_id
    assert json.loads((saved / "result.json").read_text()) == row
    lm = load_model(str(saved / "model"))  # an ordinary HF folder
    assert lm.kind == "causal"


def test_cli_experiment_errors_are_clean(tmp_path):
    r = run_cli("experiment", "diversity", f"--work-dir={tmp_path}", "rules=[0]")
    assert r.returncode == 2 and "rules and examples_per_rule must be >= 1" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("experiment", "novelty", f"--work-dir={tmp_path}", "group=nosuch", "synth.rules=40",
                "base_tasks=0")
    assert r.returncode == 2 and "no task of group 'nosuch'" in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------- novelty

def _pool(rules=80):
    from raysys.config import SynthConfig

    return generate(SynthConfig(rules=rules, examples_per_rule=3, families=("repeated:2", "periodic:2", "mirror:2",
                                                                           "unrestricted")))


def test_roles_are_disjoint_and_in_their_groups():
    tasks = _pool()
    cfg = NoveltyConfig(train_tasks=8, related_tasks=6, unrelated_tasks=10, base_tasks=20)
    roles = draw_roles(tasks, cfg, 0)
    sets = [set(roles.train), set(roles.related), set(roles.unrelated), set(roles.base)]
    assert [len(s) for s in sets] == [8, 6, 10, 20]
    assert sum(len(s) for s in sets) == len(set().union(*sets))
    group = {t.task_id: group_of(t) for t in tasks}
    assert all(group[t] == "repeated" for t in roles.train + roles.related)
    assert all(group[t] != "repeated" for t in roles.unrelated)
    assert draw_roles(tasks, cfg, 0) == roles and draw_roles(tasks, cfg, 1) != roles
    with pytest.raises(ConfigError, match="group 'repeated' has 20 tasks"):
        draw_roles(tasks, replace(cfg, train_tasks=15), 0)
    with pytest.raises(ConfigError, match="only .* tasks are left"):
        draw_roles(tasks, replace(cfg, base_tasks=100), 0)
    # disjoint draws: none trains on a task an earlier draw trained on; the rest as before
    second = draw_roles(tasks, cfg, 1, taken=roles.train)
    assert not set(second.train) & set(roles.train) and len(second.train) == 8
    assert not set(second.train) & set(second.related) and len(second.related) == 6
    assert draw_roles(tasks, cfg, 1, taken=()) == draw_roles(tasks, cfg, 1)
    with pytest.raises(ConfigError, match=r"group 'repeated' has 20 tasks \(4 not trained on"):
        draw_roles(tasks, cfg, 2, taken=roles.train + second.train)


@needs_data
def test_roles_on_real_niv2_categories(shared_data):
    from raysys.pools.load import load_pool

    tasks = load_pool(shared_data / "niv2").tasks
    cfg = NoveltyConfig(group="Question Answering", train_tasks=20, related_tasks=20, unrelated_tasks=3,
                        base_tasks=10)
    roles = draw_roles(tasks, cfg, 0)
    cats = {t.task_id: t.categories[0] for t in tasks}
    assert {cats[t] for t in roles.unrelated} == {"Cause Effect Classification", "Coreference Resolution",
                                                   "Data to Text"}
    assert {cats[t] for t in roles.train + roles.related} == {"Question Answering"}
    with pytest.raises(ConfigError, match="need train_tasks"):
        draw_roles(tasks, replace(cfg, unrelated_tasks=4), 0)


@needs_data
def test_roles_by_niv2_domain(shared_data):
    """The MMLU-derived tasks share one category; grouped by their first domain's top level
    they make groups (Biology: 6 tasks, among them 'Biology -> Virology')."""
    import json

    from raysys.pools.load import load_pool

    tasks = load_pool(shared_data / "niv2").tasks
    cfg = NoveltyConfig(group="Biology", group_by="domain", train_tasks=3, related_tasks=3, unrelated_tasks=10,
                        base_tasks=0)
    roles = draw_roles(tasks, cfg, 0)
    top = {}  # by hand, from the task files
    for f in (shared_data / "niv2" / "tasks").glob("*.json"):
        top[f.stem] = json.loads(f.read_text())["Domains"][0].split(" -> ")[0]
    assert sorted(roles.train + roles.related) == sorted(t for t, d in top.items() if d == "Biology")
    assert "task736_mmmlu_answer_generation_virology" in roles.train + roles.related
    assert all(top[t] != "Biology" for t in roles.unrelated) and len(roles.unrelated) == 10
    with pytest.raises(ConfigError, match="no task of group 'Question Answering'.*Biology"):
        draw_roles(tasks, replace(cfg, group="Question Answering"), 0)
    with pytest.raises(ConfigError, match="group_by must be category or domain"):
        NoveltyConfig(group_by="domains")


def test_ratio_from_a_shift_summary():
    shift = [{"group": "related", "tasks": 2, "mean_uncertainty_before": 0.4, "mean_uncertainty_after": 0.1,
              "mean_change": -0.3, "relative_change": -0.75},
             {"group": "unrelated", "tasks": 3, "mean_uncertainty_before": 0.2, "mean_uncertainty_after": 0.19,
              "mean_change": -0.01, "relative_change": -0.05}]
    r = novelty_ratio(shift)
    assert r["ratio"] == pytest.approx(30.0) and r["relative_ratio"] == pytest.approx(15.0)
    assert r["direction"] == "both decreased"
    shift[1].update(mean_change=0.02, relative_change=0.1)
    r = novelty_ratio(shift)
    assert r["ratio"] == pytest.approx(-15.0) and r["direction"] == "opposite directions"
    shift[1].update(mean_change=0.0, relative_change=0.0)
    assert novelty_ratio(shift)["ratio"] is None


def test_novelty_run_with_known_scores(tmp_path):
    from raysys.experiments.novelty_run import run_novelty
    from raysys.pools.canonical import write_parquet_tasks
    from raysys.selection.taskmap import categorize

    pool = tmp_path / "pool.parquet"
    tasks = _pool()
    write_parquet_tasks(tasks, pool)
    cfg = NoveltyConfig(work_dir=str(tmp_path / "w"), pool=str(pool), train_tasks=8, related_tasks=6,
                        unrelated_tasks=10, base_tasks=20, seeds=(0, 3),
                        model=replace(NoveltyConfig().model, path=str(tmp_path)))
    roles_of = {seed: draw_roles(tasks, cfg, seed) for seed in cfg.seeds}
    related_ids = tuple(t for r in roles_of.values() for t in r.related)
    summary = run_novelty(cfg, FakeNoveltyStages(related_ids), say=lambda m: None)
    assert [d["seed"] for d in summary["draws"]] == [0, 3]
    assert set(roles_of[0].train) & set(roles_of[3].train)  # these two draws overlap; with disjoint they do not
    apart = run_novelty(replace(cfg, work_dir=str(tmp_path / "apart"), disjoint=True), FakeNoveltyStages(related_ids),
                        say=lambda m: None)["draws"]
    assert apart[0]["train_tasks"] == list(roles_of[0].train)
    assert apart[1]["train_tasks"] == list(draw_roles(tasks, cfg, 3, taken=roles_of[0].train).train)
    assert not set(apart[0]["train_tasks"]) & set(apart[1]["train_tasks"])
    assert roles_of[0] != roles_of[3]
    for out in summary["draws"]:
        roles = roles_of[out["seed"]]
        rel = np.array([u0(t) for t in roles.related])
        unrel = np.array([u0(t) for t in roles.unrelated])
        assert out["related_change"] == pytest.approx(-0.5 * rel.mean())
        assert out["unrelated_change"] == pytest.approx(-0.1 * unrel.mean())
        assert out["direction"] == "both decreased"
        assert out["ratio"] == pytest.approx(5 * rel.mean() / unrel.mean())
        assert out["relative_ratio"] == pytest.approx(5.0)
        # the ceiling: the related tasks' U all gone, over the unrelated fall
        assert out["ceiling"] == pytest.approx(rel.mean() / (0.1 * unrel.mean()))
        # M0's answers scored under M1 (the fake's other factors), with their own ratio and ceiling
        assert out["same_related_change"] == pytest.approx(-0.3 * rel.mean())
        assert out["same_unrelated_change"] == pytest.approx(-0.05 * unrel.mean())
        assert out["same_ratio"] == pytest.approx(6 * rel.mean() / unrel.mean())
        assert out["same_ceiling"] == pytest.approx(rel.mean() / (0.05 * unrel.mean()))
        assert out["same_direction"] == "both decreased"
        # M0 was trained on the base tasks, M1 on the group's training tasks, starting from M0
        m1 = json.loads(Path(out["m1"], "model.json").read_text())
        assert m1["tasks"] == list(roles.train) and m1["from"] == out["m0"]
        assert Path(out["m1"]).parent == tmp_path / "w" / f"seed-{out['seed']}"
        assert json.loads(Path(out["m0"], "model.json").read_text())["tasks"] == list(roles.base)
        # the Task Map moves are those of an independent categorisation under each model
        ids = roles.heldout()
        before = np.array([u0(t) for t in ids])
        after = before * np.array([0.5] * len(roles.related) + [0.9] * len(roles.unrelated))
        c0, c1 = categorize(before, 0.5 + 0.5 * before), categorize(after, 0.5 + 0.5 * after)
        want: dict = {}
        for i, t in enumerate(ids):
            role = "related" if i < len(roles.related) else "unrelated"
            want.setdefault(role, {}).setdefault(f"{c0[i]} -> {c1[i]}", 0)
            want[role][f"{c0[i]} -> {c1[i]}"] += 1
        assert out["taskmap_moves"] == want
        per_task = pd.read_csv(out["tasks"])
        assert list(per_task["task_id"]) == ids and per_task["uncertainty_m1"].tolist() == pytest.approx(after.tolist())
        assert Path(out["shift"]).stat().st_size > 5_000
        assert set(out["seconds"]) == {"train_m0", "score_m0", "train_m1", "score_m1", "score_m1_same"}
        assert per_task["uncertainty_m1_same"].tolist() == pytest.approx(
            (before * np.array([0.7] * len(roles.related) + [0.95] * len(roles.unrelated))).tolist())
    # the summary over draws: mean and sample std, pooled ratio, one CSV row per draw
    rel = [-0.5 * np.mean([u0(t) for t in roles_of[s].related]) for s in cfg.seeds]
    unrel = [-0.1 * np.mean([u0(t) for t in roles_of[s].unrelated]) for s in cfg.seeds]
    assert summary["related_change_mean"] == pytest.approx(np.mean(rel))
    assert summary["related_change_std"] == pytest.approx(np.std(rel, ddof=1))
    assert summary["pooled_ratio"] == pytest.approx(np.mean(rel) / np.mean(unrel))
    # on M0's answers the related tasks' U fell by 30 %, the unrelated tasks' by 5 %
    same_rel, same_unrel = [0.6 * r for r in rel], [0.5 * u for u in unrel]
    assert summary["same_pooled_ratio"] == pytest.approx(np.mean(same_rel) / np.mean(same_unrel))
    assert summary["same_pooled_direction"] == "both decreased"
    assert summary["directions"] == {"both decreased": 2}
    saved = json.loads((tmp_path / "w" / "novelty.json").read_text())
    assert saved["ratio_mean"] == pytest.approx(np.mean([r / u for r, u in zip(rel, unrel)]))
    table = pd.read_csv(summary["csv"])
    assert table["seed"].tolist() == [0, 3] and table["model"].tolist() == [str(tmp_path)] * 2
    assert table["related_change"].tolist() == pytest.approx(rel)
    assert table["same_ratio"].tolist() == pytest.approx([1.2 * r / u for r, u in zip(rel, unrel)])
    assert table["train_tasks"].tolist() == [" ".join(roles_of[s].train) for s in cfg.seeds]
    tasks = pd.read_csv(summary["tasks"])  # every draw's tasks, the changes' means recomputed from them
    assert tasks["seed"].unique().tolist() == [0, 3] and set(tasks["model"]) == {str(tmp_path)}
    for s, want in zip(cfg.seeds, rel):
        mine = tasks[(tasks.seed == s) & (tasks.role == "related")]
        assert (mine.uncertainty_m1 - mine.uncertainty_m0).mean() == pytest.approx(want)
    assert saved["same_ratio_mean"] == pytest.approx(np.mean([1.2 * r / u for r, u in zip(rel, unrel)]))
    assert saved["ceiling_mean"] == pytest.approx(np.mean(
        [-np.mean([u0(t) for t in roles_of[s].related]) / u for s, u in zip(cfg.seeds, unrel)]))
    assert Path(summary["figure"]).stat().st_size > 5_000
    assert "pooled ratio" in summary["text"]


def test_novelty_with_unrelated_tasks_from_another_pool(tmp_path):
    """unrelated_pool: the unrelated tasks are drawn from that pool (a positive control
    whose answers look unlike the group's); the group's tasks from the pool; a task id in
    both pools is a clear error before any stage runs."""
    from raysys.experiments.novelty_run import run_novelty
    from raysys.pools.canonical import write_parquet_tasks

    tasks = _pool()
    write_parquet_tasks(tasks, tmp_path / "pool.parquet")
    other = [replace(t, task_id=f"other-{t.task_id}") for t in _pool(rules=40)[:30]]
    write_parquet_tasks(other, tmp_path / "other.parquet")
    cfg = NoveltyConfig(work_dir=str(tmp_path / "w"), pool=str(tmp_path / "pool.parquet"), train_tasks=8,
                        related_tasks=6, unrelated_tasks=10, base_tasks=0, seeds=(0,),
                        unrelated_pool=str(tmp_path / "other.parquet"),
                        model=replace(NoveltyConfig().model, path=str(tmp_path)))
    out = run_novelty(cfg, FakeNoveltyStages(()), say=lambda m: None)["draws"][0]
    roles = json.loads((tmp_path / "w" / "seed-0" / "roles.json").read_text())
    assert set(roles["unrelated"]) <= {t.task_id for t in other} and len(roles["unrelated"]) == 10
    group = {t.task_id: group_of(t) for t in tasks}
    assert all(group[t] == "repeated" for t in roles["train"] + roles["related"])
    assert out["unrelated_tasks"] == 10 and out["related_tasks"] == 6
    clash = replace(cfg, work_dir=str(tmp_path / "clash"), unrelated_pool=str(tmp_path / "pool.parquet"))
    with pytest.raises(ConfigError, match=f"shares {len(tasks)} task id"):
        run_novelty(clash, FakeNoveltyStages(()), say=lambda m: None)


class _LocalStages:
    """Real tiny models and real scoring; training in-process (raysys.training.local), on
    the related held-out tasks' own instances when `on_related`: a case known by
    construction, where the related tasks must gain far more likelihood than the others."""

    def __init__(self, pool, cfg, related=()):
        from raysys.stages import RayStages, StageSettings

        self.real, self.related = RayStages(StageSettings.of(cfg), str(pool)), tuple(related)

    def train(self, model, task_ids, out, *, val_ids=(), cfg=None):
        from raysys.models import load_model
        from raysys.pools.load import load_pool
        from raysys.training.data import training_examples
        from raysys.training.local import train_steps

        if (out / "config.json").is_file():
            return str(out), {}
        ids = self.related or task_ids
        tasks = load_pool(self.real.pool).tasks
        lm = load_model(model)
        rows = training_examples(tasks, ids, cfg)
        train_steps(lm.model, lm.tokenizer, lm.kind, rows, replace(cfg, batch_size=8, micro_batch_size=8, workers=1), 300)
        lm.model.save_pretrained(out)
        lm.tokenizer.save_pretrained(out)
        return str(out), {}

    def score(self, model, task_ids, out, *, answers_from=""):
        return self.real.score(model, task_ids, out, answers_from=answers_from)


def test_novelty_with_a_real_model_trained_on_the_related_tasks(tmp_path):
    import torch

    from raysys.experiments.novelty_run import run_novelty

    torch.set_num_threads(2)
    cfg = NoveltyConfig(work_dir=str(tmp_path / "w"), synth=replace(NoveltyConfig().synth, rules=60),
                        train_tasks=4, related_tasks=4, unrelated_tasks=4, base_tasks=0,
                        tiny=replace(NoveltyConfig().tiny, hidden_size=64, layers=2, intermediate_size=128),
                        train=replace(NoveltyConfig().train, learning_rate=3e-3),
                        scoring=replace(NoveltyConfig().scoring, instances=2, perturbations=3,
                                        generation=GenerationConfig(max_new_tokens=12)))
    from raysys.pools.synthetic import write_synthetic_pool
    pool = tmp_path / "w" / "pool.parquet"
    (tmp_path / "w").mkdir()
    write_synthetic_pool(cfg.synth, pool)
    from raysys.pools.load import load_pool
    roles = draw_roles(load_pool(pool).tasks, cfg, 0)
    out = run_novelty(cfg, _LocalStages(pool, cfg, roles.related), say=lambda m: None)["draws"][0]
    t = pd.read_csv(out["tasks"])
    related = t["role"] == "related"
    gain = t["probability_m1"] - t["probability_m0"]
    assert t["probability_m1"][related].min() > 0.9  # M1 learned exactly these tasks' answers
    assert gain[related].mean() > gain[~related].mean()
    scores = pq.read_table(out["scores_m1"]).to_pandas().set_index("task_id")
    assert t["uncertainty_m1"].tolist() == scores.loc[t["task_id"], "prompt_uncertainty"].tolist()
    # M0's answers under M1: the answers scored are M0's, the likelihoods M1's
    fixed = pq.read_table(out["scores_m0"]).to_pandas().set_index("task_id")
    again = pq.read_table(Path(out["scores_m1"]).with_name("scores-m1-same-answers.parquet")).to_pandas()
    assert [a.tolist() for a in again.set_index("task_id").loc[t["task_id"], "answers"]] == \
        [a.tolist() for a in fixed.loc[t["task_id"], "answers"]]
    assert np.isfinite(t["uncertainty_m1_same"]).all() and np.isfinite(t["probability_m1_same"]).all()
    assert set(t["category_m0"]) <= {"Ambiguous", "Easy", "Difficult"}
    # M1 = M0 (no training at all): every change is exactly zero and the ratio is undefined. p_i0
    # by teacher forcing on both sides (decode_p0 off): the decode's own p_i0 (a KV-cached step)
    # agrees with the forward only to rounding (~1e-10), and "exactly" is what is tested here
    cfg = replace(cfg, work_dir=str(tmp_path / "same"), scoring=replace(cfg.scoring, decode_p0=False))
    same = run_novelty(cfg, _Identity(pool, cfg), say=lambda m: None)
    assert same["pooled_ratio"] is None and same["ratio_undefined"] == 1
    same = same["draws"][0]
    assert same["related_change"] == 0 and same["unrelated_change"] == 0 and same["ratio"] is None
    assert same["direction"] == "no change"
    # M0's answers scored by M0 again (answers_from): exactly M0's own scores
    assert same["same_related_change"] == 0 and same["same_unrelated_change"] == 0 and same["same_ceiling"] is None


class _Identity(_LocalStages):
    def train(self, model, task_ids, out, *, val_ids=(), cfg=None):
        return model, {}


def test_the_shipped_cpu_config_is_the_default():
    from raysys.config.mapping import load_config

    assert load_config(DiversityConfig, TESTS.parent / "jobs/configs/diversity.yaml") == DiversityConfig()
    assert load_config(NoveltyConfig, TESTS.parent / "jobs/configs/novelty.yaml") == NoveltyConfig()
    assert load_config(SimilarityConfig, TESTS.parent / "jobs/configs/similarity.yaml") == SimilarityConfig()


def test_job_entrypoint_runs_the_experiment_verbs(tmp_path):
    import subprocess

    r = subprocess.run([sys.executable, str(TESTS.parent / "jobs/experiment.py"), "novelty", "--work-dir",
                        str(tmp_path), "train_tasks=0"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and "train_tasks, related_tasks and unrelated_tasks must be >= 1" in r.stderr
