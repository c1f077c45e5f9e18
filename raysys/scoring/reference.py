"""The straightforward reference scorer: one example at a time, a plain forward pass,
full logits, the formulas written out. Slow on purpose; tests and benchmarks check the
engine (raysys.scoring.likelihood) against it.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


@torch.inference_mode()
def reference_mean_logprobs(model, tokenizer, kind: str, prompts: Sequence[str],
                            targets: Sequence[str]) -> np.ndarray:
    device = next(model.parameters()).device
    out = []
    for prompt, target in zip(prompts, targets):
        p = tokenizer(prompt).input_ids
        t = tokenizer(target, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        if kind == "seq2seq":
            x, labels = torch.tensor([p], device=device), torch.tensor([t], device=device)
            logits = model(input_ids=x, labels=labels).logits[0]
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            token_lp = [logprobs[k, t[k]].item() for k in range(len(t))]
        else:
            ids = torch.tensor([p + t], device=device)
            logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
            token_lp = [logprobs[len(p) - 1 + k, t[k]].item() for k in range(len(t))]
        out.append(sum(token_lp) / len(token_lp))
    return np.array(out)
