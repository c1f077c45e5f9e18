"""Training examples from a pool and selected task ids, and their tokenization (pure).

An example is (prompt, target): the task's prompt in the chosen template (the same
templates as scoring; a conversation's turns by the model's chat template) and one
reference output of an instance. Up to
`instances_per_task` instances per task, drawn deterministically from (seed, task id).
Tokenization puts the loss on target tokens only (with the chat template: on the
assistant's turn, the answer and the eos that closes the turn):
- causal LM: input = prompt ids + target ids + EOS; labels = -100 on the prompt;
- seq2seq: input = prompt ids; labels = target ids + EOS.
Prompts longer than max_source_tokens keep their last tokens (the instance input and
"Output:" stay); targets longer than max_target_tokens keep their first tokens.
With `length_grouping` > 1 a worker sorts each run of that many micro batches' rows by
length before cutting it into micro batches (`length_grouped`): less padding (SmolLM2 on
NIV2 with the chat template, micro batch 8: 34% padded tokens as read, 9% grouped by 8).
"""
from __future__ import annotations

import random
from typing import Any, Sequence

import numpy as np

from raysys.config import TrainConfig
from raysys.errors import RaysysError
from raysys.prompts import Template
from raysys.schema import Instance, Task

IGNORE = -100


def training_instances(tasks: Sequence[Task], task_ids: Sequence[str], cfg: TrainConfig) -> list[tuple[Task, Instance]]:
    """The (task, instance) pairs trained on for the selected tasks, in selection order: up
    to cfg.instances_per_task instances of each (drawn from (cfg.seed, task id)), those with
    a reference output. The one home of that draw: training and `select --export`."""
    by_id = {t.task_id: t for t in tasks}
    missing = [t for t in task_ids if t not in by_id]
    if missing:
        raise RaysysError(f"{len(missing)} selected task(s) are not in the pool (e.g. {missing[0]!r})")
    out = []
    for tid in dict.fromkeys(task_ids):  # a repeated id is trained once
        task = by_id[tid]
        insts = list(task.instances)
        if len(insts) > cfg.instances_per_task:
            rng = random.Random(f"{cfg.seed}:{tid}:train")
            insts = [insts[i] for i in sorted(rng.sample(range(len(insts)), cfg.instances_per_task))]
        out += [(task, inst) for inst in insts if inst.outputs]
    return out


def training_examples(tasks: Sequence[Task], task_ids: Sequence[str], cfg: TrainConfig,
                      template: Template | None = None) -> list[dict[str, str]]:
    """Rows {task_id, instance_id, prompt, target} for the selected tasks, in selection order;
    `template`: cfg.prompt's resolved for the model (needed for chat and conversations; a
    text template by default)."""
    template = template or Template(cfg.prompt.template)
    return [{"task_id": task.task_id, "instance_id": inst.id, "target": inst.outputs[0],
             "prompt": template.prompt(task, inst, cfg.prompt.demonstrations)}
            for task, inst in training_instances(tasks, task_ids, cfg)]


def shard(rows: Sequence[Any], rank: int, world: int) -> list[Any]:
    """Worker `rank`'s rows of `world`: every world-th row from its rank on, as many for
    every worker (len(rows) // world; the remainder is left out), so that every worker runs
    as many micro batches. The rows Ray Data's `streaming_split(world, equal=True)` of one
    row per block handed each worker, in the same order."""
    return list(rows[rank::world][:len(rows) // world])


def chunks(rows: Sequence[Any], size: int) -> list[list[Any]]:
    """Consecutive runs of `size` rows (the last one possibly shorter)."""
    return [list(rows[i:i + size]) for i in range(0, len(rows), size)]


COST_COLUMNS = ("train_examples", "train_tokens", "response_tokens")


def task_costs(tasks: Sequence[Task], cfg: TrainConfig, tokenizer, kind: str,
               template: Template | None = None) -> dict[str, dict[str, float]]:
    """What training on each task costs, as `encode` tokenizes its training examples:
    {task_id: {train_examples, train_tokens (prompt and target tokens of every example,
    EOS included: one epoch's tokens), response_tokens (the mean target tokens of an
    example, EOS included; 0 without examples)}}. Selection by a budget of examples or
    tokens and the length strategy read these."""
    rows = training_examples(tasks, [t.task_id for t in tasks], cfg, template)
    out = {t.task_id: {"train_examples": 0.0, "train_tokens": 0.0, "response_tokens": 0.0} for t in tasks}
    pairs = encode_many(tokenizer, kind, [r["prompt"] for r in rows], [r["target"] for r in rows], cfg)
    for r, (src, tgt) in zip(rows, pairs):
        c = out[r["task_id"]]
        c["train_examples"] += 1
        c["train_tokens"] += len(src) + (len(tgt) if kind == "seq2seq" else 0)
        c["response_tokens"] += len(tgt) if kind == "seq2seq" else sum(1 for x in tgt if x != IGNORE)
    for c in out.values():
        c["response_tokens"] = c["response_tokens"] / c["train_examples"] if c["train_examples"] else 0.0
    return out


def encode(tokenizer, kind: str, prompt: str, target: str, cfg: TrainConfig) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of one example; see the module docstring."""
    return encode_many(tokenizer, kind, [prompt], [target], cfg)[0]


def encode_many(tokenizer, kind: str, prompts: Sequence[str], targets: Sequence[str],
                cfg: TrainConfig) -> list[tuple[list[int], list[int]]]:
    """`encode` of each (prompt, target), the tokenizer called once per side."""
    if not prompts:
        return []
    srcs = tokenizer(list(prompts)).input_ids
    tgts = tokenizer(list(targets), add_special_tokens=False).input_ids
    out = []
    for src, tgt in zip(srcs, tgts, strict=True):
        src, tgt = list(src)[-cfg.max_source_tokens:], list(tgt)[: cfg.max_target_tokens] + [tokenizer.eos_token_id]
        out.append((src, tgt) if kind == "seq2seq" else (src + tgt, [IGNORE] * len(src) + tgt))
    return out


def collate(tokenizer, kind: str, prompts: Sequence[str], targets: Sequence[str], cfg: TrainConfig) -> dict[str, Any]:
    """A padded batch (numpy int64): input_ids, attention_mask, labels (right padding)."""
    return pad_pairs(tokenizer, kind, encode_many(tokenizer, kind, prompts, targets, cfg))


def length_grouped(tokenizer, kind: str, prompts: Sequence[str], targets: Sequence[str],
                   cfg: TrainConfig) -> list[dict[str, Any]]:
    """The padded micro batches of a group of rows: encoded, sorted by length (shortest
    first; ties keep their order) so that each micro batch pads to little, then cut into
    `cfg.micro_batch_size` rows each (the last one may be smaller: no row is left out)."""
    pairs = encode_many(tokenizer, kind, prompts, targets, cfg)
    pairs.sort(key=lambda xy: len(xy[0]) + (len(xy[1]) if kind == "seq2seq" else 0))
    mb = cfg.micro_batch_size
    return [pad_pairs(tokenizer, kind, pairs[i:i + mb]) for i in range(0, len(pairs), mb)]


def pad_pairs(tokenizer, kind: str, pairs: Sequence[tuple[list[int], list[int]]]) -> dict[str, Any]:
    """(input_ids, labels) pairs as one right-padded batch."""
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
