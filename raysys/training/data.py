"""Training examples from a pool and selected task ids, and their tokenization (pure).

An example is (prompt, target): the task's prompt in the chosen template (the same
templates as scoring) and one reference output of an instance. Up to
`instances_per_task` instances per task, drawn deterministically from (seed, task id).
Tokenization puts the loss on target tokens only (with the chat template: on the
assistant's turn, the answer and the eos that closes the turn):
- causal LM: input = prompt ids + target ids + EOS; labels = -100 on the prompt;
- seq2seq: input = prompt ids; labels = target ids + EOS.
Prompts longer than max_source_tokens keep their last tokens (the instance input and
"Output:" stay); targets longer than max_target_tokens keep their first tokens.
"""
from __future__ import annotations

import random
from typing import Any, Sequence

import numpy as np

from raysys.config import TrainConfig
from raysys.errors import RaysysError
from raysys.prompts import Template
from raysys.schema import Task

IGNORE = -100


def training_examples(tasks: Sequence[Task], task_ids: Sequence[str], cfg: TrainConfig,
                      template: Template | None = None) -> list[dict[str, str]]:
    """Rows {task_id, instance_id, prompt, target} for the selected tasks, in selection order;
    `template`: cfg.prompt's resolved for the model (needed for chat; a text template by default)."""
    template = template or Template(cfg.prompt.template)
    by_id = {t.task_id: t for t in tasks}
    missing = [t for t in task_ids if t not in by_id]
    if missing:
        raise RaysysError(f"{len(missing)} selected task(s) are not in the pool (e.g. {missing[0]!r})")
    rows = []
    for tid in dict.fromkeys(task_ids):  # a repeated id is trained once
        task = by_id[tid]
        insts = list(task.instances)
        if len(insts) > cfg.instances_per_task:
            rng = random.Random(f"{cfg.seed}:{tid}:train")
            insts = [insts[i] for i in sorted(rng.sample(range(len(insts)), cfg.instances_per_task))]
        for inst in insts:
            if not inst.outputs:
                continue
            prompt = template.text(task.instruction, inst.input, task.demonstrations, cfg.prompt.demonstrations)
            rows.append({"task_id": tid, "instance_id": inst.id, "prompt": prompt, "target": inst.outputs[0]})
    return rows


def encode(tokenizer, kind: str, prompt: str, target: str, cfg: TrainConfig) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of one example; see the module docstring."""
    src = tokenizer(prompt).input_ids[-cfg.max_source_tokens:]
    tgt = tokenizer(target, add_special_tokens=False).input_ids[: cfg.max_target_tokens] + [tokenizer.eos_token_id]
    if kind == "seq2seq":
        return src, tgt
    return src + tgt, [IGNORE] * len(src) + tgt


def collate(tokenizer, kind: str, prompts: Sequence[str], targets: Sequence[str], cfg: TrainConfig) -> dict[str, Any]:
    """A padded batch (numpy int64): input_ids, attention_mask, labels (right padding)."""
    pairs = [encode(tokenizer, kind, p, t, cfg) for p, t in zip(prompts, targets)]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max(len(x) for x, _ in pairs)
    ids = np.full((len(pairs), width), pad, dtype=np.int64)
    mask = np.zeros((len(pairs), width), dtype=np.int64)
    lab_width = width if kind != "seq2seq" else max(len(y) for _, y in pairs)
    labels = np.full((len(pairs), lab_width), IGNORE, dtype=np.int64)
    for r, (x, y) in enumerate(pairs):
        ids[r, : len(x)] = x
        mask[r, : len(x)] = 1
        labels[r, : len(y)] = y
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
