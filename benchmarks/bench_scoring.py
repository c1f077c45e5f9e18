"""Scoring throughput: the batched engine against the one-at-a-time reference loop.

    python benchmarks/bench_scoring.py [--quick] [--niv2-tasks 5] [--instances 10] [-k 4]
        [--alpaca-tasks 40] [--alpaca-k 4] [--targets greedy|reference] [--perturbed-only]
        [--profile auto] [--repeats 1] [--token-budget 8192] [--models tiny,bpe32k,smollm2|DIR]
        [--template text|chat] [--cache-dir ...]
    # the real model (docs/scoring.md "Scoring throughput"):
    python benchmarks/bench_scoring.py --models smollm2 --template chat

A default run takes about 4 minutes on 2 CPU cores (the first one a few seconds more, to
train the tokenizer); --quick (the tiny model, small pools, short answers) well under a
minute: tests/test_benchmarks.py runs it. On a GPU machine, e.g. a ~1B-parameter model:
    python benchmarks/bench_scoring.py --device cuda --dtype bfloat16 --models bpe32k \
        --hidden 2048 --layers 16 --heads 16 --intermediate 5632 --token-budget 65536 --no-reference
The MFU column is the engine's unavoidable matmul FLOPs (no padding, attention ignored)
per second over the measured peak of a large matmul in the same dtype on the same device.

Scores the same items, in one process, with
  - the reference: raysys.scoring.reference.reference_mean_logprobs (one item at a time,
    plain forward, full logits), and
  - the engine: the TaskScorer's own (raysys.scoring.likelihood.make_scorer: shared-prefix
    KV reuse, target-only logits, length bucketing, de-duplication),
and prints one row per (model, pool): items scored ("prompts"), items/s and target
tokens/s of each, the speed ratio engine/reference, and the agreement of the two: the
largest |delta mean log-prob|, |delta p| (p = exp(mean log-prob)) and |delta U| (U =
prompt uncertainty of a task, raysys.scoring.items.task_rows once on the reference's
log-probs and once on the engine's), next to the largest U and p.

Models (float32, CPU; benchmarks/scoring_models.py):
  tiny   the built-in tiny model (random weights) (raysys.models.init_tiny into a temporary folder: a
         4-layer Llama, hidden 128, character tokenizer, vocabulary 128);
  smollm2 SmolLM2-135M-Instruct, the real pretrained model (`raysys model import
         smollm2-135m-instruct`, imported once into --cache-dir): 49,152-token BPE, ChatML;
         with --template chat its prompts are the TK / Alpaca text in its chat template;
  DIR    any model folder;
  bpe32k a Llama with a 32,000-token vocabulary (default hidden 512, 6 layers, 8 heads,
         MLP 1376, tied embeddings: about 35M parameters), randomly initialised with a
         fixed seed, with a ByteLevel BPE tokenizer trained offline with the `tokenizers`
         library on the shared data, cached under --cache-dir (default ~/.cache/raysys-bench).

Pools (real data from the shared folder), scored as `raysys score` scores them: the items
are those of TaskScorer.items (raysys.scoring.items: sampled instances, prompts fitted to
the model with fewer demonstrations first, k word-dropout perturbations shared by a
task's instances, label items of classification tasks, IFD's y-alone items, one group per
(task, j)); --perturbed-only keeps only the n * (k + 1) perturbation items.
  niv2   NIV2 tasks (--niv2-tasks of them, spread evenly over the task files in name
         order), n = --instances instances each, the TK-Instruct prompt (definition + 2
         demonstrations + instance input), k = -k perturbations of the definition;
  alpaca the first --alpaca-tasks Alpaca entries (one instance each), the Alpaca template,
         k = --alpaca-k perturbations of the instruction.

Targets y: one per instance, the same string for reference and engine.
  --targets greedy (default): the model's greedy answer to its original prompt (the
         scorer's batched generation, at most --max-target-tokens new tokens); untimed.
  --targets reference: the instance's first reference output, cut to at most
         --max-target-tokens tokens of the model's tokenizer.
Both scorers append EOS to y; "target tokens" counts those scored positions.

Timing: torch.set_num_threads(--threads); both scorers warm up on a few items first
(excluded); then the reference and the engine each score all items (best of --repeats
runs, alternating; default 1), timed with time.perf_counter (tokenisation included).
Prompts longer than the model allows are cut by the engine only: the stats line counts
them (none with the default settings).

Profile: when the engine is below --target (5x) on a row, or with --profile always, an
engine is run again under timers (the engine's `phase` hook and forward hooks on the
model: tokenise, prefix pass, suffix passes split into model body, vocabulary projection,
log-softmax, and the rest) and torch.profiler, and a breakdown is printed after the
table (benchmarks/scoring_stats.py). These runs are not part of the timings.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
for path in (HERE.parent, HERE):  # raysys from this checkout; the helper modules beside this file
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from scoring_models import load_models  # noqa: E402
from scoring_stats import (  # noqa: E402
    engine_flops,
    ideal_ratio,
    matmul_peak,
    profile_engine,
    profile_reference,
    token_stats,
)

from raysys.config import GenerationConfig, PromptConfig, ScoringConfig  # noqa: E402
from raysys.models import LoadedModel, count_parameters  # noqa: E402
from raysys.pools.load import load_pool  # noqa: E402
from raysys.schema import Task  # noqa: E402
from raysys.scoring.items import Batch, plan_task, task_rows  # noqa: E402
from raysys.scoring.likelihood import Budget  # noqa: E402
from raysys.scoring.reference import reference_mean_logprobs  # noqa: E402
from raysys.scoring.scorer import TaskScorer  # noqa: E402

DEFAULT_SHARED = HERE.parent.parent / "shared" / "data"
if not DEFAULT_SHARED.exists():
    DEFAULT_SHARED = Path("/work/shared/data")


@dataclass(frozen=True)
class Pool:
    name: str
    tasks: tuple[Task, ...]
    cfg: ScoringConfig  # how `raysys score` would score it


def spread(items, n: int):
    """n items spread evenly over `items` (all of them when there are fewer)."""
    if n >= len(items):
        return list(items)
    return [items[round(i * len(items) / n)] for i in range(n)]


def make_pools(args) -> list[Pool]:
    shared = Path(args.shared)

    def cfg(template: str, instances: int, k: int) -> ScoringConfig:
        prompt = PromptConfig("chat", 2, template) if args.template == "chat" else PromptConfig(template, 2)
        return ScoringConfig(instances=instances, perturbations=k, drop_rate=args.drop_rate, seed=args.seed,
                             prompt=prompt,
                             generation=GenerationConfig(max_new_tokens=args.max_target_tokens),
                             entropy=not args.perturbed_only, ifd=not args.perturbed_only,
                             token_budget=args.token_budget)

    pools = []
    if args.niv2_tasks > 0:
        tasks = spread(list(load_pool(shared / "niv2").tasks), args.niv2_tasks)
        pools.append(Pool("niv2", tuple(tasks), cfg("tk", args.instances, args.k)))
    if args.alpaca_tasks > 0:
        tasks = load_pool(shared / "alpaca" / "alpaca_random5000_subset.json").tasks[: args.alpaca_tasks]
        pools.append(Pool("alpaca", tuple(tasks), cfg("alpaca", 1, args.alpaca_k)))
    return pools


def cut(tok, text: str, max_tokens: int) -> str:
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


def pool_items(scorer: TaskScorer, pool: Pool, targets: str) -> Batch:
    """The pool's items as the scorer builds them, with greedy or reference targets."""
    plans = [plan_task(t, pool.cfg, scorer.template) for t in pool.tasks]
    answers = None
    if targets == "reference":
        tok, most = scorer.runner.lm.tokenizer, pool.cfg.generation.max_new_tokens
        answers = [cut(tok, inst.outputs[0], most) for plan in plans for inst in plan.instances]
    return scorer.items(plans, answers)


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


