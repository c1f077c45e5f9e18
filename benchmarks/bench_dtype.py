"""Prompt uncertainty in bfloat16 on the CPU against float32: its speed, and whether U's
ranking survives (issue 26). U is a mean of |p_ij - p_i0|, differences of nearby
probabilities, so a small error in p can reorder tasks even when p itself agrees.

    python benchmarks/bench_dtype.py [--quick] [--model smollm2|tiny|DIR] [--tasks 200]
        [--perturbations 20] [--instances 1] [--max-new-tokens 48] [--threads 2] [--repeats 1]
        [--shared ../shared/data] [--cache-dir ~/.cache/raysys-bench]

Scores the same Alpaca tasks (the first --tasks of the 5,000-task subset, the model's chat
template around the Alpaca text, word-dropout perturbations as `raysys score` makes them)
in one process with raysys.scoring.scorer.TaskScorer, the model's weights in float32 and
in bfloat16 (each decodes its own greedy answers, as a bf16 run would), and float32
answers scored by bfloat16 forwards (`--forward-dtype bfloat16`: the answers are
float32's, every p comes from a bfloat16 copy of the weights); after an untimed
warm-up on 8 tasks, --repeats timed passes of each, interleaved, the best kept. Prints per setting the seconds and tasks/s, the measured float32 and bfloat16
matmul peaks of the day, and for each bfloat16 setting against float32: the share of instances whose
greedy answer changed, max and mean |delta p_i0|, max and mean |delta U|, Spearman's rho
of U, and the overlap (Jaccard) of the top-B tasks by U at B = 1 %, 10 % and 25 % of the
tasks. --quick: the tiny model on 12 synthetic tasks (tests/test_benchmarks.py).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

MIXED = "float32+bf16-forwards"  # float32 weights decode, a bfloat16 copy scores


def top_overlap(a, b, share: float) -> float:
    """Jaccard of the top ceil(share x n) indices by value in a and in b (ties by index)."""
    import math

    import numpy as np

    k = max(1, math.ceil(share * len(a)))
    top = [set(np.argsort(-np.asarray(x), kind="stable")[:k].tolist()) for x in (a, b)]
    return len(top[0] & top[1]) / len(top[0] | top[1])


def compare(f32: list[dict], b16: list[dict], details32: list[dict], details16: list[dict]) -> dict:
    """bf16 against float32 on the same tasks (rows in the same order)."""
    import numpy as np
    from scipy.stats import spearmanr

    u32 = np.array([r["prompt_uncertainty"] for r in f32])
    u16 = np.array([r["prompt_uncertainty"] for r in b16])
    answers = {(d["task_id"], d["instance_id"]): d["target"] for d in details32 if d["perturbation"] == 0}
    p0 = {(d["task_id"], d["instance_id"]): d["p"] for d in details32 if d["perturbation"] == 0}
    mine = [d for d in details16 if d["perturbation"] == 0]
    changed = sum(d["target"] != answers[(d["task_id"], d["instance_id"])] for d in mine)
    dp = np.array([abs(d["p"] - p0[(d["task_id"], d["instance_id"])]) for d in mine])
    return {"instances": len(mine), "answers_changed": changed / len(mine), "max_dp0": float(dp.max()),
            "mean_dp0": float(dp.mean()), "max_dU": float(np.abs(u16 - u32).max()),
            "mean_dU": float(np.abs(u16 - u32).mean()), "spearman_U": float(spearmanr(u32, u16).statistic),
            **{f"top{int(s * 100)}_jaccard": top_overlap(u32, u16, s) for s in (0.01, 0.10, 0.25)}}


def tasks_of(args):
    if args.quick:
        from raysys.config import SynthConfig
        from raysys.pools.markov import generate

        return generate(SynthConfig(rules=12, examples_per_rule=2, seed=5))
    from raysys.pools.load import load_pool

    return list(load_pool(str(Path(args.shared) / "alpaca" / "alpaca_random5000_subset.json")).tasks)[:args.tasks]


def alpaca_args(ap: argparse.ArgumentParser, tasks: int) -> argparse.ArgumentParser:
    """The options of the benchmarks that score the first Alpaca tasks in one process
    (this one, bench_decode.py)."""
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--tasks", type=int, default=tasks)
    ap.add_argument("--perturbations", type=int, default=20)
    ap.add_argument("--instances", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="timed passes of each way, interleaved (best kept)")
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--cache-dir", default="~/.cache/raysys-bench")
    return ap


def alpaca_setup(args):
    """The tasks and the scoring config of alpaca_args' options (--quick: the tiny model's
    settings); torch's threads set."""
    import torch

    from raysys.config import GenerationConfig, PromptConfig, ScoringConfig

    torch.set_num_threads(args.threads)
    if args.quick:
        args.model, args.perturbations, args.max_new_tokens = "tiny", 4, 8
    cfg = ScoringConfig(instances=args.instances, perturbations=args.perturbations, entropy=False, ifd=False,
                        generation=GenerationConfig(max_new_tokens=args.max_new_tokens),
                        prompt=PromptConfig("plain" if args.model == "tiny" else "chat", 0, chat_body="alpaca"))
    return tasks_of(args), cfg


