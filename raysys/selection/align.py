"""Align the sentence encoder to a pool's instruction style (INSTA's selector alignment).

Contrastive fine-tuning with in-batch negatives: for each training task the anchor is
its definition and the positive another rendering of the same task (`view`):
- examples: `cfg.examples` of its instances as "Input: ... / Output: ..." (no definition);
- demonstrations: the definition followed by its demonstrations (or instances);
- perturbed: the definition after word dropout (rate 0.2).
The loss is the symmetric InfoNCE of the similarity matrix (cosine / temperature), the
other tasks of the batch being the negatives; tasks that share a definition text are
kept out of the same batch. Fresh positives are drawn every epoch.

Same-task retrieval on held-out tasks (never trained on) measures the alignment: each
held-out task's views are queries, the held-out definitions the candidates, accuracy@1.
The same split and the same queries are scored before and after training.

The result is an ordinary sentence-transformers folder (plus raysys_align.json), written
under a temporary name and renamed when complete; rerunning with the same pool and config
returns the finished report without training again.
"""
from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from raysys.config import AlignConfig
from raysys.config.mapping import config_hash, to_dict
from raysys.errors import InvalidFile, RaysysError
from raysys.io import atomic_dir, read_json, write_json
from raysys.perturb import perturb_text
from raysys.runs.keys import run_key, tasks_content
from raysys.schema import Task, task_text
from raysys.selection.embed import default_encoder_path, embed, load_encoder

REPORT = "raysys_align.json"


def split_tasks(n: int, heldout_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, held-out) task indices: a seeded shuffle, the first share held out."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    k = max(1, round(n * heldout_fraction))
    return sorted(order[k:]), sorted(order[:k])


def _io(text: str, out: str) -> str:
    return f"Input: {text}\nOutput: {out}"


def positive_view(task: Task, cfg: AlignConfig, rng: random.Random) -> str:
    if cfg.view == "perturbed":
        return perturb_text(task_text(task), "dropout", 0.2, rng)
    if cfg.view == "demonstrations" and task.demonstrations:
        shown = [_io(d.input, d.output) for d in task.demonstrations[: cfg.examples]]
        return task_text(task) + "\n\n" + "\n".join(shown)
    picks = rng.sample(list(task.instances), min(cfg.examples, len(task.instances)))
    shown = [_io(i.input, i.outputs[0] if i.outputs else "") for i in picks]
    return (task_text(task) + "\n\n" if cfg.view == "demonstrations" else "") + "\n".join(shown)


def retrieval_accuracy(encoder, tasks: Sequence[Task], cfg: AlignConfig) -> float:
    """Accuracy@1 of finding each task's definition from its views, among `tasks`' definitions."""
    rng = random.Random(cfg.seed + 1)
    keys = embed(encoder, [task_text(t) for t in tasks])
    queries, gold = [], []
    for i, t in enumerate(tasks):
        for _ in range(cfg.queries_per_task):
            queries.append(positive_view(t, cfg, rng))
            gold.append(i)
    best = (embed(encoder, queries) @ keys.T).argmax(axis=1)
    # a hit is any task with the very same definition text (retrieval cannot tell them apart)
    text = [task_text(t) for t in tasks]
    return float(np.mean([text[b] == text[g] for b, g in zip(best, gold)]))


def _batches(train: list[Task], size: int, rng: random.Random) -> list[list[Task]]:
    """Shuffled batches in which no two tasks share a definition text."""
    order = train[:]
    rng.shuffle(order)
    batches: list[list[Task]] = []
    texts: list[set[str]] = []
    for t in order:
        for b, seen in zip(batches, texts):
            if len(b) < size and task_text(t) not in seen:
                b.append(t)
                seen.add(task_text(t))
                break
        else:
            batches.append([t])
            texts.append({task_text(t)})
    return [b for b in batches if len(b) >= 2]


def train_encoder(encoder, train: list[Task], cfg: AlignConfig) -> list[float]:
    """Contrastive fine-tuning in place; returns the mean loss of each epoch."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=cfg.learning_rate)
    encoder.train()
    losses = []
    for _ in range(cfg.epochs):
        epoch = []
        for batch in _batches(train, cfg.batch_size, rng):
            anchors = encoder.preprocess([task_text(t) for t in batch])
            positives = encoder.preprocess([positive_view(t, cfg, rng) for t in batch])
            a = F.normalize(encoder(anchors)["sentence_embedding"], dim=-1)
            p = F.normalize(encoder(positives)["sentence_embedding"], dim=-1)
            logits = a @ p.T / cfg.temperature
            labels = torch.arange(len(batch))
            loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            epoch.append(loss.item())
        losses.append(float(np.mean(epoch)) if epoch else float("nan"))
    encoder.eval()
    return losses


def align_encoder(tasks: Sequence[Task], out: str | Path, cfg: AlignConfig = AlignConfig(),
                  pool: str = "") -> dict[str, Any]:
    """Fine-tune the encoder on `tasks` (minus the held-out share), save it to `out`, and
    return the report (retrieval accuracy before and after on the held-out tasks)."""
    out = Path(out)
    content = run_key(tasks_content(tasks))  # what the encoder learns from
    report_path = out / REPORT
    if report_path.is_file():
        old = read_json(report_path)
        if old.get("config_hash") == config_hash(cfg) and old.get("pool_content") == content:
            return {**old, "resumed": True}
    elif out.exists() and any(out.iterdir()):
        raise InvalidFile(out, "exists and is not a raysys align output; choose a new folder")
    train_idx, held_idx = split_tasks(len(tasks), cfg.heldout_fraction, cfg.seed)
    train, held = [tasks[i] for i in train_idx], [tasks[i] for i in held_idx]
    if len(train) < 2 or len(held) < 2:
        raise RaysysError(f"alignment needs at least 2 training and 2 held-out tasks; the pool has {len(tasks)}")
    start = time.perf_counter()
    encoder = load_encoder(cfg.encoder, max_seq_length=cfg.max_seq_length)
    before = retrieval_accuracy(encoder, held, cfg)
    losses = train_encoder(encoder, train, cfg)
    after = retrieval_accuracy(encoder, held, cfg)
    report = {
        "pool": pool, "base_encoder": cfg.encoder or default_encoder_path(), "view": cfg.view,
        "n_train": len(train), "n_heldout": len(held), "heldout_task_ids": [t.task_id for t in held],
        "retrieval_before": before, "retrieval_after": after, "epoch_losses": losses,
        "seconds": round(time.perf_counter() - start, 1), "config": to_dict(cfg),
        "config_hash": config_hash(cfg), "pool_content": content,
    }
    with atomic_dir(out) as tmp:  # replaces an older alignment (other config or pool) whole
        encoder.save(str(tmp), create_model_card=False)
        write_json(tmp / REPORT, report)
    return report
