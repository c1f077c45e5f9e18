"""Work counts and profiles for benchmarks/bench_scoring.py: the tokens the reference and
the engine must run, matmul FLOPs and the measured matmul peak (MFU), and a phase
breakdown of one engine run (the engine's public `phase` hook, forward hooks on the model)
with torch.profiler."""
from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager

from raysys.models import LoadedModel, count_parameters
from raysys.scoring import likelihood as lik
from raysys.scoring.items import ItemList
from raysys.scoring.reference import reference_mean_logprobs


def token_stats(items: ItemList, tok) -> dict:
    """Token counts: prompts and targets as the reference runs them; and the fewest tokens
    the engine must run (each distinct item once, each group's shared prefix once)."""
    p_ids = lik.prompt_ids(tok, items.prompts)
    t_ids = lik.target_ids(tok, items.targets)
    first: dict[tuple[str, str], int] = {}
    for i, key in enumerate(zip(items.prompts, items.targets)):
        first.setdefault(key, i)
    members: dict[int, list[int]] = defaultdict(list)
    for i in first.values():  # as Deduplicated: the first occurrence, with its group
        members[items.groups[i]].append(i)
    prefix_tokens = suffix_tokens = shared = 0
    for idx in members.values():
        lcp = 0
        if len(idx) > 1:
            lcp = min(lik.common_prefix_len([p_ids[i] for i in idx]), min(len(p_ids[i]) for i in idx) - 1)
        prefix_tokens += lcp
        shared += lcp * len(idx)
        suffix_tokens += sum(len(p_ids[i]) - lcp + len(t_ids[i]) for i in idx)
    prompt_tokens, target_tokens = sum(map(len, p_ids)), sum(map(len, t_ids))
    distinct_targets = sum(len(t_ids[i]) for i in first.values())
    return {"prompt_tokens": prompt_tokens, "target_tokens": target_tokens,
            "max_prompt": max(map(len, p_ids)), "mean_prompt": prompt_tokens / len(p_ids),
            "mean_target": target_tokens / len(t_ids), "distinct": len(first), "groups": len(set(items.groups)),
            "prefix_share": shared / sum(len(p_ids[i]) for i in first.values()),
            "engine_prefix_tokens": prefix_tokens, "engine_suffix_tokens": suffix_tokens,
            "engine_target_tokens": distinct_targets}


def engine_flops(lm: LoadedModel, st: dict) -> float:
    """Matmul FLOPs the engine cannot avoid (no padding, attention ignored): 2 x body
    parameters per token run, 2 x hidden x vocab per projected target position."""
    cfg = lm.model.config
    head = cfg.hidden_size * cfg.vocab_size
    body = count_parameters(lm.model) - head * (1 if cfg.tie_word_embeddings else 2)
    return 2.0 * ((st["engine_prefix_tokens"] + st["engine_suffix_tokens"]) * body
                  + (st["engine_target_tokens"] + st["groups"]) * head)


def matmul_peak(device: str, dtype) -> float:
    """Measured FLOP/s of a large square matmul in `dtype` on `device` (the MFU denominator)."""
    import torch

    n = 8192 if device.startswith("cuda") else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    reps, t0 = 20, time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return 2.0 * n ** 3 * reps / (time.perf_counter() - t0)


def ideal_ratio(lm: LoadedModel, st: dict, suffix_tokens: int | None = None, prefix_tokens: int | None = None):
    """reference work / engine work in a compute-bound model that counts matmul FLOPs per
    token (2 x non-embedding parameters for the body, 2 x hidden x vocab for the
    projection) and ignores attention: what the engine could reach at best with no padding
    (defaults) or with the given padded token counts."""
    cfg = lm.model.config
    head = cfg.hidden_size * cfg.vocab_size
    body = count_parameters(lm.model) - head * (1 if cfg.tie_word_embeddings else 2)
    ref = (st["prompt_tokens"] + st["target_tokens"]) * (body + head)
    pre = st["engine_prefix_tokens"] if prefix_tokens is None else prefix_tokens
    suf = st["engine_suffix_tokens"] if suffix_tokens is None else suffix_tokens
    eng = (pre + suf) * body + (st["engine_target_tokens"] + st["groups"]) * head
    return ref / eng


# --------------------------------------------------------------------------- profiling
class PhaseTimer:
    """Wall time per phase of the engine: `phase` is the engine's profiling hook
    (raysys.scoring.likelihood), `hook` times the model, its body and its vocabulary
    projection (and counts the rows and tokens of each forward) per phase."""

    def __init__(self):
        self.t: dict[str, float] = defaultdict(float)
        self.n: dict[str, int] = defaultdict(int)
        self.stack: list[str] = ["other"]
        self.count: dict[str, int] = defaultdict(int)

    @contextmanager
    def phase(self, name: str):
        self.stack.append(name)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.t[name] += time.perf_counter() - t0
            self.n[name] += 1
            self.stack.pop()

    def hook(self, module, label: str):
        starts = []

        def pre(mod, args, kwargs):
            starts.append(time.perf_counter())
            if label == "forward":
                ids = kwargs.get("input_ids")
                past = kwargs.get("past_key_values")
                where = self.stack[-1]
                if ids is not None:
                    self.count[f"{where}/rows"] += ids.shape[0]
                    self.count[f"{where}/padded_tokens"] += ids.numel()
                    self.count[f"{where}/calls"] += 1
                    if past is not None and where == "suffix":
                        self.count[f"{where}/cached_tokens_attended"] += ids.shape[0] * past.get_seq_length()

        def post(mod, args, kwargs, output):
            key = f"{self.stack[-1]}/{label}"
            self.t[key] += time.perf_counter() - starts.pop()
            self.n[key] += 1

        return [module.register_forward_pre_hook(pre, with_kwargs=True),
                module.register_forward_hook(post, with_kwargs=True)]