def model_folder(args, tmp: Path) -> str:
    """--model's folder: the tiny model written into `tmp`, SmolLM2's import, or a folder."""
    from raysys.models import init_tiny

    if args.model == "tiny":
        return str(init_tiny(tmp / "tiny"))
    if args.model == "smollm2":
        from scoring_models import smollm2_folder

        return str(smollm2_folder(args))
    return args.model


def main(argv=None) -> int:
    args = alpaca_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]), 200).parse_args(argv)

    import torch
    from scoring_stats import matmul_peak

    from raysys.models import load_model
    from raysys.scoring.scorer import TaskScorer

    tasks, cfg = alpaca_setup(args)
    with tempfile.TemporaryDirectory() as tmp:
        folder = model_folder(args, Path(tmp))
        peaks = {d: matmul_peak("cpu", getattr(torch, d)) for d in ("float32", "bfloat16")}
        out: dict = {}
        models = {d: load_model(folder, dtype=d, device="cpu") for d in ("float32", "bfloat16")}
        scorers = {d: TaskScorer("", cfg, loaded=models[d], device="cpu") for d in ("float32", "bfloat16")}
        # float32 answers (the decode), bfloat16 forwards (every p): raysys score --forward-dtype bfloat16
        scorers[MIXED] = TaskScorer("", replace(cfg, forward_dtype="bfloat16"), loaded=models["float32"], device="cpu")
        for d, scorer in scorers.items():
            scorer.score(tasks[:8])  # warm-up, untimed
        for _ in range(args.repeats):  # interleaved; the best time of each dtype
            for d, scorer in scorers.items():
                t0 = time.perf_counter()
                rows, details = scorer.score(tasks, details=True)
                sec = time.perf_counter() - t0
                out[d] = (min(sec, out[d][0]) if d in out else sec, rows, details)
    print(f"model {args.model}, {len(tasks)} tasks, n = {args.instances}, k = {args.perturbations}, "
          f"answers <= {args.max_new_tokens} tokens, {args.threads} threads")
    print(f"matmul peak of the day: float32 {peaks['float32'] / 1e9:.0f} GFLOP/s, "
          f"bfloat16 {peaks['bfloat16'] / 1e9:.0f} GFLOP/s")
    print(f"{'dtype':<22} {'seconds':>8} {'tasks/s':>8} {'speed-up':>8}")
    for dtype, (sec, _, _) in out.items():
        print(f"{dtype:<22} {sec:>8.1f} {len(tasks) / sec:>8.2f} {out['float32'][0] / sec:>7.2f}x")
    for other in ("bfloat16", MIXED):
        c = compare(out["float32"][1], out[other][1], out["float32"][2], out[other][2])
        print(f"{other} against float32: " + ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in c.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