def bench_pool(args, mname: str, lm: LoadedModel, pool: Pool, peak: float) -> tuple[dict, str | None]:
    """One table row: the pool's items through the reference and the engine; and a
    profile report when asked for."""
    scorer = TaskScorer("", pool.cfg, loaded=lm, device=args.device)
    batch, t_y = timed(lambda: pool_items(scorer, pool, args.targets))
    items, engine = batch.items, scorer.engine
    st = token_stats(items, lm.tokenizer)
    print(f"{mname}/{pool.name}: {len(items)} prompts ({st['distinct']} distinct), {st['groups']} groups, "
          f"{sum(t.truncated for t in batch.tasks)} truncated; "
          f"prompt tokens mean {st['mean_prompt']:.0f} max {st['max_prompt']}, "
          f"{100 * st['prefix_share']:.0f}% of them in shared group prefixes; "
          f"target tokens mean {st['mean_target']:.1f}, total {st['target_tokens']}; y made in {t_y:.1f}s; "
          f"compute-bound ratio with no padding {ideal_ratio(lm, st):.2f}x", flush=True)
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
        ref, t = timed(lambda: reference_mean_logprobs(lm.model, lm.tokenizer, lm.kind, items.prompts, items.targets))
        t_ref = min(t_ref, t)
    u_ref = np.array([r["prompt_uncertainty"] for r in task_rows(batch, ref)])
    u_eng = np.array([r["prompt_uncertainty"] for r in task_rows(batch, eng)])
    p_ref, p_eng = np.exp(ref), np.exp(eng)
    n, ntok = len(items), st["target_tokens"]
    row = {"model": mname, "pool": pool.name, "tasks": len(pool.tasks), "prompts": n, "tgt_tok": ntok,
           "ref_s": t_ref, "ref_ps": n / t_ref, "ref_ts": ntok / t_ref, "eng_s": t_eng, "eng_ps": n / t_eng,
           "eng_ts": ntok / t_eng, "ratio": t_ref / t_eng, "dlogp": float(np.max(np.abs(ref - eng))),
           "dp": float(np.max(np.abs(p_ref - p_eng))), "dU": float(np.max(np.abs(u_ref - u_eng))),
           "U": float(np.max(u_ref)), "max_p": float(np.max(p_ref)), "mfu": engine_flops(lm, st) / t_eng / peak}
    print(f"  reference {t_ref:.2f}s, engine {t_eng:.2f}s -> {row['ratio']:.2f}x", flush=True)
    if args.profile == "always" or (args.profile == "auto" and row["ratio"] < args.target):
        report = profile_engine(lm, items, st, Budget(tokens=pool.cfg.token_budget), scorer.runner.max_prompt)
        return row, report + "\n" + profile_reference(lm, items, min(20, n))
    return row, None


