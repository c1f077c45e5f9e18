"""Fine-tuning on Ray Train: DDP and DeepSpeed ZeRO-2/3, with and without LoRA, on the
tiny model with 2 workers; resumption; the exported folder; data and config pieces."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from raysys.config import SynthConfig, TrainConfig
from raysys.errors import ConfigError
from raysys.pools import load_pool
from raysys.synth import write_synthetic_pool
from raysys.training.data import IGNORE, collate, encode, training_examples

CFG = TrainConfig(epochs=2, batch_size=8, micro_batch_size=4, workers=2, learning_rate=1e-3, demonstrations=0,
                  instances_per_task=4)


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    path = tmp_path_factory.mktemp("train") / "pool.parquet"
    write_synthetic_pool(SynthConfig(rules=24, examples_per_rule=6, seed=1), path)
    return path, list(load_pool(str(path)).tasks)


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


def test_examples_and_labels(pool, tiny_lm, tiny_t5):
    _, tasks = pool
    ids = [tasks[3].task_id, tasks[0].task_id, tasks[3].task_id]
    rows = training_examples(tasks, ids, CFG)
    assert [r["task_id"] for r in rows] == [tasks[3].task_id] * 4 + [tasks[0].task_id] * 4  # dedup, order kept
    assert rows == training_examples(tasks, ids, CFG)  # deterministic sampling
    tok = tiny_lm.tokenizer
    x, y = encode(tok, "causal", "Add: ", "abc", CFG)
    prompt_ids = tok("Add: ").input_ids
    assert x == prompt_ids + tok("abc", add_special_tokens=False).input_ids + [tok.eos_token_id]
    assert y[: len(prompt_ids)] == [IGNORE] * len(prompt_ids) and y[len(prompt_ids):] == x[len(prompt_ids):]
    x, y = encode(tiny_t5.tokenizer, "seq2seq", "Add: ", "abc", CFG)
    assert x == tiny_t5.tokenizer("Add: ").input_ids
    assert y == tiny_t5.tokenizer("abc", add_special_tokens=False).input_ids + [tiny_t5.tokenizer.eos_token_id]
    batch = collate(tok, "causal", ["a", "abcdef"], ["x", "yz"], CFG)
    assert batch["input_ids"].shape == batch["labels"].shape == (2, 1 + 6 + 2 + 1)
    assert batch["attention_mask"][0].sum() == 1 + 1 + 1 + 1 and (batch["labels"][0, 4:] == IGNORE).all()
    # the loss on these labels is the target tokens' mean NLL, the same as computing it by hand
    model = tiny_lm.model
    with torch.no_grad():
        t = {k: torch.as_tensor(v) for k, v in batch.items()}
        loss = model(**t).loss.item()
        logp = torch.log_softmax(model(input_ids=t["input_ids"], attention_mask=t["attention_mask"]).logits, -1)
    nll = [-logp[r, i - 1, t["labels"][r, i]].item() for r in range(2) for i in range(1, t["labels"].shape[1])
           if t["labels"][r, i] != IGNORE]
    assert loss == pytest.approx(np.mean(nll), rel=1e-5)
    with pytest.raises(ConfigError, match="multiple of micro_batch_size x workers"):
        TrainConfig(batch_size=10, micro_batch_size=4, workers=2)


def _check_export(out: Path, base: Path, pool_path: Path, tmp_path: Path):
    model = AutoModelForCausalLM.from_pretrained(out)
    AutoTokenizer.from_pretrained(out)
    base_model = AutoModelForCausalLM.from_pretrained(base)
    changed = [n for (n, p), (_, q) in zip(model.named_parameters(), base_model.named_parameters())
               if not torch.equal(p, q)]
    assert changed, "the exported weights equal the base model's"
    return json.loads((out / "raysys_train.json").read_text())


FIRST_EPOCH_LOSS: dict[bool, float] = {}  # lora -> the DDP run's first-epoch mean loss


@pytest.mark.ray
@pytest.mark.parametrize("backend, stage, lora", [
    ("ddp", 0, False), ("ddp", 0, True), ("deepspeed", 2, False), ("deepspeed", 2, True),
    ("deepspeed", 3, False), ("deepspeed", 3, True)])
def test_training_lowers_the_loss_and_exports(pool, tiny_model_dir, ray_cluster, tmp_path, backend, stage, lora):
    from raysys.training.trainer import train_model

    path, tasks = pool
    cfg = replace(CFG, backend=backend, zero_stage=stage, lora=lora, learning_rate=3e-3 if lora else 1e-3)
    run = train_model(tasks, [t.task_id for t in tasks[:16]], str(tiny_model_dir), str(tmp_path / "out"), cfg)
    first, last = run.epochs[0], run.epochs[-1]
    assert run.examples == 64 and [e["epoch"] for e in run.epochs] == [0, 1]
    assert last["train_loss"] < first["train_loss"] and last["last_loss"] < first["first_loss"] - 0.5
    # ZeRO partitions the same computation: every backend and stage gives DDP's losses
    ref = FIRST_EPOCH_LOSS.setdefault(lora, first["train_loss"])
    assert first["train_loss"] == pytest.approx(ref, rel=1e-4)
    facts = _check_export(tmp_path / "out", tiny_model_dir, path, tmp_path)
    assert facts["chosen_epoch"] == 1 and facts["config"]["backend"] == backend
    again = train_model(tasks, [t.task_id for t in tasks[:16]], str(tiny_model_dir), str(tmp_path / "out"), cfg)
    assert again.resumed  # the finished export is reused, nothing retrained


def _train_workers() -> list:
    import psutil

    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any("RayTrainWorker" in part or "TrainController" in part for part in (p.info["cmdline"] or [])):
                out.append(p)
        except psutil.Error:
            pass
    return out


@pytest.mark.ray
def test_killed_driver_then_rerun_resumes_from_the_checkpoint(pool, tiny_model_dir, tmp_path):
    path, tasks = pool
    (tmp_path / "sel.json").write_text(json.dumps([t.task_id for t in tasks[:16]]))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "raysys.cli", "train", "--pool", str(path), "--tasks", str(tmp_path / "sel.json"),
           "--model", str(tiny_model_dir), "--out", str(out), "--epochs", "3", "--batch-size", "8",
           "--micro-batch-size", "4", "--workers", "2", "--demonstrations", "0", "--instances-per-task", "4",
           "--backend", "ddp"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    # a checkpoint counts once Ray Train has registered it in the run's snapshot
    while not list(Path(f"{out}.train").glob("*/checkpoint_manager_snapshot.json")) and time.time() < deadline:
        assert proc.poll() is None, "training ended before it could be interrupted"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray cluster it started
    proc.wait()
    deadline = time.time() + 60
    while _train_workers() and time.time() < deadline:
        time.sleep(0.2)
    assert not out.exists()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    history = json.loads((out / "raysys_train.json").read_text())["epochs"]
    assert [e["epoch"] for e in history] == [0, 1, 2]
    assert history[0]["started_at_epoch"] == 0 and history[-1]["started_at_epoch"] >= 1  # not trained from scratch
    assert "epoch 2: train loss" in r.stdout
