"""The README demo (raysys.experiments.demo): its tasks drawn from the real data, its per-group
metrics against a hand computation, and the whole demo on the real model, made small,
through the CLI: what it prints, summary.json against the stages' own outputs, a rerun."""
from __future__ import annotations

import json
from pathlib import Path
from dataclasses import replace

import pyarrow.parquet as pq
import pytest
from conftest import assert_readable, run_cli

from raysys.config import DemoConfig
from raysys.errors import RaysysError
from raysys.experiments.demo import demo_tasks, group_metrics
from raysys.pools.load import load_pool


def test_the_demo_tasks_come_from_the_real_data_and_stay_apart(shared_data, tmp_path):
    cfg = DemoConfig()
    tasks = demo_tasks(cfg, tmp_path, shared_data)
    pool = {t.task_id: t for t in load_pool(tasks.pool).tasks}
    held = {t.task_id: t for t in load_pool(tasks.heldout).tasks}
    # 57 NIV2 training tasks less 8 held out, and the 175 seed tasks
    assert tasks.sources == {"niv2": 49, "self_instruct/seed_tasks.jsonl": 175} and len(pool) == 224
    assert {k: len(v) for k, v in tasks.groups.items()} == {
        "niv2 (test split)": 3, "niv2 (held out)": 8, "self_instruct/user_oriented_instructions.jsonl": 12}
    assert set(held) == {t for ids in tasks.groups.values() for t in ids} and not set(held) & set(pool)
    assert all(held[t].metadata["split"] == "test" for t in tasks.groups["niv2 (test split)"])
    assert all(held[t].metadata["split"] == "train" for t in tasks.groups["niv2 (held out)"])
    assert tasks.groups["self_instruct/user_oriented_instructions.jsonl"] == tuple(
        f"user_oriented_task_{i}" for i in range(12))
    assert len(tasks.candidates) == 40 == len(set(tasks.candidates)) and set(tasks.candidates) <= set(pool)

    # the same draw again; the written pools are kept as they are (scoring resumes by the file)
    stamp = (tmp_path / "pool.parquet").stat().st_mtime_ns
    again = demo_tasks(cfg, tmp_path, shared_data)
    assert again == tasks and (tmp_path / "pool.parquet").stat().st_mtime_ns == stamp
    other = demo_tasks(replace(cfg, seed=1), tmp_path / "other", shared_data)
    assert other.candidates != tasks.candidates and other.groups["niv2 (held out)"] != tasks.groups["niv2 (held out)"]
    everything = demo_tasks(replace(cfg, candidates=0, heldout_from_pool=0), tmp_path / "all", shared_data)
    assert len(everything.candidates) == 232


def test_the_default_data_dir_is_beside_the_checkout():
    from raysys.experiments.demo import default_data_dir

    assert default_data_dir() == Path(__file__).resolve().parents[2] / "shared" / "data"


def test_missing_data_and_duplicate_ids_are_clear_errors(shared_data, tmp_path):
    with pytest.raises(RaysysError, match="nowhere/niv2 not found.*data_dir"):
        demo_tasks(DemoConfig(), tmp_path, tmp_path / "nowhere")
    twice = replace(DemoConfig(), pool=("self_instruct/seed_tasks.jsonl", "self_instruct/seed_tasks.jsonl"),
                    heldout_from_pool=0)
    with pytest.raises(RaysysError, match="175 task id.*two of the demo's sources.*seed_task_0"):
        demo_tasks(twice, tmp_path, shared_data)


def test_group_metrics_are_instance_weighted_means_of_the_tasks():
    rows = [{"task_id": "a", "is_classification": True, "n_instances": 4, "rougeL": 0.5, "exact_match": 0.25},
            {"task_id": "b", "is_classification": False, "n_instances": 1, "rougeL": 1.0, "exact_match": 1.0},
            {"task_id": "c", "is_classification": False, "n_instances": 3, "rougeL": 0.0, "exact_match": 0.0}]
    m = group_metrics(rows, {"one": ("a",), "two": ("b", "c")})
    assert m["all"]["rougeL"] == pytest.approx((4 * 0.5 + 1.0) / 8)
    assert m["all"]["exact_match"] == pytest.approx((4 * 0.25 + 1.0) / 8)
    assert m["one"]["rougeL"] == pytest.approx(0.5) and m["two"]["rougeL"] == pytest.approx(1.0 / 4)
    assert m["two"]["exact_match_generative"] == pytest.approx(0.25) and m["two"]["rougeL_classification"] is None


