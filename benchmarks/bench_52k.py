"""End-to-end scale run: score a 52,000-task synthetic pool (n = 1, k = 20) with the
built-in tiny model on local Ray actors; print the wall time, tasks/s and the driver's
peak memory (the driver reads task ids only, never the pool's prompts).

    python benchmarks/bench_52k.py [--tasks 52000] [--actors 2] [--max-new-tokens 32] [--work DIR]

Resumable like `raysys score`: rerunning with the same --work continues an interrupted run
(Ctrl-C or SIGINT stops it). Every invocation's wall time, interrupted ones included, is
logged in WORK/timing.jsonl and the table reports their sum: the end-to-end time of the
whole pool, wasted in-flight work included.
"""
from __future__ import annotations

import argparse
import json
import resource
import signal
import time
from pathlib import Path

from raysys.config import GenerationConfig, ScoringConfig, SynthConfig, TinyConfig
from raysys.models import init_tiny
from raysys.pools.synthetic import write_synthetic_pool
from raysys.scoring.pipeline import score_pool


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=52_000)
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--perturbations", type=int, default=20)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--work", default="bench-52k")
    args = ap.parse_args()
    work = Path(args.work)
    pool = work / "pool.parquet"
    write_synthetic_pool(SynthConfig(rules=args.tasks, examples_per_rule=1, seed=0), pool)
    model = work / "tiny-model"
    if not (model / "config.json").exists():
        init_tiny(model, TinyConfig())
    cfg = ScoringConfig(instances=1, perturbations=args.perturbations, tasks_per_batch=64,
                        generation=GenerationConfig(max_new_tokens=args.max_new_tokens, batch=64))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background
    log = work / "timing.jsonl"
    t = time.perf_counter()
    try:
        run = score_pool(str(pool), str(model), str(work / "scores.parquet"), cfg, actors=args.actors)
    except KeyboardInterrupt:
        _log(log, time.perf_counter() - t, None)
        raise
    seconds = time.perf_counter() - t
    _log(log, seconds, run.n_scored_now)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    total = sum(c["seconds"] for c in calls)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{'tasks':>7} {'n':>3} {'k':>3} {'actors':>6} {'scored now':>10} {'seconds now':>11} "
          f"{'invocations':>11} {'total s':>8} {'tasks/s':>8} {'driver peak MiB':>15}")
    print(f"{run.n_tasks:>7} {1:>3} {args.perturbations:>3} {args.actors:>6} {run.n_scored_now:>10} "
          f"{seconds:>11.0f} {len(calls):>11} {total:>8.0f} {run.n_tasks / total:>8.1f} {peak_mib:>15.0f}")


def _log(path: Path, seconds: float, scored: int | None) -> None:
    with path.open("a") as f:
        f.write(json.dumps({"seconds": round(seconds, 1), "scored_now": scored,
                            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}) + "\n")


if __name__ == "__main__":
    main()