def profile_engine(lm: LoadedModel, items: ItemList, st: dict, budget: lik.Budget, max_prompt: int | None) -> str:
    """Run an engine like the scorer's (same budget and prompt limit) once under
    PhaseTimer and once under torch.profiler; a text report. Causal LMs only."""
    pt = PhaseTimer()
    engine = lik.make_scorer(lm.model, lm.tokenizer, lm.kind, budget, max_prompt, phase=pt.phase)
    handles = pt.hook(lm.model, "forward") + pt.hook(lm.model.model, "body") + pt.hook(lm.model.lm_head, "lm_head")
    try:
        t0 = time.perf_counter()
        engine.score(items.prompts, items.targets, items.groups)
        total = time.perf_counter() - t0
    finally:
        for h in handles:
            h.remove()
    t, c = pt.t, pt.count
    suffix_fwd = t["suffix/forward"]
    lines = [f"engine phase breakdown (one extra run, {total:.2f}s with timers):"]

    def line(name, sec, note=""):
        lines.append(f"  {name:<44} {sec:8.3f}s {100 * sec / total:5.1f}%  {note}")

    line("tokenize (prompt_ids + target_ids)", t["tokenize"])
    line("dedup + planning + chunking (rest of score)",
         total - t["tokenize"] - t["prefix"] - t["suffix"])
    line("prefix passes total", t["prefix"],
         f"{c['prefix/calls']} forwards, {c['prefix/padded_tokens']} padded prefix tokens")
    line("  model body", t["prefix/body"])
    line("  lm_head (1 position per group)", t["prefix/lm_head"])
    line("  KV extraction / masks / other", t["prefix"] - t["prefix/forward"])
    line("suffix passes total", t["suffix"],
         f"{c['suffix/calls']} forwards, {c['suffix/rows']} rows")
    line("  model body (suffix tokens vs cached prefix)", t["suffix/body"],
         f"{c['suffix/padded_tokens']} padded suffix tokens, {c['suffix/cached_tokens_attended']} cached keys/row-sum")
    line("  lm_head on target positions", t["suffix/lm_head"])
    line("  logits_to_keep slicing / output wrap", suffix_fwd - t["suffix/body"] - t["suffix/lm_head"])
    line("  log_softmax + gather + segment means", t["log_softmax"])
    line("  batch build + KV gather k[sel] + DynamicCache + mask", t["suffix"] - suffix_fwd - t["log_softmax"])
    pre, suf = c["prefix/padded_tokens"], c["suffix/padded_tokens"]
    least = st["engine_prefix_tokens"] + st["engine_suffix_tokens"]
    lines.append(f"  tokens through the model: reference {st['prompt_tokens'] + st['target_tokens']}; engine at least "
                 f"{st['engine_prefix_tokens']} prefix + {st['engine_suffix_tokens']} suffix, actually run (padded) "
                 f"{pre} prefix + {suf} suffix ({100 * (pre + suf) / least - 100:.0f}% padding)")
    lines.append(f"  compute-bound ratio (matmul FLOPs, attention ignored): {ideal_ratio(lm, st):.2f}x without "
                 f"padding, {ideal_ratio(lm, st, suf, pre):.2f}x at the padding measured")
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        engine.score(items.prompts, items.targets, items.groups)
    lines.append("torch.profiler, top operators by self CPU time (one more engine run):")
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=40)
    lines += ["  " + s for s in table.splitlines()]
    return "\n".join(lines)


def profile_reference(lm: LoadedModel, items: ItemList, limit: int) -> str:
    """Where the reference spends its time, on its first `limit` items."""
    pt = PhaseTimer()
    handles = pt.hook(lm.model, "forward") + pt.hook(lm.model.model, "body") + pt.hook(lm.model.lm_head, "lm_head")
    try:
        t0 = time.perf_counter()
        reference_mean_logprobs(lm.model, lm.tokenizer, lm.kind, items.prompts[:limit], items.targets[:limit])
        total = time.perf_counter() - t0
    finally:
        for h in handles:
            h.remove()
    t = pt.t
    return (f"reference breakdown ({limit} items, {total:.2f}s): model body {100 * t['other/body'] / total:.1f}%, "
            f"lm_head over all positions {100 * t['other/lm_head'] / total:.1f}%, "
            f"log_softmax over full logits + per-token .item() + tokenize "
            f"{100 * (total - t['other/forward']) / total:.1f}%")
