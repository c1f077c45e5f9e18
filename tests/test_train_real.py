"""The real model (SmolLM2-135M-Instruct, `real_model`) fine-tuned with LoRA through Ray
Train on 2 CPU workers with the shipped CPU config (jobs/configs/train_smollm2_lora.yaml):
the loss falls, and the exported folder loads with raysys.models and scores. Kept out of the
default run (about 45 s): tests/test_demo.py trains the real model with LoRA on 2 Ray Train
workers through the same train_model and evaluates its exports."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
from conftest import ROOT

from raysys.config import GenerationConfig, PromptConfig, ScoringConfig, SynthConfig, TrainConfig
from raysys.config.mapping import load_config
from raysys.pools.synthetic import generate


@pytest.mark.ray
@pytest.mark.slow
def test_lora_on_the_real_model_with_two_workers_lowers_the_loss_and_exports(real_model, ray_local, tmp_path):
    from raysys.models import load_model
    from raysys.scoring.scorer import TaskScorer
    from raysys.training.trainer import train_model

    shipped = load_config(TrainConfig, ROOT / "jobs" / "configs" / "train_smollm2_lora.yaml")
    assert shipped.lora and shipped.cpu_bf16 and shipped.prompt.template == "chat"
    # 4 short rewriting tasks x 4 instances (~86 tokens each), 2 workers x 2 micro batches of 4 per epoch
    tasks = generate(SynthConfig(rules=4, examples_per_rule=4, seed=3))
    cfg = replace(shipped, workers=2, micro_batch_size=4, batch_size=8, instances_per_task=4, epochs=3,
                  learning_rate=1e-3)
    run = train_model(tasks, [t.task_id for t in tasks], str(real_model), str(tmp_path / "out"), cfg, progress=False)
    assert run.examples == 16 and [e["epoch"] for e in run.epochs] == [0, 1, 2]
    first, last = run.epochs[0], run.epochs[-1]
    assert last["train_loss"] < 0.8 * first["train_loss"], [e["train_loss"] for e in run.epochs]
    for e in run.epochs:  # the throughput figures are there, steady state apart from start-up
        assert e["micro_batches"] == 2 and e["steady_tokens_per_s_worker"] > 0 and e["first_batch_seconds"] >= 0
        assert e["tokens"] <= e["padded_tokens"] and e["checkpoint_mb"] < 50  # the adapters, not the base weights
    facts = json.loads((tmp_path / "out" / "raysys_train.json").read_text())
    assert facts["chosen_epoch"] == 2 and facts["config"]["lora"]

    lm = load_model(str(tmp_path / "out"))  # LoRA merged: an ordinary HF folder
    assert lm.kind == "causal" and not any("lora" in n for n, _ in lm.model.named_parameters())
    scoring = ScoringConfig(instances=2, perturbations=2, prompt=PromptConfig("chat", 0), ifd=False, entropy=False,
                            generation=GenerationConfig(max_new_tokens=8))
    rows, _ = TaskScorer("", scoring, loaded=lm, device="cpu").score(tasks[:1])
    assert len(rows) == 1 and math.isfinite(rows[0]["prompt_uncertainty"])
