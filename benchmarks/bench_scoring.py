"""Scoring throughput: the batched engine against the one-at-a-time reference loop.

    python benchmarks/bench_scoring.py [--quick] [--niv2-tasks 5] [--instances 10] [-k 4]
        [--alpaca-tasks 40] [--alpaca-k 4] [--targets greedy|reference] [--profile auto]
        [--repeats 1] [--token-budget 8192] [--models tiny,bpe32k] [--cache-dir ...]

A default run takes about 4 minutes on 2 CPU cores (the first one a few seconds more, to
train the tokenizer), --quick under a minute. On a GPU machine, e.g. a ~1B-parameter model:
    python benchmarks/bench_scoring.py --device cuda --dtype bfloat16 --models bpe32k \
        --hidden 2048 --layers 16 --heads 16 --intermediate 5632 --token-budget 65536 --no-reference
The MFU column is the engine's unavoidable matmul FLOPs (no padding, attention ignored)
per second over the measured peak of a large matmul in the same dtype on the same device.

Scores the same pools, in one process, with
  - the reference: raysys.scoring.reference.reference_mean_logprobs (one item at a time,
    plain forward, full logits), and
  - the engine: raysys.scoring.likelihood.make_scorer(...).score(prompts, targets, groups)
    (shared-prefix KV reuse, target-only logits, length bucketing, de-duplication),
and prints one row per (model, pool): prompts scored, prompts/s and target tokens/s of
each, the speed ratio engine/reference, and the agreement of the two: the largest
|delta mean log-prob|, |delta p| (p = exp(mean log-prob)) and |delta U| (U = prompt
uncertainty of a task = mean over instances i and perturbations j of |p_ij - p_i0|,
computed once from the reference p and once from the engine p), next to the largest U.

Models (random weights, float32, CPU):
  tiny   the built-in tiny model (raysys.models.init_tiny into a temporary folder: a
         4-layer Llama, hidden 128, character tokenizer, vocabulary 128);
  bpe32k a Llama with a 32,000-token vocabulary (default hidden 512, 6 layers, 8 heads,
         MLP 1376, tied embeddings: about 35M parameters), randomly initialised with a
         fixed seed, with a ByteLevel BPE tokenizer (vocabulary 32,000; special tokens
         <s> </s> <pad> <unk>; a post-processor that prepends <s>) trained offline with
         the `tokenizers` library on the shared data (Alpaca instructions, inputs and
         outputs; NIV2 definitions, demonstrations, inputs and outputs). The folder is
         cached under --cache-dir (default ~/.cache/raysys-bench), keyed by its settings,
         so later runs only load it.

Pools (real data from the shared folder):
  niv2   NIV2 tasks (--niv2-tasks of them, spread evenly over the task files in name
         order), n = --instances instances each (raysys.scoring.scorer.sample_instances),
         the TK-Instruct prompt (definition + 2 demonstrations + instance input), and k
         word-dropout perturbations (rate 0.2) of the definition
         (raysys.perturb.perturb_prompt_parts): n * (k + 1) prompts per task;
  alpaca the first --alpaca-tasks Alpaca entries (one instance per task), the Alpaca
         template, k perturbations of the instruction: k + 1 prompts per task.
Items and groups are built exactly as TaskScorer builds them: one group per (task, j),
holding that task's n instances, so the engine shares each group's prompt prefix.

Targets y: one fixed answer per instance, the same string for reference and engine.
  --targets greedy (default): the model's greedy answer from the original prompt (j = 0),
         made once with the engine-independent `model.generate` (one prompt at a time,
         at most --max-target-tokens new tokens), as TaskScorer scores its own answers;
         untimed.
  --targets reference: the instance's first reference output, cut to at most
         --max-target-tokens tokens of the model's tokenizer (NIV2's MMLU tasks answer
         with one letter, so most targets are then 1 token + EOS).
Both scorers append EOS to y; "target tokens" counts those scored positions.

Timing: torch.set_num_threads(--threads); both scorers warm up on a few items first
(excluded); then the reference and the engine each score the whole pool (best of
--repeats runs, alternating; default 1), timed with time.perf_counter (tokenisation included for both).
The engine gets no prompt truncation (max_prompt_tokens=None) so that both see identical
inputs.

Profile: when the engine is below --target (5x) on a row, or with --profile always, the
engine is run again under simple timers (tokenise, prefix pass, suffix passes split into
model body, vocabulary projection, log-softmax, and the rest) and torch.profiler, and a
breakdown is printed after the table. These runs are not part of the timings.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from raysys.models import LoadedModel, _quiet_deepspeed, count_parameters, init_tiny, load_model  # noqa: E402
from raysys.perturb import perturb_prompt_parts  # noqa: E402
from raysys.pools import load_pool  # noqa: E402
from raysys.prompts import format_prompt  # noqa: E402
from raysys.schema import Task  # noqa: E402
from raysys.scoring import likelihood as lik  # noqa: E402
from raysys.scoring.metrics import prompt_uncertainty  # noqa: E402
from raysys.scoring.reference import reference_mean_logprobs  # noqa: E402
from raysys.scoring.scorer import sample_instances  # noqa: E402

DEFAULT_SHARED = ROOT.parent / "shared" / "data"
if not DEFAULT_SHARED.exists():
    DEFAULT_SHARED = Path("/work/shared/data")
SPECIALS = ("<s>", "</s>", "<pad>", "<unk>")


# --------------------------------------------------------------------------- models
def training_texts(shared: Path):
    """Alpaca instructions/inputs/outputs and NIV2 definitions/demonstrations/inputs/outputs."""
    alpaca = load_pool(shared / "alpaca" / "alpaca_random5000_subset.json")
    niv2 = load_pool(shared / "niv2")
    for t in alpaca.tasks + niv2.tasks:
        yield t.instruction
        for d in t.demonstrations:
            yield d.input
            yield d.output
        for inst in t.instances:
            if inst.input:
                yield inst.input
            yield from inst.outputs


def train_bpe(shared: Path, vocab: int, max_length: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, min_frequency=2, special_tokens=list(SPECIALS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(training_texts(shared), trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", model_max_length=max_length)


def bpe_model_folder(args) -> Path:
    """The cached 32K-vocabulary Llama folder (built on first use, atomically)."""
    _quiet_deepspeed()
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    spec = {"vocab": args.vocab, "hidden": args.hidden, "layers": args.layers, "heads": args.heads,
            "intermediate": args.intermediate, "seed": args.seed, "max_positions": 4096, "tokenizer": "bytelevel-bpe",
            "corpus": "alpaca5000+niv2", "version": 1}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]
    name = f"llama-bpe{args.vocab // 1000}k-h{args.hidden}-l{args.layers}-{key}"
    out = Path(os.path.expanduser(args.cache_dir)) / name
    if (out / "config.json").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print(f"building {out} (tokenizer training + random init) ...", flush=True)
    tokenizer = train_bpe(Path(args.shared), args.vocab, spec["max_positions"])
    torch.manual_seed(args.seed)
    config = LlamaConfig(
        vocab_size=max(args.vocab, len(tokenizer)), hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.heads,
        max_position_embeddings=spec["max_positions"], bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(config).float()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "bench_spec.json").write_text(json.dumps(spec, indent=1))
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    print(f"  built in {time.perf_counter() - t0:.1f}s", flush=True)
    return out


def load_models(args, tmp: Path) -> list[tuple[str, LoadedModel]]:
    out = []
    kw = {"dtype": args.dtype, "device": args.device}
    for name in args.models:
        if name == "tiny":
            out.append(("tiny", load_model(str(init_tiny(tmp / "tiny")), **kw)))
        elif name == "bpe32k":
            out.append(("bpe32k", load_model(str(bpe_model_folder(args)), **kw)))
        else:
            raise SystemExit(f"unknown model {name!r}: tiny or bpe32k")
    return out


# --------------------------------------------------------------------------- pools
@dataclass
class PoolSpec:
    """A pool as TaskScorer sees it: tasks, their sampled instances and perturbed parts."""

    name: str
    template: str
    tasks: list[Task]
    sampled: list[list]  # instances per task
    parts: list[list]  # perturb_prompt_parts per task: [(definition_j, demos_j)] for j = 0..k
    k: int

    def prompt(self, ti: int, j: int, inst) -> str:
        definition, demos = self.parts[ti][j]
        return format_prompt(self.template, definition, inst.input, demos, 2)


def spread(items, n: int):
    """n items spread evenly over `items` (all of them when there are fewer)."""
    if n >= len(items):
        return list(items)
    return [items[round(i * len(items) / n)] for i in range(n)]


def make_pools(args) -> list[PoolSpec]:
    shared = Path(args.shared)
    pools = []
    if args.niv2_tasks > 0:
        tasks = spread(list(load_pool(shared / "niv2").tasks), args.niv2_tasks)
        pools.append(PoolSpec("niv2", "tk", tasks, [sample_instances(t, args.instances, args.seed) for t in tasks],
                              [perturb_prompt_parts(t.task_id, t.instruction, t.demonstrations, args.k,
                                                    kind="dropout", rate=args.drop_rate, seed=args.seed)
                               for t in tasks], args.k))
    if args.alpaca_tasks > 0:
        tasks = list(load_pool(shared / "alpaca" / "alpaca_random5000_subset.json").tasks[: args.alpaca_tasks])
        pools.append(PoolSpec("alpaca", "alpaca", tasks, [list(t.instances) for t in tasks],
                              [perturb_prompt_parts(t.task_id, t.instruction, t.demonstrations, args.alpaca_k,
                                                    kind="dropout", rate=args.drop_rate, seed=args.seed)
                               for t in tasks], args.alpaca_k))
    return pools


def fit(tok, text: str, max_tokens: int) -> str:
    """`text` cut so that it tokenizes (without specials) to at most max_tokens tokens.
    Decoding a token prefix and re-encoding it need not give the same tokens (a cut
    multi-byte character decodes to U+FFFD, which re-encodes longer), hence the loop."""
    for _ in range(8):
        ids = tok(text, add_special_tokens=False).input_ids
        if len(ids) <= max_tokens:
            return text
        text = tok.decode(ids[:max_tokens], skip_special_tokens=True)
    while text and len(tok(text, add_special_tokens=False).input_ids) > max_tokens:
        text = text[:-1]
    return text


def make_targets(pool: PoolSpec, lm: LoadedModel, mode: str, max_tokens: int) -> list[list[str]]:
    """One fixed y per instance (see the module docstring)."""
    import torch

    tok, model = lm.tokenizer, lm.model
    ys = []
    for ti, task in enumerate(pool.tasks):
        row = []
        for inst in pool.sampled[ti]:
            if mode == "reference":
                row.append(fit(tok, inst.outputs[0], max_tokens))
                continue
            ids = tok(pool.prompt(ti, 0, inst)).input_ids
            with torch.inference_mode():
                x = torch.tensor([ids], device=model.device)
                out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False,
                                     max_new_tokens=max_tokens, pad_token_id=tok.pad_token_id,
                                     eos_token_id=tok.eos_token_id)
            new = out[0, len(ids):].tolist()
            if tok.eos_token_id in new:
                new = new[: new.index(tok.eos_token_id)]
            row.append(fit(tok, tok.decode(new, skip_special_tokens=True), max_tokens))
        ys.append(row)
    return ys


@dataclass
class Items:
    prompts: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)
    pert: list[np.ndarray] = field(default_factory=list)  # per task: (n, k + 1) item indices


def build_items(pool: PoolSpec, ys: list[list[str]]) -> Items:
    """Items and groups as TaskScorer.score builds them: one group per (task, j)."""
    items, group = Items(), 0
    for ti in range(len(pool.tasks)):
        pert = np.empty((len(pool.sampled[ti]), pool.k + 1), dtype=np.int64)
        for j in range(pool.k + 1):
            for r, (inst, y) in enumerate(zip(pool.sampled[ti], ys[ti])):
                items.prompts.append(pool.prompt(ti, j, inst))
                items.targets.append(y)
                items.groups.append(group)
                pert[r, j] = len(items.prompts) - 1
            group += 1
        items.pert.append(pert)
    return items


def token_stats(items: Items, tok) -> dict:
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
    """Wall time per phase of the engine, by wrapping its steps at run time (nothing in
    raysys is edited) and hooking the model, its body and its vocabulary projection."""

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

    def wrap(self, fn, name: str):
        def wrapped(*a, **kw):
            with self.phase(name):
                return fn(*a, **kw)
        return wrapped

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


def profile_engine(engine, lm: LoadedModel, items: Items, st: dict) -> str:
    """Run the engine once under PhaseTimer and once under torch.profiler; a text report."""

    inner = engine.inner
    pt = PhaseTimer()
    saved = {"prompt_ids": lik.prompt_ids, "target_ids": lik.target_ids, "_mean_logprobs": lik._mean_logprobs}
    handles = pt.hook(lm.model, "forward") + pt.hook(lm.model.model, "body") + pt.hook(lm.model.lm_head, "lm_head")
    try:
        lik.prompt_ids = pt.wrap(saved["prompt_ids"], "tokenize")
        lik.target_ids = pt.wrap(saved["target_ids"], "tokenize")
        lik._mean_logprobs = pt.wrap(saved["_mean_logprobs"], "log_softmax")
        inner._prefix_cache = pt.wrap(inner._prefix_cache, "prefix")
        inner._run_rows = pt.wrap(inner._run_rows, "suffix")
        t0 = time.perf_counter()
        engine.score(items.prompts, items.targets, items.groups)
        total = time.perf_counter() - t0
    finally:
        for h in handles:
            h.remove()
        for k, v in saved.items():
            setattr(lik, k, v)
        inner.__dict__.pop("_prefix_cache", None)
        inner.__dict__.pop("_run_rows", None)
    t, c = pt.t, pt.count
    suffix_fwd = t["suffix/forward"]
    lines = [f"engine phase breakdown (one extra run, {total:.2f}s with timers):"]

    def line(name, sec, note=""):
        lines.append(f"  {name:<44} {sec:8.3f}s {100 * sec / total:5.1f}%  {note}")

    line("tokenize (prompt_ids + target_ids)", t["tokenize"])
    line("dedup + planning + chunking (rest of score)",
         total - t["tokenize"] - t["prefix"] - t["suffix"])
    line("prefix pass (_prefix_cache) total", t["prefix"],
         f"{c['prefix/calls']} forwards, {c['prefix/padded_tokens']} padded prefix tokens")
    line("  model body", t["prefix/body"])
    line("  lm_head (1 position per group)", t["prefix/lm_head"])
    line("  KV extraction / masks / other", t["prefix"] - t["prefix/forward"])
    line("suffix passes (_run_rows) total", t["suffix"],
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


def profile_reference(lm: LoadedModel, items: Items, limit: int) -> str:
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


# --------------------------------------------------------------------------- main
def _sync(out, args):
    """Wait for the device before the clock stops."""
    if args.device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
    return out


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="about a minute: 2 NIV2 tasks (k=2), 20 Alpaca tasks (k=2), no profile")
    ap.add_argument("--shared", default=str(DEFAULT_SHARED), help="the shared data folder")
    ap.add_argument("--cache-dir", default="~/.cache/raysys-bench", help="where the 32K model folder is cached")
    ap.add_argument("--models", default="tiny,bpe32k", help="comma-separated: tiny, bpe32k")
    ap.add_argument("--niv2-tasks", type=int, default=5, help="NIV2 tasks (0 = skip the pool)")
    ap.add_argument("--instances", type=int, default=10, help="instances n per NIV2 task")
    ap.add_argument("-k", "--k", type=int, default=4, help="perturbations per NIV2 task")
    ap.add_argument("--alpaca-tasks", type=int, default=40, help="Alpaca tasks (0 = skip the pool)")
    ap.add_argument("--alpaca-k", type=int, default=4, help="perturbations per Alpaca task")
    ap.add_argument("--drop-rate", type=float, default=0.2, help="word dropout rate")
    ap.add_argument("--targets", choices=("greedy", "reference"), default="greedy", help="how y is chosen")
    ap.add_argument("--max-target-tokens", type=int, default=32, help="cap on y's tokens (EOS not counted)")
    ap.add_argument("--token-budget", type=int, default=8192, help="engine Budget.tokens (ScoringConfig default)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (e.g. on a GPU machine)")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="model dtype")
    ap.add_argument("--no-reference", action="store_true", help="time the engine only (large models)")
    ap.add_argument("--repeats", type=int, default=1, help="time each scorer this many times, keep the best")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--intermediate", type=int, default=1376)
    ap.add_argument("--target", type=float, default=5.0, help="speed-ratio goal; rows below it get profiled")
    ap.add_argument("--profile", choices=("auto", "always", "never"), default=None,
                    help="auto (default; never with --quick): profile the rows below --target")
    args = ap.parse_args(argv)
    if args.quick:
        args.niv2_tasks, args.k = min(args.niv2_tasks, 2), min(args.k, 2)
        args.alpaca_tasks, args.alpaca_k = min(args.alpaca_tasks, 20), min(args.alpaca_k, 2)
    if args.profile is None:
        args.profile = "never" if args.quick else "auto"
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    return args


def main(argv=None) -> None:
    t_start = time.perf_counter()
    args = parse_args(argv)
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="raysys-bench-"))
    try:
        models = load_models(args, tmp)
        pools = make_pools(args)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    peak = matmul_peak(args.device, getattr(torch, args.dtype))
    print(f"device {args.device} {args.dtype}: measured matmul peak {peak / 1e12:.2f} TFLOP/s")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; targets: {args.targets} "
          f"(<= {args.max_target_tokens} tokens + EOS); engine Budget(tokens={args.token_budget})")
    for name, lm in models:
        cfg = lm.model.config
        print(f"model {name}: {count_parameters(lm.model) / 1e6:.2f}M parameters, vocab {cfg.vocab_size} "
              f"(tokenizer {len(lm.tokenizer)}), hidden {cfg.hidden_size}, layers {cfg.num_hidden_layers}, "
              f"heads {cfg.num_attention_heads}, MLP {cfg.intermediate_size}, {next(lm.model.parameters()).dtype}")
    for pool in pools:
        n_inst = sum(map(len, pool.sampled))
        print(f"pool {pool.name}: {len(pool.tasks)} tasks, {n_inst} instances, k={pool.k} -> "
              f"{n_inst * (pool.k + 1)} prompts; tasks: {', '.join(t.task_id for t in pool.tasks[:6])}"
              f"{' ...' if len(pool.tasks) > 6 else ''}")
    rows, stats_lines, profiles = [], [], []
    for mname, lm in models:
        engine = lik.make_scorer(lm.model, lm.tokenizer, lm.kind, lik.Budget(tokens=args.token_budget), None)
        for pool in pools:
            (ys, t_y) = timed(lambda: make_targets(pool, lm, args.targets, args.max_target_tokens))
            items = build_items(pool, ys)
            st = token_stats(items, lm.tokenizer)
            stats_lines.append(
                f"{mname}/{pool.name}: {len(items.prompts)} prompts ({st['distinct']} distinct), "
                f"{st['groups']} groups; "
                f"prompt tokens mean {st['mean_prompt']:.0f} max {st['max_prompt']}, "
                f"{100 * st['prefix_share']:.0f}% of them in shared group prefixes; "
                f"target tokens mean {st['mean_target']:.1f}, total {st['target_tokens']}; y made in {t_y:.1f}s; "
                f"compute-bound ratio with no padding {ideal_ratio(lm, st):.2f}x")
            print(stats_lines[-1], flush=True)
            # warm-up (excluded): a few reference items, one group through the engine
            if not args.no_reference:
                reference_mean_logprobs(lm.model, lm.tokenizer, lm.kind, items.prompts[:2], items.targets[:2])
            g0 = [i for i, g in enumerate(items.groups) if g == items.groups[0]]
            engine.score([items.prompts[i] for i in g0], [items.targets[i] for i in g0], [0] * len(g0))
            t_ref = t_eng = float("inf")
            for _ in range(args.repeats):  # best of --repeats, reference and engine alternating
                eng, t = timed(lambda: _sync(engine.score(items.prompts, items.targets, items.groups), args))
                t_eng = min(t_eng, t)
                if args.no_reference:
                    ref, t_ref = eng, float("nan")
                    continue
                ref, t = timed(lambda: reference_mean_logprobs(lm.model, lm.tokenizer, lm.kind, items.prompts,
                                                               items.targets))
                t_ref = min(t_ref, t)
            p_ref, p_eng = np.exp(ref), np.exp(eng)
            u_ref = np.array([prompt_uncertainty(p_ref[ix][:, 0], p_ref[ix][:, 1:]) for ix in items.pert])
            u_eng = np.array([prompt_uncertainty(p_eng[ix][:, 0], p_eng[ix][:, 1:]) for ix in items.pert])
            n, ntok = len(items.prompts), st["target_tokens"]
            row = {"model": mname, "pool": pool.name, "tasks": len(pool.tasks), "prompts": n, "tgt_tok": ntok,
                   "ref_s": t_ref, "ref_ps": n / t_ref, "ref_ts": ntok / t_ref, "eng_s": t_eng, "eng_ps": n / t_eng,
                   "eng_ts": ntok / t_eng, "ratio": t_ref / t_eng, "dlogp": float(np.max(np.abs(ref - eng))),
                   "dp": float(np.max(np.abs(p_ref - p_eng))), "dU": float(np.max(np.abs(u_ref - u_eng))),
                   "U": float(np.max(u_ref)), "max_p": float(np.max(p_ref)),
                   "mfu": engine_flops(lm, st) / t_eng / peak}
            rows.append(row)
            print(f"  reference {t_ref:.2f}s, engine {t_eng:.2f}s -> {row['ratio']:.2f}x", flush=True)
            if args.profile == "always" or (args.profile == "auto" and row["ratio"] < args.target):
                report = profile_engine(engine, lm, items, st)
                report += "\n" + profile_reference(lm, items, min(20, n))
                profiles.append((f"{mname}/{pool.name} ({row['ratio']:.2f}x)", report))
    shutil.rmtree(tmp, ignore_errors=True)

    head = (f"{'model':<7} {'pool':<6} {'tasks':>5} {'prompts':>7} {'tgt tok':>7} | {'ref s':>7} {'ref p/s':>7} "
            f"{'ref tok/s':>9} | {'eng s':>6} {'eng p/s':>7} {'eng tok/s':>9} | {'eng/ref':>7} | {'max|dlogp|':>10} "
            f"{'max|dp|':>9} {'max|dU|':>9} {'max U':>9} {'max p':>9} {'MFU':>6}")
    print()
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['model']:<7} {r['pool']:<6} {r['tasks']:>5} {r['prompts']:>7} {r['tgt_tok']:>7} | "
              f"{r['ref_s']:>7.2f} {r['ref_ps']:>7.2f} {r['ref_ts']:>9.1f} | {r['eng_s']:>6.2f} {r['eng_ps']:>7.2f} "
              f"{r['eng_ts']:>9.1f} | {r['ratio']:>6.2f}x | {r['dlogp']:>10.2e} {r['dp']:>9.2e} {r['dU']:>9.2e} "
              f"{r['U']:>9.2e} {r['max_p']:>9.2e} {100 * r['mfu']:>5.1f}%")
    goal = [r for r in rows if r["model"] == "bpe32k" and r["pool"] == "niv2"]
    for r in goal:
        verdict = "meets" if r["ratio"] >= args.target else "is BELOW"
        print(f"\ngoal: engine >= {args.target:g}x reference on NIV2 with the 32K model: "
              f"{r['ratio']:.2f}x, {verdict} it")
    for title, report in profiles:
        print(f"\n=== profile {title}\n{report}")
    print(f"\ntotal run time {time.perf_counter() - t_start:.1f}s")


if __name__ == "__main__":
    main()