def print_table(rows: list[dict]) -> None:
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


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="a smoke test: the tiny model, 1 NIV2 task (n=2, k=2), 6 Alpaca tasks (k=2), "
                         "answers <= 8 tokens, no profile")
    ap.add_argument("--shared", default=str(DEFAULT_SHARED), help="the shared data folder")
    ap.add_argument("--cache-dir", default="~/.cache/raysys-bench", help="where the 32K model folder is cached")
    ap.add_argument("--models", default=None,
                    help="comma-separated: tiny, bpe32k, smollm2, or model folders (default tiny,bpe32k; --quick: tiny)")
    ap.add_argument("--template", choices=("text", "chat"), default="text",
                    help="text: the TK / Alpaca prompts; chat: the same in the model's chat template")
    ap.add_argument("--niv2-tasks", type=int, default=5, help="NIV2 tasks (0 = skip the pool)")
    ap.add_argument("--instances", type=int, default=10, help="instances n per NIV2 task")
    ap.add_argument("-k", "--k", type=int, default=4, help="perturbations per NIV2 task")
    ap.add_argument("--alpaca-tasks", type=int, default=40, help="Alpaca tasks (0 = skip the pool)")
    ap.add_argument("--alpaca-k", type=int, default=4, help="perturbations per Alpaca task")
    ap.add_argument("--drop-rate", type=float, default=0.2, help="word dropout rate")
    ap.add_argument("--targets", choices=("greedy", "reference"), default="greedy", help="how y is chosen")
    ap.add_argument("--max-target-tokens", type=int, default=32, help="cap on y's tokens (EOS not counted)")
    ap.add_argument("--perturbed-only", action="store_true", help="no label (entropy) and y-alone (IFD) items")
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
        args.niv2_tasks, args.instances, args.k = min(args.niv2_tasks, 1), min(args.instances, 2), min(args.k, 2)
        args.alpaca_tasks, args.alpaca_k = min(args.alpaca_tasks, 6), min(args.alpaca_k, 2)
        args.max_target_tokens = min(args.max_target_tokens, 8)
    if args.profile is None:
        args.profile = "never" if args.quick else "auto"
    models = args.models or ("tiny" if args.quick else "tiny,bpe32k")
    args.models = [m.strip() for m in models.split(",") if m.strip()]
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
            print(f"pool {pool.name}: {len(pool.tasks)} tasks, n <= {pool.cfg.instances}, k={pool.cfg.perturbations}; "
                  f"tasks: {', '.join(t.task_id for t in pool.tasks[:6])}{' ...' if len(pool.tasks) > 6 else ''}")
        rows, profiles = [], []
        for mname, lm in models:
            for pool in pools:
                row, report = bench_pool(args, mname, lm, pool, peak)
                rows.append(row)
                if report:
                    profiles.append((f"{mname}/{pool.name} ({row['ratio']:.2f}x)", report))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(rows)
    for r in rows:
        if r["model"] == "bpe32k" and r["pool"] == "niv2":
            verdict = "meets" if r["ratio"] >= args.target else "is BELOW"
            print(f"\ngoal: engine >= {args.target:g}x reference on NIV2 with the 32K model: "
                  f"{r['ratio']:.2f}x, {verdict} it")
    for title, report in profiles:
        print(f"\n=== profile {title}\n{report}")
    print(f"\ntotal run time {time.perf_counter() - t_start:.1f}s")


if __name__ == "__main__":
    main()
