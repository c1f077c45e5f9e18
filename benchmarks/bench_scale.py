"""The scale run (issue 26, item 4): the top 500 of the 5,000-task Alpaca subset by prompt
uncertainty (k = 20, n = 1) on this machine, the full float32 run against the fastest safe
setting, with lm-eval's time on a sample of the same pairs for the ratio.

    python benchmarks/bench_scale.py [--steps full:0 full:1 ... fast peer] [--tasks 5000]
        [--budget 500] [--shards 5] [--model smollm2-135m-instruct] [--fast-flags "..."]
        [--peer-tasks 40] [--work runs/scale] [--results docs/results/scale]
    python benchmarks/bench_scale.py --quick         # the tiny model, 24 tasks, seconds

Every step runs `raysys score` as a user runs it (its actor pool, one actor, its own
process) and is timed whole, with the machine's peak memory in use sampled every second
(its rise over the step's start); each step's summary goes to --results as JSON, so a
step is done once and the table can be printed from the results alone:
  full:i  the float32 run, every perturbation, on shard i of --shards (the pool in equal
          consecutive parts, so that a 3-hour run can go in pieces across sessions): its
          seconds, the tasks' U (a slim Parquet: task_id, U) and every p_ij (task_id,
          instance_id, perturbation, p, target: what bench_race_replay.py replays);
  fast    --fast-flags on the whole pool at once (racing to the top --budget):
          its seconds, forwards spent, the chosen tasks, each racing round's seconds (from its
          part files), and its rows (fast.parquet: U, perturbations spent, decided early, chosen);
  peer    lm-eval (benchmarks/bench_peer.py's way: generate_until for the answers, then
          _loglikelihood_tokens of every pair) on the first --peer-tasks tasks: seconds per
          task, extrapolated to the pool (said so in the table).
The table: per way, seconds (the full run's summed over its shards), forwards spent, the
overlap (Jaccard) of its top --budget with the full float32 run's, peak memory, and the
speed-up over lm-eval's extrapolated time. Missing steps are shown as missing. The
float32 matmul peak of the day is printed beside it (benchmarks/scoring_stats.py).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, Path(__file__).parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from raysys.io import write_json, write_parquet  # atomic: a step's summary is its done-mark

ALPACA = ROOT.parent / "shared" / "data" / "alpaca" / "alpaca_random5000_subset.json"
# the fast setting, fixed before its run (docs/scoring.md, "The scale run"): the moderated rule at
# delta 0.2 (replayed on shard 0's details: 37 % of the forwards, top 100 Jaccard 0.980), float32
# answers with bfloat16 forwards, and 64 tasks per actor call so that the decode's batches hold 64
# prompts at n = 1 (16 tasks fill a 16-prompt batch; 64 decoded 1.5x the prompts per second)
FAST = ("--racing-rule moderated --racing-delta 0.2 --forward-dtype bfloat16 --tasks-per-batch 64 "
        "--generation-batch 64")
FAST_COLUMNS = ("task_id", "prompt_uncertainty", "n_instances", "n_perturbations", "decided_early", "racing_selected")
DETAIL_COLUMNS = ("task_id", "instance_id", "perturbation", "p", "target")  # what bench_race_replay reads


def used_memory() -> int:
    """Bytes of memory in use on the machine (MemTotal - MemAvailable)."""
    info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return (int(info["MemTotal"].split()[0]) - int(info["MemAvailable"].split()[0])) * 1024


def timed_command(cmd: list[str], log: Path) -> dict:
    """Run `cmd` (output to `log`); its wall seconds and the rise of memory in use."""
    start_mem, peak, done = used_memory(), [0], threading.Event()

    def sample() -> None:
        while not done.wait(1.0):
            peak[0] = max(peak[0], used_memory())

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    t0 = time.perf_counter()
    with open(log, "w") as out:
        r = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "RAY_ADDRESS": ""},
                           check=False)
    seconds = time.perf_counter() - t0
    done.set()
    watcher.join()
    if r.returncode:
        sys.exit(f"exit {r.returncode}: {shlex.join(cmd)}\n{log.read_text()[-2000:]}")
    return {"seconds": seconds, "peak_memory_rise": max(peak[0] - start_mem, 0), "command": shlex.join(cmd)}


def score_cmd(a: argparse.Namespace, pool: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "raysys.cli", "score", "--pool", str(pool), "--model", a.model, "--out", str(out),
            "--instances", "1", "--perturbations", str(a.k), "--max-new-tokens", str(a.max_new_tokens),
            "--template", a.template, "--chat-body", "alpaca", "--no-entropy", "--no-ifd", "--actors", "1", *extra]


def shards(a: argparse.Namespace, work: Path) -> list[Path]:
    """The pool (the first --tasks Alpaca tasks) in --shards equal consecutive parts."""
    from raysys.pools.canonical import write_parquet_tasks

    paths = [work / f"shard-{i}.parquet" for i in range(a.shards)]
    whole = work / "pool.parquet"
    if not whole.is_file() or not all(p.is_file() for p in paths):
        tasks = pool_tasks(a)
        write_parquet_tasks(tasks, whole)
        size = math.ceil(len(tasks) / a.shards)
        for i, p in enumerate(paths):
            write_parquet_tasks(tasks[i * size: (i + 1) * size], p)
    return paths


def pool_tasks(a: argparse.Namespace) -> list:
    if a.quick:
        from raysys.config import SynthConfig
        from raysys.pools.markov import generate

        return generate(SynthConfig(rules=12, examples_per_rule=2, seed=5))
    from raysys.pools.load import load_pool

    return list(load_pool(str(ALPACA)).tasks)[: a.tasks]


def step_full(a: argparse.Namespace, i: int, work: Path, results: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out, details = work / "full" / f"shard-{i}.parquet", work / "full" / f"shard-{i}.details.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = timed_command(score_cmd(a, shards(a, work)[i], out, "--details", str(details)),
                            work / "full" / f"shard-{i}.log")
    rows = pq.read_table(out, columns=["task_id", "prompt_uncertainty", "n_instances", "n_perturbations"])
    write_parquet(results / f"full-{i}.parquet", rows.select(["task_id", "prompt_uncertainty"]))
    d = pq.read_table(details, columns=list(DETAIL_COLUMNS))
    write_parquet(results / f"full-{i}.details.parquet", pa.table({c: d.column(c) for c in d.column_names}))
    forwards = int(sum(n * m for n, m in zip(rows.column("n_instances").to_pylist(),
                                              rows.column("n_perturbations").to_pylist())))
    write_json(results / f"full-{i}.json", {**summary, "tasks": rows.num_rows, "forwards": forwards})


def step_fast(a: argparse.Namespace, work: Path, results: Path) -> None:
    shards(a, work)
    out = work / "fast" / "scores.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = timed_command(score_cmd(a, work / "pool.parquet", out, "--racing", str(a.budget),
                                      *shlex.split(a.fast_flags)), work / "fast" / "score.log")
    write_json(results / "fast.json", {**summary, "flags": a.fast_flags, **ship_fast(out, results),
                                  "round_seconds": round_seconds(out, summary["seconds"])})


def round_seconds(out: Path, seconds: float) -> list[float]:
    """Seconds each racing round took: from the command's start (OUT written at its end,
    `seconds` after it began) to the last part file of round 0, and so on round by round
    (the newest run's folder under OUT.parts)."""
    run = max((d for d in out.with_name(out.name + ".parts").iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime)
    rounds = sorted(run.glob("round-*"), key=lambda d: int(d.name.split("-")[1]))
    ends = [max(f.stat().st_mtime for f in d.iterdir()) for d in rounds]
    return [b - a for a, b in zip([out.stat().st_mtime - seconds, *ends], ends)]


def ship_fast(out: Path, results: Path) -> dict:
    """The fast run's rows as docs/results/scale/fast.parquet (U, perturbations spent, decided
    early, chosen: what its test recomputes) and its counts for fast.json."""
    import pyarrow.parquet as pq

    rows = pq.read_table(out, columns=list(FAST_COLUMNS))
    write_parquet(results / "fast.parquet", rows)
    rows = rows.to_pylist()
    return {"tasks": len(rows), "forwards": sum(r["n_instances"] * r["n_perturbations"] for r in rows),
            "chosen": sorted(r["task_id"] for r in rows if r["racing_selected"])}


def step_peer(a: argparse.Namespace, results: Path) -> None:
    """lm-eval on the first --peer-tasks tasks, as bench_peer.py runs it (in this process)."""
    import torch
    from bench_peer import peer_answers, peer_mean_logprobs, peer_model

    from raysys.config import GenerationConfig, PromptConfig, ScoringConfig
    from raysys.models import load_model, prompt_ids
    from raysys.models.gguf import model_folder
    from raysys.scoring.items import plan_task
    from raysys.scoring.likelihood import target_ids
    from raysys.scoring.scorer import TaskScorer

    torch.set_num_threads(os.cpu_count() or 1)
    folder = a.model if Path(a.model).is_dir() else model_folder(a.model)[0]
    lm = load_model(folder, dtype="float32", device="cpu")
    cfg = ScoringConfig(instances=1, perturbations=a.k, entropy=False, ifd=False,
                        generation=GenerationConfig(max_new_tokens=a.max_new_tokens),
                        prompt=PromptConfig(a.template, 0, chat_body="alpaca"))
    tasks = pool_tasks(a)[: a.peer_tasks]
    scorer, peer = TaskScorer("", cfg, loaded=lm), peer_model(lm, 8)
    t0 = time.perf_counter()
    plans = [plan_task(t, cfg, scorer.template) for t in tasks]
    fits = scorer.fits(plans)
    answers = peer_answers(peer, [f.text for f in fits], cfg.generation.max_new_tokens)
    batch = scorer.items(plans, answers)
    tok = lm.tokenizer
    peer_mean_logprobs(peer, prompt_ids(tok, batch.items.prompts, scorer.runner.max_prompt),
                       target_ids(tok, batch.items.targets))
    seconds = time.perf_counter() - t0
    write_json(results / "peer.json", {"tasks": len(tasks), "seconds": seconds, "pairs": len(batch.items),
                                  "seconds_per_task": seconds / len(tasks)})


def table(a: argparse.Namespace, results: Path) -> list[dict]:
    """One row per way from what --results holds."""
    import pyarrow.parquet as pq

    from raysys.scoring import race_rule

    def load(name: str) -> dict | None:
        p = results / name
        return json.loads(p.read_text()) if p.is_file() else None

    full = [load(f"full-{i}.json") for i in range(a.shards)]
    done = [i for i, f in enumerate(full) if f]
    peer, fast = load("peer.json"), load("fast.json")
    n_tasks = sum(full[i]["tasks"] for i in done) if len(done) == a.shards else None
    truth = None
    if n_tasks:
        u = [r for i in done for r in pq.read_table(results / f"full-{i}.parquet").to_pylist()]
        truth = race_rule.top_b([r["prompt_uncertainty"] for r in u], [r["task_id"] for r in u], a.budget)
    peer_s = peer["seconds_per_task"] * (n_tasks or a.tasks) if peer else None
    rows = []
    if peer:
        rows.append({"way": f"lm-eval (extrapolated from {peer['tasks']} tasks)", "seconds": peer_s,
                     "forwards": 1.0, "jaccard": None, "memory": None})
    if done:
        secs = sum(full[i]["seconds"] for i in done)
        rows.append({"way": f"raysys float32, full ({len(done)} of {a.shards} shards)", "seconds": secs,
                     "forwards": 1.0, "jaccard": 1.0 if truth else None,
                     "memory": max(full[i]["peak_memory_rise"] for i in done)})
    if fast:
        full_fw = fast["tasks"] * a.k
        chosen = set(fast["chosen"])
        rows.append({"way": "raysys fast (racing; its flags below)", "seconds": fast["seconds"], "flags": fast["flags"],
                     "forwards": fast["forwards"] / full_fw,
                     "jaccard": len(chosen & truth) / len(chosen | truth) if truth else None,
                     "memory": fast["peak_memory_rise"]})
    for r in rows:
        r["speedup"] = peer_s / r["seconds"] if peer_s and r["seconds"] else None
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", nargs="*", default=None, help="full:i, fast, peer (default: every missing one)")
    ap.add_argument("--tasks", type=int, default=5000)
    ap.add_argument("--budget", type=int, default=500)
    ap.add_argument("--shards", type=int, default=5)
    ap.add_argument("-k", type=int, default=20)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--template", default="chat")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--fast-flags", default=FAST)
    ap.add_argument("--peer-tasks", type=int, default=40)
    ap.add_argument("--work", default="runs/scale")
    ap.add_argument("--results", default="docs/results/scale")
    ap.add_argument("--quick", action="store_true", help="the tiny model on 24 synthetic tasks")
    a = ap.parse_args(argv)
    if a.quick:
        from raysys.models import init_tiny

        a.tasks, a.budget, a.shards, a.k, a.max_new_tokens, a.template, a.peer_tasks = 24, 4, 2, 4, 6, "plain", 6
        a.model = str(Path(a.work) / "tiny")
        if not (Path(a.model) / "config.json").is_file():
            init_tiny(a.model)
    work, results = Path(a.work).resolve(), Path(a.results).resolve()
    work.mkdir(parents=True, exist_ok=True)
    results.mkdir(parents=True, exist_ok=True)
    steps = a.steps if a.steps is not None else [
        s for s in [*(f"full:{i}" for i in range(a.shards)), "fast", "peer"]
        if not (results / f"{s.replace(':', '-')}.json").is_file()]
    for s in steps:
        print(f"step {s} ...", file=sys.stderr, flush=True)
        if s.startswith("full:"):
            step_full(a, int(s.split(":")[1]), work, results)
        elif s == "fast":
            step_fast(a, work, results)
        elif s == "peer":
            step_peer(a, results)
        else:
            ap.error(f"unknown step {s!r}")
    from scoring_stats import matmul_peak

    print(f"{a.tasks} tasks, k = {a.k}, n = 1, answers <= {a.max_new_tokens} tokens, top {a.budget}; "
          f"float32 matmul peak of the day {matmul_peak('cpu', __import__('torch').float32) / 1e9:.0f} GFLOP/s")
    print(f"{'way':<62} {'seconds':>8} {'forwards':>9} {'jaccard':>8} {'memory GB':>9} {'vs lm-eval':>10}")
    for r in table(a, results):
        cells = [("-" if v is None else format(v, spec)).rjust(w) for v, spec, w in (
            (r["seconds"], ".0f", 8), (r["forwards"], ".1%", 9), (r["jaccard"], ".3f", 8),
            (None if r["memory"] is None else r["memory"] / 1e9, ".2f", 9),
            (None if r["speedup"] is None else f"{r['speedup']:.2f}x", "", 10))]
        print(f"{r['way']:<62} " + " ".join(cells))
        if r.get("flags"):
            print(f"  {r['flags']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
