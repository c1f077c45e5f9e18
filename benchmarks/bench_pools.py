"""Pool throughput: synthetic generation, canonical Parquet write/read, and reading the
shared real pools. Prints a table of wall times and tasks/s.

    python benchmarks/bench_pools.py [--rules 52000] [--shared ../shared/data]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from raysys.config import SynthConfig
from raysys.pools.canonical import write_parquet_tasks
from raysys.pools.load import load_pool
from raysys.pools.markov import generate


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", type=int, default=52_000)
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    args = ap.parse_args()
    rows = []
    tmp = Path(tempfile.mkdtemp())
    for verbosity, per in (("terse", 1), ("verbose", 1), ("terse", 10)):
        cfg = SynthConfig(rules=args.rules, examples_per_rule=per, verbosity=verbosity)
        tasks, t_gen = timed(lambda: generate(cfg))
        path = tmp / f"{verbosity}{per}.parquet"
        _, t_write = timed(lambda: write_parquet_tasks(tasks, path))
        pool, t_read = timed(lambda: load_pool(path))
        assert pool.tasks == tuple(tasks)
        name = f"synth {args.rules} x {per} ({verbosity})"
        rows += [(name, "generate", len(tasks), t_gen), (name, "write parquet", len(tasks), t_write),
                 (name, "read parquet", len(tasks), t_read)]
    shared = Path(args.shared)
    for rel in ("niv2", "alpaca/alpaca_random5000_subset.json", "self_instruct/seed_tasks.jsonl"):
        if (shared / rel).exists():
            pool, t = timed(lambda: load_pool(shared / rel))
            rows.append((f"shared {rel}", f"read {pool.format}", len(pool.tasks), t))
    print(f"{'pool':<48} {'step':<18} {'tasks':>7} {'seconds':>8} {'tasks/s':>9}")
    for name, step, n, t in rows:
        print(f"{name:<48} {step:<18} {n:>7} {t:>8.2f} {n / t:>9.0f}")


if __name__ == "__main__":
    main()
