"""Training throughput on Ray Train: the same examples trained with DDP and DeepSpeed
ZeRO-2 / ZeRO-3 (with and without LoRA), side by side in one run; or (--cpu, --setting)
the settings that matter for a real model on a CPU box: workers x torch threads, bf16
autocast or float32, ZeRO-2 vs DDP vs one unwrapped worker, LoRA vs full fine-tuning.

    python benchmarks/bench_train.py [--workers 2] [--tasks 64] [--instances 8] [--epochs 2]
        [--micro-batch-size 8] [--model tiny|DIR] [--pool synthetic|DIR] [--template tk|chat]
        [--demonstrations 0] [--cpu | --setting W/BACKEND/PRECISION/lora|full[/gN] ...]
    # the real model on 2 cores (docs/training.md "Training the real model on CPU"):
    python benchmarks/bench_train.py --cpu --model /work/models/smollm2-135m-instruct \
        --pool ../shared/data/niv2 --template chat --tasks 8 --instances 8

Builds a synthetic rewriting pool (or reads --pool) and the built-in tiny model (or uses
--model), then for each setting trains `--epochs` epochs on a local Ray cluster and prints
one row: tokens/s in steady state (the last epoch after its first micro batch: Ray Data's
iterator start-up and the first, allocation-heavy step left out) per worker and summed
over workers, the last epoch's tokens/s over the whole epoch, the time to the epoch's
first batch, the first micro batch's step, the checkpoint save (seconds, MB), the mean
training loss of the first and the last epoch (the same examples), and the wall time of
the whole run (worker start-up, checkpoints and export included). Tokens are the
non-padding tokens of each micro batch (prompt and target for causal models). A setting W/BACKEND/PRECISION/lora|full: W workers (torch
threads each: raysys.cluster.cpu_share), BACKEND ddp | zero2 | zero3 | plain (one worker, no
distributed wrapper), PRECISION fp32 | bf16 (bf16 autocast on CPU: TrainConfig.cpu_bf16;
on GPUs bf16 mixed precision), /gN: length_grouping N (rows of N micro batches sorted by
length: less padding; the "pad" column is padded over real tokens). On a GPU cluster pass a real model folder and
--workers = GPUs; the MFU column is then 6 x parameters x tokens/s over --peak-tflops.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from raysys.cluster import cpu_share
from raysys.config import PromptConfig, SynthConfig, TrainConfig
from raysys.models import count_parameters, init_tiny, load_model
from raysys.pools.load import load_pool
from raysys.pools.synthetic import write_synthetic_pool
from raysys.training.trainer import train_model

SETTINGS = [("DDP", "ddp", 0, False), ("ZeRO-2", "deepspeed", 2, False), ("ZeRO-3", "deepspeed", 3, False),
            ("DDP + LoRA", "ddp", 0, True), ("ZeRO-2 + LoRA", "deepspeed", 2, True),
            ("ZeRO-3 + LoRA", "deepspeed", 3, True)]
# --cpu: the old CPU default first (2 workers x 1 thread, float32, ZeRO-2), then one change at a time
CPU_SETTINGS = ["2/zero2/fp32/lora", "2/zero2/bf16/lora", "2/ddp/bf16/lora", "2/ddp/bf16/lora/g8",
                "1/zero2/bf16/lora", "1/plain/bf16/lora", "1/plain/fp32/lora", "1/plain/bf16/full",
                "2/ddp/bf16/full"]
BACKENDS = {"ddp": ("ddp", 0), "plain": ("ddp", 0), "zero2": ("deepspeed", 2), "zero3": ("deepspeed", 3)}


def parse_setting(spec: str) -> dict:
    """W/BACKEND/PRECISION/lora|full[/gN] as TrainConfig fields (see the module docstring)."""
    try:
        w, backend, precision, what, *group = spec.split("/")
        workers, (kind, stage) = int(w), BACKENDS[backend]
        assert precision in ("fp32", "bf16") and what in ("lora", "full") and workers >= 1
        assert backend != "plain" or workers == 1, "plain: one worker"
        assert len(group) <= 1 and (not group or group[0].startswith("g")), "gN: length grouping"
        grouping = int(group[0][1:]) if group else 1
    except (ValueError, KeyError, AssertionError) as e:
        raise SystemExit(f"bad setting {spec!r} ({e}): W/ddp|zero2|zero3|plain/fp32|bf16/lora|full[/gN]")
    bf16 = precision == "bf16"
    return {"workers": workers, "backend": kind, "zero_stage": stage, "lora": what == "lora", "cpu_bf16": bf16,
            "bf16": bf16, "length_grouping": grouping}


def _f(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tasks", type=int, default=64)
    ap.add_argument("--instances", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--micro-batch-size", type=int, default=8)
    ap.add_argument("--model", default="tiny", help="tiny (built here) or a model folder")
    ap.add_argument("--pool", default="synthetic", help="synthetic (--tasks rules) or a pool (its first --tasks tasks)")
    ap.add_argument("--template", default="tk", help="prompt template (chat: the model's chat template)")
    ap.add_argument("--demonstrations", type=int, default=0)
    ap.add_argument("--learning-rate", type=float, default=0.0, help="default: 1e-3, or 1e-4 with --model DIR")
    ap.add_argument("--lora-r", type=int, default=8)
    ap.add_argument("--lora-targets", nargs="+", default=None, help="default: TrainConfig's")
    ap.add_argument("--max-source-tokens", type=int, default=1024)
    ap.add_argument("--cpu", action="store_true", help="the CPU settings (CPU_SETTINGS) instead of the backends")
    ap.add_argument("--setting", action="append", default=[], metavar="W/BACKEND/PRECISION/lora|full[/gN]")
    ap.add_argument("--num-cpus", type=int, default=None, help="the local Ray cluster's CPUs (default: all)")
    ap.add_argument("--peak-tflops", type=float, default=0.0, help="bf16 matmul peak per GPU, for MFU")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="raysys-bench-train-"))
    if args.pool == "synthetic":
        write_synthetic_pool(SynthConfig(rules=args.tasks, examples_per_rule=args.instances, seed=0),
                             work / "pool.parquet")
        tasks = list(load_pool(str(work / "pool.parquet")).tasks)
    else:
        tasks = list(load_pool(args.pool).tasks)[: args.tasks]
    model = str(init_tiny(work / "tiny")) if args.model == "tiny" else args.model
    n_params = count_parameters(load_model(model).model)
    base = TrainConfig(epochs=args.epochs, micro_batch_size=args.micro_batch_size, workers=args.workers,
                       batch_size=args.micro_batch_size * args.workers,
                       prompt=PromptConfig(args.template, args.demonstrations), instances_per_task=args.instances,
                       learning_rate=args.learning_rate or (1e-3 if args.model == "tiny" else 1e-4),
                       max_source_tokens=args.max_source_tokens, lora_r=args.lora_r, lora_alpha=2 * args.lora_r,
                       **({"lora_targets": tuple(args.lora_targets)} if args.lora_targets else {}))
    if args.cpu or args.setting:
        settings = [(spec, parse_setting(spec)) for spec in (args.setting or CPU_SETTINGS)]
    else:
        settings = [(name, {"backend": backend, "zero_stage": stage, "lora": lora})
                    for name, backend, stage, lora in SETTINGS]
    import ray

    from raysys.cluster import ray_init

    ray_init(args.num_cpus)
    cpus = ray.cluster_resources().get("CPU", 0)
    gpu = ray.cluster_resources().get("GPU", 0) > 0
    print(f"model {model}: {n_params:,} parameters; {len(tasks)} tasks x {args.instances} instances "
          f"({args.pool}, template {args.template}, {args.demonstrations} demonstrations); micro batch "
          f"{args.micro_batch_size}, batch = micro batch x workers, {args.epochs} epochs; {cpus:g} CPUs")
    print(f"{'setting':<21} {'thr':>3} {'steady/wkr':>10} {'steady all':>10} {'epoch tok/s':>11} {'1st batch':>9} "
          f"{'1st step':>8} {'pad':>5} {'ckpt s':>6} {'ckpt MB':>7} {'loss e0':>7} {'loss eN':>7} {'wall s':>6}"
          + (f" {'MFU':>6}" if args.peak_tflops else ""), flush=True)
    for i, (name, fields) in enumerate(settings):
        cfg = replace(base, **fields)
        cfg = replace(cfg, batch_size=cfg.micro_batch_size * cfg.workers)
        threads = "gpu" if gpu else cpu_share(cfg.workers, cpus, "workers")[1]
        t = time.perf_counter()
        run = train_model(tasks, [x.task_id for x in tasks], model, str(work / f"out-{i}"), cfg, progress=False)
        wall = time.perf_counter() - t
        last = run.epochs[-1]
        steady = last.get("steady_tokens_per_s_worker")
        tps = (steady or last["tokens_per_s_worker"]) * cfg.workers
        mfu = f" {6 * n_params * tps / (args.peak_tflops * 1e12 * cfg.workers):>6.1%}" if args.peak_tflops else ""
        print(f"{name:<21} {threads:>3} {_f(steady, '>10,.0f')} {_f(steady and steady * cfg.workers, '>10,.0f')} "
              f"{last['tokens_per_s_worker'] * cfg.workers:>11,.0f} {last['first_batch_seconds']:>9.2f} "
              f"{last['first_step_seconds']:>8.2f} {last['padded_tokens'] / last['tokens']:>5.2f} "
              f"{last['checkpoint_seconds']:>6.1f} {last['checkpoint_mb']:>7.1f} "
              f"{run.epochs[0]['train_loss']:>7.3f} {last['train_loss']:>7.3f} {wall:>6.0f}{mfu}", flush=True)


if __name__ == "__main__":
    main()
