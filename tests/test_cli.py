"""The CLI contracts later stages and users rely on, run as real subprocesses."""
from __future__ import annotations

import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import run_cli
from raysys.pools import load_pool

VERBS = [[], ["pool"], ["pool", "inspect"], ["pool", "convert"], ["pool", "synth"], ["pool", "show"],
         ["score"], ["select"], ["taskmap"], ["align"], ["train"], ["eval"], ["model"], ["model", "init-tiny"],
         ["model", "info"], ["demo"]]


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
def test_demo_runs_and_reuses_its_work(tmp_path):
    args = ["demo", f"work_dir={tmp_path / 'demo'}", "synth.rules=20", "synth.unseen_rules=4", "tiny.layers=1",
            "scoring.max_new_tokens=4", "show_tasks=3", "select_budget=5", "heldout_tasks=3", "train.epochs=1",
            "evaluation.max_new_tokens=4"]
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert "synthetic pool written" in r.stdout and "num_tasks                24" in r.stdout
    assert "built the tiny model" in r.stdout and r.stdout.count("Now complete the following example") == 2
    assert "scored 24 tasks" in r.stdout and "most prompt-uncertain:" in r.stdout
    heldout = json.loads((tmp_path / "demo" / "heldout.json").read_text())
    assert heldout == ["unseen-000000", "unseen-000001", "unseen-000002"]
    for name in ("prompt-uncertainty", "random"):
        sel = json.loads((tmp_path / "demo" / f"selected-{name}.json").read_text())
        assert sel["strategy"] == name and len(sel["task_ids"]) == 5 and not set(heldout) & set(sel["task_ids"])
    assert "epoch 0: train loss" in r.stdout and "held-out exact match" in r.stdout
    trained = json.loads((tmp_path / "demo" / "tuned" / "raysys_train.json").read_text())
    assert trained["tasks"] == json.loads((tmp_path / "demo" / "selected-prompt-uncertainty.json").read_text())[
        "task_ids"]
    assert "Task Map: Ambiguous 8, Easy 8, Difficult 8" in r.stdout
    assert (tmp_path / "demo" / "taskmap.png").stat().st_size > 10_000
    r = run_cli(*args)
    assert "synthetic pool up to date" in r.stdout and "using the model" in r.stdout
    assert "(0 now, 24 resumed)" in r.stdout
    r = run_cli("demo", "synth.rulez=3")
    assert r.returncode == 2 and "unknown key" in r.stderr and "Traceback" not in r.stderr
