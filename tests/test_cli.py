"""The CLI contracts later stages and users rely on, run as real subprocesses."""
from __future__ import annotations

import json

import pytest
from conftest import run_cli
from transformers import AutoModelForCausalLM, AutoTokenizer

from raysys.cli.main import build_parser
from raysys.pools.load import load_pool


def _leaf_verbs(parser, prefix=()):
    """Every runnable verb of the parser, e.g. ("pool", "synth"), ("experiment", "strategies")."""
    import argparse

    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [prefix]
    return [v for name, p in subs[0].choices.items() for v in _leaf_verbs(p, (*prefix, name))]


LEAVES = _leaf_verbs(build_parser())
VERBS = [[], *sorted({v[:1] for v in LEAVES if len(v) > 1}), *LEAVES]  # raysys, the groups, every verb


@pytest.mark.parametrize("verb", [list(v) for v in VERBS], ids=lambda v: " ".join(v) or "raysys")
def test_help_on_every_verb(verb):
    r = run_cli(*verb, "--help")
    assert r.returncode == 0 and "usage: raysys" in r.stdout


def test_the_command_reference_lists_every_verb():
    """docs/cli.md has a usage line for each verb the parser knows, and none it does not."""
    import re
    from pathlib import Path

    verbs = {" ".join(v) for v in LEAVES}
    text = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    block = text.split("```")[1]
    lines = {m.group(1) for m in re.finditer(r"^raysys ((?:[a-z][a-z-]*)(?: [a-z][a-z-]*)?)", block, re.MULTILINE)}
    listed = {v for v in verbs if any(line == v or line.startswith(v + " ") for line in lines)}
    assert listed == verbs, sorted(verbs - listed)
    unknown = [line for line in lines if line not in verbs and line.split()[0] not in verbs]
    assert not unknown, unknown
    assert len(verbs) >= 20 and "experiment strategies" in verbs


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




def test_loop_mistakes_are_clear_errors(tmp_path):
    for args, message in [(["--resume"], "--resume needs --work-dir"),
                          (["--resume", "--work-dir", str(tmp_path / "none")], "no loop to resume"),
                          (["--resume", "--work-dir", str(tmp_path), "seeds=[1]"], "give no config"),
                          (["strategies=[nope]"], "unknown strategy 'nope'"),
                          (["schedule=[10, 5]"], "increasing"),
                          (["--config", str(tmp_path / "missing.yaml")], "no such config")]:
        r = run_cli("loop", *args)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
