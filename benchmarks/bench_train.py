"""Training throughput on Ray Train: the same examples trained with DDP and DeepSpeed
ZeRO-2 / ZeRO-3 (with and without LoRA), side by side in one run.

    python benchmarks/bench_train.py [--workers 2] [--tasks 64] [--instances 8] [--epochs 2]
        [--micro-batch-size 8] [--model tiny|DIR]

Builds a synthetic rewriting pool and the built-in tiny model (or uses --model), then for
each setting trains `--epochs` epochs on a local Ray cluster and prints one row: the
training tokens per second summed over workers in the last epoch (the first one includes
warm-up), the first and last loss, and the wall time of the whole run (worker start-up,
checkpoints and export included). Tokens are the non-padding tokens of each micro batch
(prompt and target for causal models). On a GPU cluster pass a real model folder and
--workers = GPUs; the MFU column is then 6 x parameters x tokens/s over --peak-tflops.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from raysys.config import PromptConfig, SynthConfig, TrainConfig
from raysys.models import count_parameters, init_tiny, load_model
from raysys.pools import load_pool
from raysys.synth import write_synthetic_pool
from raysys.training.trainer import train_model

SETTINGS = [("DDP", "ddp", 0, False), ("ZeRO-2", "deepspeed", 2, False), ("ZeRO-3", "deepspeed", 3, False),
            ("DDP + LoRA", "ddp", 0, True), ("ZeRO-2 + LoRA", "deepspeed", 2, True),
            ("ZeRO-3 + LoRA", "deepspeed", 3, True)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tasks", type=int, default=64)
    ap.add_argument("--instances", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--micro-batch-size", type=int, default=8)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--peak-tflops", type=float, default=0.0, help="bf16 matmul peak per GPU, for MFU")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="raysys-bench-train-"))
    write_synthetic_pool(SynthConfig(rules=args.tasks, examples_per_rule=args.instances, seed=0), work / "pool.parquet")
    tasks = list(load_pool(str(work / "pool.parquet")).tasks)
    model = str(init_tiny(work / "tiny")) if args.model == "tiny" else args.model
    n_params = count_parameters(load_model(model).model)
    base = TrainConfig(epochs=args.epochs, micro_batch_size=args.micro_batch_size, workers=args.workers,
                       batch_size=args.micro_batch_size * args.workers, prompt=PromptConfig(demonstrations=0),
                       instances_per_task=args.instances, learning_rate=1e-3)
    print(f"model {model}: {n_params:,} parameters; {len(tasks)} tasks x {args.instances} instances; "
          f"{args.workers} workers, micro batch {args.micro_batch_size}, {args.epochs} epochs")
    print(f"{'setting':<15} {'tokens/s':>10} {'first loss':>10} {'last loss':>10} {'wall s':>8}"
          + (f" {'MFU':>6}" if args.peak_tflops else ""))
    for name, backend, stage, lora in SETTINGS:
        cfg = replace(base, backend=backend, zero_stage=stage, lora=lora)
        t = time.perf_counter()
        run = train_model(tasks, [x.task_id for x in tasks], model, str(work / f"out-{backend}{stage}{lora}"), cfg,
                          progress=False)
        wall = time.perf_counter() - t
        last = run.epochs[-1]
        tps = last["tokens_per_s_worker"] * args.workers
        mfu = f" {6 * n_params * tps / (args.peak_tflops * 1e12 * args.workers):>6.1%}" if args.peak_tflops else ""
        print(f"{name:<15} {tps:>10,.0f} {run.epochs[0]['first_loss']:>10.3f} {last['last_loss']:>10.3f} "
              f"{wall:>8.0f}{mfu}")


if __name__ == "__main__":
    main()
