"""The greedy decode's share of scoring, before and after p_i0 comes from the decode itself
(issue 26, item 3; ScoringConfig.decode_p0).

    python benchmarks/bench_decode.py [--quick] [--model smollm2|tiny|DIR] [--tasks 64]
        [--perturbations 20] [--instances 1] [--max-new-tokens 48] [--threads 2] [--repeats 1]

Scores the first --tasks Alpaca tasks of the 5,000-task subset (the model's chat template
around the Alpaca text, word dropout) in one process with TaskScorer, float32: once with
decode_p0 off (the decode answers, then the engine scores every item, j = 0 included) and
once on (the decode keeps each answer's own likelihood, and the engine skips the j = 0
items whose tokens match). Each is timed whole, and its decode alone (the same prompts
through ModelRunner.generate_scored, with and without the likelihood); after an untimed
warm-up, --repeats interleaved passes, the best kept. Prints the seconds, the decode's
share of each, the share of j = 0 items the decode scored, and what changed: the answers
(none may), max |delta p| over all items and max |delta U| over tasks. --quick: the tiny
model on 12 synthetic tasks (tests/test_benchmarks.py).

    python benchmarks/bench_decode.py --batches 16 32 64 [--tasks 128] [--repeats 2]

times the decode alone (ModelRunner.generate_scored, p_i0 kept) at each generation batch
instead (`--generation-batch`; a scorer call decodes at most its `--tasks-per-batch` x n
prompts at once): seconds per prompt, best of --repeats interleaved passes after a warm-up,
and whether the answers and their likelihoods equal the first batch size's.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, Path(__file__).parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_dtype import alpaca_args, alpaca_setup, model_folder  # noqa: E402


def main(argv=None) -> int:
    ap = alpaca_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]), 64)
    ap.add_argument("--batches", type=int, nargs="*", help="time the decode alone at these generation batches")
    args = ap.parse_args(argv)

    import tempfile

    import numpy as np

    from raysys.models import load_model
    from raysys.scoring.scorer import TaskScorer

    tasks, cfg = alpaca_setup(args)
    with tempfile.TemporaryDirectory() as tmp:
        lm = load_model(model_folder(args, Path(tmp)), dtype="float32", device="cpu")
    if args.batches:
        return decode_batches(args, tasks, cfg, lm)
    ways = {"p_i0 by a forward": False, "p_i0 from the decode": True}
    scorers = {w: TaskScorer("", replace(cfg, decode_p0=on), loaded=lm, device="cpu") for w, on in ways.items()}
    ids = prompt_ids_of(next(iter(scorers.values())), tasks, cfg)
    for s in scorers.values():
        s.score(tasks[:4])  # warm-up, untimed
    best: dict[str, dict] = {}
    for _ in range(args.repeats):
        for w, s in scorers.items():
            t0 = time.perf_counter()
            rows, details = s.score(tasks, True)
            whole = time.perf_counter() - t0
            t0 = time.perf_counter()
            _, _, _, decoded = s.runner.generate_scored(ids, scored=ways[w])
            decode = time.perf_counter() - t0
            if w not in best or whole < best[w]["whole"]:
                best[w] = {"whole": whole, "decode": decode, "rows": rows, "details": details, "decoded": decoded}
    print(f"model {args.model}, {len(tasks)} tasks, n = {args.instances}, k = {args.perturbations}, "
          f"answers <= {args.max_new_tokens} tokens, {args.threads} threads, float32")
    print(f"{'way':<22} {'seconds':>8} {'decode s':>9} {'decode share':>13} {'speed-up':>9}")
    base = best["p_i0 by a forward"]["whole"]
    for w, b in best.items():
        print(f"{w:<22} {b['whole']:>8.1f} {b['decode']:>9.1f} {b['decode'] / b['whole']:>12.1%} "
              f"{base / b['whole']:>8.2f}x")
    off, on = best["p_i0 by a forward"], best["p_i0 from the decode"]
    p_off, p_on = np.array([d["p"] for d in off["details"]]), np.array([d["p"] for d in on["details"]])
    u_off = np.array([r["prompt_uncertainty"] for r in off["rows"]])
    u_on = np.array([r["prompt_uncertainty"] for r in on["rows"]])
    same = sum(a["target"] == b["target"] for a, b in zip(off["details"], on["details"]))
    scored = sum(d is not None for d in on["decoded"])
    print(f"decode-scored answers {scored} of {len(ids)}; answers equal {same} of {len(p_on)} items; "
          f"max |dp| {np.abs(p_on - p_off).max():.3g}; max |dU| {np.abs(u_on - u_off).max():.3g}")
    return 0


def prompt_ids_of(scorer, tasks, cfg) -> list[list[int]]:
    """The prompts the decode gets: each sampled instance's, fitted to the model."""
    from raysys.scoring.items import plan_task

    return [f.ids for f in scorer.fits([plan_task(t, cfg, scorer.template) for t in tasks])]


def decode_batches(args, tasks, cfg, lm) -> int:
    """The decode alone at each of --batches: seconds per prompt and its answers' sameness."""
    import numpy as np

    from raysys.scoring.scorer import TaskScorer

    scorer = TaskScorer("", cfg, loaded=lm, device="cpu")
    ids = prompt_ids_of(scorer, tasks, cfg)
    runner = scorer.runner
    runner.generate_scored(ids[:4], embed=False)  # warm-up, untimed
    best, out = {}, {}
    for _ in range(args.repeats):
        for b in args.batches:
            runner.generation = replace(runner.generation, batch=b)
            t0 = time.perf_counter()
            out[b] = runner.generate_scored(ids, embed=False)
            best[b] = min(best.get(b, float("inf")), time.perf_counter() - t0)
    print(f"model {args.model}, {len(ids)} prompts (mean {np.mean([len(i) for i in ids]):.0f} tokens), "
          f"answers <= {args.max_new_tokens} tokens, {args.threads} threads, float32, best of {args.repeats}")
    print(f"{'batch':>5} {'seconds':>8} {'ms/prompt':>10} {'speed-up':>9}  same as batch {args.batches[0]}")
    first = out[args.batches[0]]
    for b in args.batches:
        answers, _, _, lik = out[b]
        dp = max((abs(x[1] - y[1]) for x, y in zip(lik, first[3]) if x and y), default=0.0)
        print(f"{b:>5} {best[b]:>8.1f} {best[b] / len(ids) * 1000:>10.0f} {best[args.batches[0]] / best[b]:>8.2f}x  "
              f"answers {sum(x == y for x, y in zip(answers, first[0]))}/{len(ids)}, max |d log p| {dp:.2g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