def test_the_table_shows_each_difference_with_random_beside_the_noise_floor():
    from raysys.experiments.demo_report import BASE, _minus, render

    def ev(nll):
        return {"all": {"nll": nll, "rougeL": 10.0, "exact_match": 0.0}}

    evals = {BASE: ev(3.0), "prompt-uncertainty": ev(2.71), "random": ev(2.75), "random-2": ev(2.73)}
    assert _minus(evals, "prompt-uncertainty", "random") == pytest.approx(-0.04)
    assert _minus(evals, "random-2", "random") == pytest.approx(-0.02) and _minus(evals, "x", "random") is None
    training = {"train_loss_first_epoch": 2.0, "train_loss_last_epoch": 1.5}
    s = {"heldout_groups": {}, "heldout_before": evals[BASE], "pool_mean_prompt_uncertainty": 0.1, "seconds": 5.0,
         "noise_floor": _minus(evals, "random-2", "random"),
         "strategies": {k: {"selected": ["a", "b"], "selected_train_tokens": 3990.0, "training": training,
                            "selected_mean_prompt_uncertainty": 0.2, "heldout": evals[k],
                            "nll_minus_random": _minus(evals, k, "random")} for k in evals if k != BASE}}
    table = render(s)
    row = next(line for line in table.splitlines() if line.strip().startswith("prompt-uncertainty"))
    assert "3990" in row and "2.710" in row and "-0.040" in row
    assert "noise floor: random-2 - random = -0.020 nats/token" in table


