"""RDS+ task embeddings (representation-based data selection, as in "Large-Scale Data
Selection for Instruction Tuning", 2025): the position-weighted mean of a model's final
hidden states over a prompt, averaged over a task's instances. torch only; no Ray.

For a prompt of L tokens with final hidden states h_1..h_L (the last layer's output
after the final norm: what the vocabulary projection reads),
    e = sum_t w_t h_t,  w_t = t / (1 + 2 + ... + L)
so later tokens, which have seen more of the prompt, weigh more. A task's embedding is the
mean of e over its sampled instances' original prompts (fitted as scoring fits them).
raysys.models.runner computes e from the prefill of the greedy decode it runs anyway
(`capture_body`), so scoring stores it at no extra forward; `embed_prompts` runs the
forward alone (target tasks at selection time).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch


def position_weighted_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """hidden (B, T, d), mask (B, T) of 0/1 (left or right padding) -> (B, d) float32:
    each row's sum of w_t h_t over its real tokens, w_t = (rank of t among them) / sum of ranks."""
    m = mask.to(torch.float32)
    rank = m.cumsum(dim=1) * m  # 1..L on real tokens, 0 on padding
    w = rank / rank.sum(dim=1, keepdim=True).clamp(min=1.0)
    return (hidden.to(torch.float32) * w.unsqueeze(-1)).sum(dim=1)


def body(model, kind: str):
    """The module whose output is the final hidden states: the decoder stack of a causal
    LM (before the vocabulary projection), the encoder of a seq2seq model."""
    return model.get_encoder() if kind == "seq2seq" else model.get_decoder()


@contextlib.contextmanager
def capture_body(model, kind: str) -> Iterator[list[torch.Tensor]]:
    """Within the block, the final hidden states of the body's first forward call (a
    generate call's prefill over the whole prompt) land in the yielded list."""
    seen: list[torch.Tensor] = []

    def hook(module, args, output):
        if not seen:
            seen.append(output[0] if isinstance(output, tuple) else output.last_hidden_state)

    handle = body(model, kind).register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def task_means(embeddings: torch.Tensor | list, counts: list[int]) -> list[list[float]]:
    """Mean of consecutive rows: `counts[i]` instance embeddings per task, task after task."""
    out, start = [], 0
    for n in counts:
        rows = torch.as_tensor(embeddings[start: start + n]) if n else None
        out.append(None if rows is None else rows.mean(dim=0).tolist())
        start += n
    return out
