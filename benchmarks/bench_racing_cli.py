"""Racing end to end through `raysys score --racing`: this checkout against another (an
older commit checked out with `git worktree add DIR COMMIT`), run in turn, on the first N
tasks of the shared Alpaca subset. Prints each run's seconds, the medians and their ratio,
and checks that both wrote the same scores (tasks, perturbations spent, U, the top B).

    python benchmarks/bench_racing_cli.py --vs /tmp/before --model MODEL_DIR
    python benchmarks/bench_racing_cli.py --model MODEL_DIR --tasks 8 --k 4 --budget 2 --runs 1   # a smoke run

Issue 26, item 1: a racing round used to start a new actor pool (process, imports, model
load); the pool is now kept across the rounds of a command.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALPACA = ROOT.parent / "shared" / "data" / "alpaca" / "alpaca_random5000_subset.json"


def subset(n: int, out: Path) -> Path:
    sys.path.insert(0, str(ROOT))
    from raysys.pools.canonical import write_parquet_tasks
    from raysys.pools.load import load_pool

    write_parquet_tasks(list(load_pool(str(ALPACA)).tasks)[:n], out)
    return out


def run(checkout: Path, pool: Path, out: Path, a: argparse.Namespace) -> float:
    """One `raysys score --racing` from scratch with `checkout`'s code; its wall seconds."""
    shutil.rmtree(out.parent, ignore_errors=True)
    out.parent.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(checkout), "RAY_ADDRESS": ""}
    cmd = [sys.executable, "-m", "raysys.cli", "score", "--pool", str(pool), "--model", a.model, "--out", str(out),
           "--instances", "1", "--perturbations", str(a.k), "--racing", str(a.budget), "--template", a.template,
           "--max-new-tokens", str(a.max_new_tokens), "--no-ifd"]
    start = time.perf_counter()
    r = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if r.returncode:
        sys.exit(f"{checkout}: exit {r.returncode}\n{r.stderr[-2000:]}")
    return seconds


def same(x: Path, y: Path) -> str:
    import pyarrow.parquet as pq

    a = {r["task_id"]: r for r in pq.read_table(x).to_pylist()}
    b = {r["task_id"]: r for r in pq.read_table(y).to_pylist()}
    if set(a) != set(b):
        return "DIFFERENT tasks"
    du = max(abs(a[t]["prompt_uncertainty"] - b[t]["prompt_uncertainty"]) for t in a)
    spent = all(a[t]["n_perturbations"] == b[t]["n_perturbations"] for t in a)
    top = {t for t in a if a[t]["racing_selected"]} == {t for t in b if b[t]["racing_selected"]}
    return f"max |dU| {du:.2g}, perturbations spent {'equal' if spent else 'DIFFERENT'}, top B {'equal' if top else 'DIFFERENT'}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="model folder (e.g. raysys model import's SmolLM2)")
    p.add_argument("--vs", help="another checkout (git worktree) to run in turn with this one")
    p.add_argument("--tasks", type=int, default=60)
    p.add_argument("--k", type=int, default=10, help="perturbations per task (K)")
    p.add_argument("--budget", type=int, default=6, help="B: the top B raced for")
    p.add_argument("--runs", type=int, default=3, help="runs of each checkout")
    p.add_argument("--template", default="chat", choices=("chat", "tk", "alpaca"))
    p.add_argument("--max-new-tokens", type=int, default=32)
    a = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="raysys-bench-racing-"))
    pool = subset(a.tasks, work / "pool.parquet")
    ways = {"this checkout": ROOT, **({"--vs": Path(a.vs).resolve()} if a.vs else {})}
    seconds: dict[str, list[float]] = {w: [] for w in ways}
    for i in range(a.runs):
        for j, (way, checkout) in enumerate(ways.items()):
            s = run(checkout, pool, work / f"way-{j}" / "scores.parquet", a)
            seconds[way].append(s)
            print(f"run {i + 1}: {way:14s} {s:7.1f} s", flush=True)
    print(f"\n{a.tasks} Alpaca tasks, n 1, K {a.k}, top {a.budget}, {a.runs} run(s) each (wall seconds, whole command)")
    for way, s in seconds.items():
        print(f"  {way:14s} median {statistics.median(s):7.1f} s  (min {min(s):.1f}, max {max(s):.1f})")
    if a.vs:
        ratio = statistics.median(seconds["this checkout"]) / statistics.median(seconds["--vs"])
        print(f"  this / --vs: {ratio:.2f}; outputs: {same(work / 'way-0' / 'scores.parquet', work / 'way-1' / 'scores.parquet')}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