@pytest.mark.ray
def test_the_demo_on_the_real_model_made_small_and_its_rerun(real_model, shared_data, tmp_path):
    """Every stage on real parts (the import found in the cache, Ray Data scoring, the Task
    Map, selection, LoRA through Ray Train, evaluation), at a few tasks and tokens."""
    work = tmp_path / "demo"
    args = ["demo", f"work_dir={work}", f"model={real_model}", f"data_dir={shared_data}", "candidates=5", "budget=700",
            "heldout_per_source=2", "heldout_from_pool=1", "generation.max_new_tokens=4", "scoring.perturbations=2",
            "train.epochs=1", "train.instances_per_task=2", "train.batch_size=4", "train.micro_batch_size=2",
            "evaluation.instances=1", "strategies=[prompt-uncertainty]"]  # the loop over strategies runs once
    r = run_cli(*args, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert len(out.splitlines()) <= 100, out
    log = assert_readable(r, work / "raysys.log")  # no library line on the terminal; they are in the log
    assert "RayTrainWorker" in log
    for stage in range(1, 7):
        assert f"[{stage}/6]" in r.stdout
    s = json.loads((work / "summary.json").read_text())
    assert s["n_parameters"] == 134_515_008 and s["model_path"] == str(real_model)
    assert s["candidates_scored"] == 5 and s["heldout_tasks"] == 3 + 1 + 2

    # the numbers are the stages' own outputs
    u = dict(zip(*pq.read_table(work / "scores.parquet", columns=["task_id", "prompt_uncertainty"]).to_pydict()
                 .values()))
    pu = s["strategies"]["prompt-uncertainty"]
    # 700 training tokens: the most uncertain first, each task taken while its tokens fit
    from raysys.pools.subset import pool_tasks
    from raysys.selection.run import training_costs

    train = replace(DemoConfig().train, epochs=1, instances_per_task=2, batch_size=4, micro_batch_size=2)
    tasks = pool_tasks(str(work / "pool.parquet"))
    cost = {t: c["train_tokens"] for t, c in training_costs([tasks[t] for t in u], str(real_model), train).items()}
    want, left = [], 700
    for t in sorted(u, key=lambda t: -u[t]):
        if cost[t] <= left:
            want.append(t)
            left -= cost[t]
    assert pu["selected"] == want and pu["selected_train_tokens"] == sum(cost[t] for t in want) <= 700
    assert pu["selected_mean_prompt_uncertainty"] == pytest.approx(sum(u[t] for t in want) / len(want))
    assert pu["nll_minus_random"] is None and s["noise_floor"] is None and "noise floor" not in r.stdout
    base = json.loads((work / "eval" / "base" / "eval-0.json").read_text())
    assert s["heldout_rougeL_before"] == pytest.approx(base["rougeL"]["overall"])
    assert s["heldout_exact_match_before"] == pytest.approx(base["exact_match"]["overall"])
    after = json.loads((work / "eval" / "prompt-uncertainty" / "eval-0.json").read_text())
    assert s["heldout_rougeL_after"] == pytest.approx(after["rougeL"]["overall"])
    trained = json.loads((work / "models" / "prompt-uncertainty" / "raysys_train.json").read_text())
    assert trained["tasks"] == pu["selected"] and trained["config"]["lora"] and trained["config"]["workers"] == 2
    assert pu["training"]["train_loss_first_epoch"] == trained["epochs"][0]["train_loss"]
    assert sum(s["taskmap"].values()) == 5 and (work / "taskmap.png").stat().st_size > 10_000
    assert (work / "results.png").stat().st_size > 10_000

    r2 = run_cli(*args, timeout=600)  # a finished demo: every stage is found done
    assert r2.returncode == 0, r2.stderr[-3000:]
    s2 = json.loads((work / "summary.json").read_text())
    assert {k: v for k, v in s2.items() if k != "seconds"} == {k: v for k, v in s.items() if k != "seconds"}
    assert s2["seconds"] < s["seconds"] / 2


def test_a_bad_demo_setting_is_one_line_before_anything_runs(tmp_path):
    r = run_cli("demo", "candidatez=3")
    assert r.returncode == 2 and "unknown key" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("demo", f"work_dir={tmp_path / 'w'}", "budget_unit=tasks", "budget=60")  # more than the 40 candidates
    assert r.returncode == 2 and "at most candidates" in r.stderr
    r = run_cli("demo", f"work_dir={tmp_path / 'w'}", "strategies=[prompt-uncertainty, nope]")
    assert r.returncode == 2 and "nope" in r.stderr and not (tmp_path / "w").exists()


def test_the_readme_demo_table_follows_from_the_shipped_summary():
    """Every number of the README's demo table and its bullets, recomputed from
    docs/results/demo_summary.json (the demo's own summary.json)."""
    root = Path(__file__).resolve().parents[1]
    s = json.loads((root / "docs" / "results" / "demo_summary.json").read_text())
    readme = (root / "README.md").read_text()
    b = s["heldout_before"]
    groups = ("niv2 (test split)", "self_instruct/user_oriented_instructions.jsonl")
    assert (f"| SmolLM2-135M-Instruct as imported | – | – | – | – | {b['all']['nll']:.3f} | – | {b['all']['rougeL']:.1f} | "
            f"{b['all']['exact_match']:.1f} | {b[groups[0]]['rougeL']:.1f} | {b[groups[1]]['rougeL']:.1f} |") in readme
    nll = {k: v["heldout"]["all"]["nll"] for k, v in s["strategies"].items()}
    label = {"prompt-uncertainty": "prompt-uncertain tasks", "random": "random tasks",
             "random-2": "random tasks, a second draw"}
    for k, v in s["strategies"].items():
        m, ids = v["heldout"], v["selected"]
        seed = sum(t.startswith("seed_task") for t in ids)
        diff = nll[k] - nll["random"]
        cell = f"**{nll[k]:.3f}**" if nll[k] == min(nll.values()) else f"{nll[k]:.3f}"
        row = (f"| + LoRA on {label[k]} | {len(ids) - seed} + {seed} | {v['selected_train_examples']:.0f} | "
               f"{v['selected_train_tokens']:,.0f} | {v['selected_mean_prompt_uncertainty']:.3f} | {cell} | "
               f"{'0' if k == 'random' else f'{diff:+.3f}'} | {m['all']['rougeL']:.1f} | {m['all']['exact_match']:.1f} | "
               f"{m[groups[0]]['rougeL']:.1f} | {m[groups[1]]['rougeL']:.1f} |")
        assert row in readme, row
    tokens = [v["selected_train_tokens"] for v in s["strategies"].values()]
    assert max(tokens) / min(tokens) - 1 < 0.02 and f"{min(tokens):,.0f}-{max(tokens):,.0f} tokens, within 2 %" in readme
    assert f"from {b['all']['nll']:.2f} to {min(nll.values()):.2f}-{max(nll.values()):.2f}" in readme
    mmlu = [v["heldout"]["niv2 (held out)"]["nll"] for v in s["strategies"].values()]
    assert f"({b['niv2 (held out)']['nll']:.2f} → {min(mmlu):.2f}-{max(mmlu):.2f})" in readme
    assert f"random's by {s['strategies']['prompt-uncertainty']['nll_minus_random']:.3f}" in readme
    assert f"draws differ by {s['noise_floor']:.3f}" in readme and s["noise_floor"] == nll["random-2"] - nll["random"]
    assert f"mean U is {s['pool_mean_prompt_uncertainty']:.3f}" in readme.replace("\n", " ")
    minutes, seconds = divmod(round(s["seconds"]), 60)
    assert f"**{minutes} min {seconds} s**" in readme
