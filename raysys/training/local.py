"""Training a model in the calling process, on one device (torch only, no Ray).

For models small enough that a Ray Train worker group would cost more to start than the
training itself: the from-scratch cells of the instruction-diversity experiment, each of
which runs as one Ray Tune trial on its own CPU or GPU. Larger models go through
raysys.training.trainer (Ray Train, DeepSpeed).

The schedule is fixed by a number of steps, not epochs: every cell of a diversity grid
processes the same number of examples however many distinct examples it has, so rows are
cycled in a fresh seeded order on each pass. Batches use `collate` (loss on the target
tokens only), AdamW, gradient clipping at 1, and TrainConfig's warmup and schedule.
"""
from __future__ import annotations

import random
import time
from collections.abc import Sequence

from raysys.config import TrainConfig
from raysys.errors import RaysysError
from raysys.training.data import collate
from raysys.training.worker import lr_lambda


def batch_order(n_rows: int, batch: int, steps: int, seed: int) -> list[list[int]]:
    """Row indices of each step's batch: passes over the rows, each in its own seeded
    shuffle, cut into consecutive batches (a batch may span two passes)."""
    if n_rows < 1:
        raise RaysysError("no training rows")
    rng = random.Random(seed)
    order: list[int] = []
    need = batch * steps
    while len(order) < need:
        p = list(range(n_rows))
        rng.shuffle(p)
        order.extend(p)
    return [order[i * batch:(i + 1) * batch] for i in range(steps)]


def train_steps(model, tokenizer, kind: str, rows: Sequence[dict], cfg: TrainConfig, steps: int, *,
                device: str = "cpu", log=None, log_every: int = 0) -> dict:
    """Train `model` in place for `steps` steps of `cfg.batch_size` rows ({prompt, target}).
    Returns {"losses": per-step losses, "seconds", "examples"}."""
    import torch

    torch.manual_seed(cfg.seed)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, steps))
    losses, t0 = [], time.perf_counter()
    for step, idx in enumerate(batch_order(len(rows), cfg.batch_size, steps, cfg.seed)):
        b = collate(tokenizer, kind, [rows[i]["prompt"] for i in idx], [rows[i]["target"] for i in idx], cfg)
        loss = model(**{k: torch.as_tensor(v, device=device) for k, v in b.items()}).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.item()))
        if log and log_every and (step + 1) % log_every == 0:
            log(f"step {step + 1}/{steps}: loss {sum(losses[-log_every:]) / log_every:.4f}")
    model.eval()
    return {"losses": losses, "seconds": time.perf_counter() - t0, "examples": steps * cfg.batch_size}
