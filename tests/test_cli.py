"""The CLI contracts later stages and users rely on, run as real subprocesses."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import run_cli
from raysys.pools import load_pool

VERBS = [[], ["pool"], ["pool", "inspect"], ["pool", "convert"], ["pool", "synth"], ["pool", "show"],
         ["score"], ["select"], ["taskmap"], ["align"], ["train"], ["eval"], ["model"], ["model", "init-tiny"],
         ["model", "import"], ["model", "info"], ["loop"], ["demo"]]


@pytest.mark.parametrize("verb", VERBS, ids=lambda v: " ".join(v) or "raysys")
def test_help_on_every_verb(verb):
    r = run_cli(*verb, "--help")
    assert r.returncode == 0 and "usage: raysys" in r.stdout


def inspect_json(path, *extra):
    r = run_cli("pool", "inspect", path, "--json", *extra)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_inspect_niv2(shared_data):
    s = inspect_json(shared_data / "niv2")
    assert s["format"] == "niv2" and s["num_tasks"] == 60
    # the 57 MMLU tasks (4 answer letters) are classification; the text-generation
    # tasks task648 (coreference answer span) and task957 (E2E data-to-text) are generative
    assert (s["num_classification"], s["num_generative"], s["num_unknown"]) == (58, 2, 0)
    assert s["num_instances"] == sum(len(t.instances) for t in load_pool(shared_data / "niv2").tasks)
    assert s["splits"] == {"train": 57, "test": 3}


def test_inspect_alpaca_and_self_instruct(shared_data):
    s = inspect_json(shared_data / "alpaca" / "alpaca_random5000_subset.json")
    assert (s["format"], s["num_tasks"], s["num_instances"]) == ("alpaca", 5000, 5000)
    assert s["num_classification"] + s["num_generative"] + s["num_unknown"] == 5000
    seed_file = shared_data / "self_instruct" / "seed_tasks.jsonl"
    s = inspect_json(seed_file)
    flags = [json.loads(line)["is_classification"] for line in seed_file.read_text().splitlines() if line.strip()]
    assert (s["format"], s["num_tasks"]) == ("self_instruct", 175)
    assert s["num_classification"] == sum(flags) and s["num_generative"] == 175 - sum(flags)


def test_convert_then_inspect_parquet(shared_data, tmp_path):
    out = tmp_path / "niv2.parquet"
    r = run_cli("pool", "convert", shared_data / "niv2", "--out", out, "--split", "train")
    assert r.returncode == 0, r.stderr
    assert load_pool(out).tasks == load_pool(shared_data / "niv2", split="train").tasks
    assert inspect_json(out)["num_tasks"] == 57


def test_synth_writes_and_resumes(tmp_path):
    out = tmp_path / "pool.parquet"
    args = ["pool", "synth", "--rules", "300", "--examples-per-rule", "3", "--seed", "5", "--out", out,
            "--families", "repeated:2", "mirror:2", "--skew", "0.5", "--unseen-rules", "20", "--verbosity", "verbose"]
    r = run_cli(*args)
    assert r.returncode == 0 and r.stdout.startswith("wrote 320 tasks"), r.stderr
    mtime = out.stat().st_mtime_ns
    r = run_cli(*args)
    assert r.returncode == 0 and r.stdout.startswith("up to date"), r.stdout
    assert out.stat().st_mtime_ns == mtime  # nothing redone
    tasks = load_pool(out).tasks
    assert {t.metadata["family"] for t in tasks} == {"repeated", "mirror"}
    assert sum(len(t.instances) for t in tasks if t.metadata["split"] == "seen") == 900
    r = run_cli(*args[:-1], "terse")  # another config rewrites the file
    assert r.stdout.startswith("wrote") and out.stat().st_mtime_ns != mtime


def test_synth_bad_option_is_a_clear_error(tmp_path):
    r = run_cli("pool", "synth", "--rules", "10", "--out", tmp_path / "p.parquet", "--families", "spiral:2")
    assert r.returncode == 2 and "unknown rule family 'spiral'" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "p.parquet").exists()


def test_score_bad_input_is_a_clear_error(tmp_path, tiny_model_dir):
    out = tmp_path / "s.parquet"
    r = run_cli("score", "--pool", tmp_path / "missing.jsonl", "--model", tiny_model_dir, "--out", out)
    assert r.returncode == 2 and "missing.jsonl" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("score", "--pool", tmp_path / "missing.jsonl", "--model", tmp_path / "nomodel", "--out", "s.parquet")
    assert r.returncode == 2 and "model folder not found" in r.stderr
    r = run_cli("score", "--pool", "p.jsonl", "--model", "m", "--out", "s.parquet", "--drop-rate", "2")
    assert r.returncode == 2 and "drop_rate" in r.stderr


def test_model_init_tiny_and_info(tmp_path):
    out = tmp_path / "tiny"
    r = run_cli("model", "init-tiny", "--out", out, "--layers", "2")
    assert r.returncode == 0, r.stderr
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 2 and AutoTokenizer.from_pretrained(out)("a").input_ids == [1, 14]
    r = run_cli("model", "info", out)
    info = json.loads(r.stdout)
    assert info["kind"] == "causal" and info["parameters"] == sum(p.numel() for p in model.parameters())
    r = run_cli("model", "init-tiny", "--out", out)
    assert r.returncode == 2 and "not empty" in r.stderr


@pytest.mark.ray
@pytest.mark.slow
def test_demo_runs_the_loop_and_a_rerun_only_prints_its_results(tmp_path):
    """The README demo on real parts (Ray Tune, Ray Data scoring, Ray Train, evaluation),
    made small: 2 strategies x 1 seed x 2 rounds on a 28-task pool (about 2.5 minutes: kept
    out of the default run; test_loop.py runs the demo on fake parts, and test_jobs.py a
    loop on real parts through `raysys loop`)."""
    work = tmp_path / "demo"
    args = ["demo", f"work_dir={work}", "loop.synth.rules=24", "loop.synth.unseen_rules=4", "loop.tiny.layers=1",
            "loop.seeds=[0]", "loop.schedule=[4, 8]", "loop.validation_tasks=3", "loop.generation.max_new_tokens=4",
            "loop.train.epochs=1", "loop.train.batch_size=4", "loop.train.micro_batch_size=2",
            "loop.evaluation.instances=1"]
    r = run_cli(*args, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "synthetic pool written" in r.stdout and "num_tasks                28" in r.stdout
    assert "built-in tiny model written" in r.stdout and r.stdout.count("Now complete the following example") == 2
    assert "2 strategies x 1 seeds = 2 trials" in r.stdout and "4 test tasks" in r.stdout
    table = pq.read_table(work / "results.parquet").to_pylist()
    assert [(t["strategy"], t["round"], t["n_tasks"]) for t in table] == [
        ("prompt-uncertainty", 0, 4), ("prompt-uncertainty", 1, 8), ("random", 0, 4), ("random", 1, 8)]
    assert table[0]["test_rougeL"] == table[2]["test_rougeL"]  # round 0 is shared by the seed's strategies
    for t in table:
        assert t["test_rougeL"] is not None and t["val_loss"] > 0 and t["train_loss"] > 0
    sel = json.loads((work / "prompt-uncertainty/seed-0/round-1/selected.json").read_text())
    scores = pq.read_table(work / "prompt-uncertainty/seed-0/round-1/scores/scores.parquet").to_pydict()
    u = dict(zip(scores["task_id"], scores["prompt_uncertainty"]))
    assert len(u) == 28 - 4 - 4 - 3  # the remaining pool: minus test, round 0 and validation tasks
    assert sel["strategy"] == "prompt-uncertainty" and min(u[t] for t in sel["task_ids"]) >= sorted(u.values())[-4]
    assert table[1]["selected_prompt_uncertainty"] == pytest.approx(sum(u[t] for t in sel["task_ids"]) / 4)
    trained = json.loads((work / "random/seed-0/round-1/model/raysys_train.json").read_text())
    assert len(trained["tasks"]) == 8 and trained["base_model"] == str(work / "tiny-model")
    for name in ("curves.png", "uncertainty.png", "taskmap.png"):
        assert (work / name).stat().st_size > 10_000
    assert "[4/4] results" in r.stdout and "prompt-uncertainty" in r.stdout.split("[4/4] results")[1]
    r2 = run_cli(*args, timeout=600)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert "synthetic pool written" not in r2.stdout and "resuming the Tune experiment" in r2.stdout
    assert pq.read_table(work / "results.parquet").to_pylist() == table
    r = run_cli("demo", "loop.synth.rulez=3")
    assert r.returncode == 2 and "unknown key" in r.stderr and "Traceback" not in r.stderr


def test_loop_mistakes_are_clear_errors(tmp_path):
    for args, message in [(["--resume"], "--resume needs --work-dir"),
                          (["--resume", "--work-dir", str(tmp_path / "none")], "no loop to resume"),
                          (["--resume", "--work-dir", str(tmp_path), "seeds=[1]"], "give no config"),
                          (["strategies=[nope]"], "unknown strategy 'nope'"),
                          (["schedule=[10, 5]"], "increasing"),
                          (["--config", str(tmp_path / "missing.yaml")], "no such config")]:
        r = run_cli("loop", *args)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
