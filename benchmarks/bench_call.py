"""What one call of the actor pool costs before its actors work: the pool handed to Ray
Data by Ray Data's own read tasks (`read_parquet`, raysys before 2026-12-05) against read by
the driver (`from_arrow`, raysys now), each consumed in batches as raysys.actors consumes
it, and a whole warm `score_pool` call (kept actors, the tiny model). Median machine
CPU-seconds (all processes: run it on a quiet machine) and wall seconds over the rounds.

    python benchmarks/bench_call.py [--tasks 16] [--rounds 5] [--quick]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def machine_cpu() -> float:
    """Busy CPU-seconds of the whole machine so far (/proc/stat: all but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def measured(fn, settle: float) -> tuple[float, float]:
    time.sleep(settle)  # the previous call's processes settle
    c, t = machine_cpu(), time.perf_counter()
    fn()
    return machine_cpu() - c, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=16, help="synthetic tasks in the pool")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="one round, no settling: a smoke test, not a measurement")
    args = ap.parse_args()
    rounds, settle = (1, 0.0) if args.quick else (args.rounds, 1.0)

    import pyarrow.parquet as pq
    import ray
    import ray.data

    from raysys.cluster import keep_actors, ray_init, without_training
    from raysys.config import GenerationConfig, PromptConfig, ScoringConfig, SynthConfig
    from raysys.models import init_tiny
    from raysys.pools.canonical import write_parquet_tasks
    from raysys.pools.markov import generate
    from raysys.scoring.pipeline import score_pool

    tmp = Path(tempfile.mkdtemp(prefix="bench-call-"))
    pool = tmp / "pool.parquet"
    write_parquet_tasks(generate(SynthConfig(rules=args.tasks, examples_per_rule=2, seed=5)), pool)
    model = str(init_tiny(tmp / "tiny"))
    cfg = ScoringConfig(instances=1, perturbations=2, generation=GenerationConfig(4), tasks_per_batch=4,
                        prompt=PromptConfig(demonstrations=0))
    with without_training():  # raysys's own local cluster, as a scoring command starts it
        ray_init(2)

    def ids(ds) -> list[str]:
        return [t for b in ds.iter_batches(batch_size=cfg.tasks_per_batch, batch_format="pyarrow")
                for t in b.column("task_id").to_pylist()]

    want = pq.read_table(pool, columns=["task_id"]).column("task_id").to_pylist()
    inputs = {"Ray Data read tasks (read_parquet)": lambda: ray.data.read_parquet(str(pool), num_cpus=0.25),
              "read by the driver (from_arrow)": lambda: ray.data.from_arrow(pq.read_table(pool))}
    for make in inputs.values():  # the same rows in the same order; the first call's start-up paid here
        assert ids(make()) == want
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in inputs}
    runs["score_pool, warm (raysys now)"] = []
    with without_training(), keep_actors():
        score_pool(str(pool), model, str(tmp / "warm.parquet"), cfg, actors=1, progress=False)  # actors up
        for r in range(rounds):  # interleaved: a drift of the machine's speed hits every row alike
            for name, make in inputs.items():
                runs[name].append(measured(lambda make=make: ids(make()), settle))
            runs["score_pool, warm (raysys now)"].append(measured(lambda r=r: score_pool(
                str(pool), model, str(tmp / f"s{r}.parquet"), cfg, actors=1, progress=False), settle))
    ray.shutdown()
    print(f"pool: {args.tasks} tasks; {rounds} rounds; medians; machine CPU-s include every process")
    print(f"{'input':40s} {'CPU-s':>7s} {'wall s':>7s}")
    print("-" * 56)
    for name, xs in runs.items():
        print(f"{name:40s} {statistics.median(c for c, _ in xs):7.2f} {statistics.median(w for _, w in xs):7.2f}")


if __name__ == "__main__":
    main()
