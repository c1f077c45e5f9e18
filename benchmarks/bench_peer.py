"""raysys against a peer, lm-evaluation-harness, on the real model, in one run:

    pip install -c constraints.txt "lm-eval==0.4.13"    # a benchmark-only extra
    python benchmarks/bench_peer.py [--quick] [--niv2-tasks 4] [--alpaca-tasks 40]
        [--race-tasks 100] [--budget 10] [--race-pool alpaca|niv2] [--no-race-peer] [--batch 8]
        [--max-new-tokens 32] [--models smollm2]

**Exact** (one row per pool): the same (prompt, target) pairs scored by lm-eval's
Hugging Face model (`HFLM._loglikelihood_tokens`, its token-level log-likelihood path:
length-sorted batches of --batch, full logits, one-token-continuation cache) and by the
raysys engine (raysys.scoring.likelihood through the TaskScorer). Both get the same token
ids: lm-eval's text path moves a context's trailing whitespace into the continuation and
so can split the prompt/answer boundary differently (up to 1.3 nats apart on SmolLM2),
which would compare two different quantities. lm-eval gets the ids already tokenized
(its tokenization untimed); the engine's time includes its own tokenization. Pairs are the
perturbation items of `raysys score` (n instances x (k + 1) prompts per task, targets the
model's greedy answers, made untimed); mean log-prob = lm-eval's sum / target tokens
(EOS included, as raysys scores it).
  niv2    --niv2-tasks NIV2 tasks spread over the task files, n = 10, k = 10, TK prompt with
          2 demonstrations in the chat template;
  alpaca  the first --alpaca-tasks Alpaca tasks, n = 1, k = 10, Alpaca prompt in the chat
          template.

**End to end** (one row per way): the B most prompt-uncertain of --race-tasks Alpaca tasks
(n = 1, k = 10; --race-pool niv2: NIV2 tasks spread over the files, n = 10, TK prompt), from
the pool to the chosen set, each way timing everything it does:
  peer     lm-eval's `generate_until` for the greedy answers, then its log-likelihood of
           every pair (the pairs tokenized as raysys tokenizes them, timed), U per task,
           top B;
  full     raysys's scorer on the whole pool (its batched generation and engine);
  racing   raysys's race (raysys.scoring.race_rounds, in this process): every task gets 3
           perturbations, the rest only where the top B is still in doubt.
It prints seconds, the speed-up over the peer, the share of perturbed forwards each spent,
and the overlap (Jaccard) of each top B with the full run's (the peer's can differ where
its greedy answers differ: the row says how many of them equal raysys's).

Timing: torch.set_num_threads(--threads), one warm-up item each (excluded), float32 CPU.
--quick: the tiny built-in model and small pools (tests/test_benchmarks.py runs it).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
for path in (HERE.parent, HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_scoring import DEFAULT_SHARED, spread, timed  # noqa: E402
from scoring_models import load_models  # noqa: E402

from raysys.config import GenerationConfig, PromptConfig, ScoringConfig  # noqa: E402
from raysys.models import prompt_ids  # noqa: E402
from raysys.pools.load import load_pool  # noqa: E402
from raysys.scoring import race_rule  # noqa: E402
from raysys.scoring.items import plan_task, task_rows  # noqa: E402
from raysys.scoring.likelihood import target_ids
from raysys.scoring.race_rounds import in_process, race  # noqa: E402
from raysys.scoring.scorer import TaskScorer  # noqa: E402


def peer_model(lm, batch: int):
    """lm-eval's Hugging Face model around the already loaded model and tokenizer."""
    import logging

    from lm_eval.models.huggingface import HFLM

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    return HFLM(pretrained=lm.model, tokenizer=lm.tokenizer, batch_size=batch, device="cpu")


def peer_mean_logprobs(peer, p_ids: list[list[int]], t_ids: list[list[int]]) -> np.ndarray:
    """Mean target log-prob of each pair by lm-eval's token-level path."""
    reqs = [(("", ""), p, t) for p, t in zip(p_ids, t_ids)]
    out = peer._loglikelihood_tokens(reqs, disable_tqdm=True)
    return np.array([s / len(t) for (s, _), t in zip(out, t_ids)])


def peer_answers(peer, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Greedy answers by lm-eval's generate_until (stops at the tokenizer's EOS)."""
    from lm_eval.api.instance import Instance

    reqs = [Instance("generate_until", {}, (p, {"until": [], "max_gen_toks": max_new_tokens, "do_sample": False}), i)
            for i, p in enumerate(prompts)]
    return list(peer.generate_until(reqs, disable_tqdm=True))


def pools(args) -> list[tuple[str, list, ScoringConfig]]:
    shared = Path(args.shared)
    gen = GenerationConfig(max_new_tokens=args.max_new_tokens)

    def cfg(body: str, n: int) -> ScoringConfig:
        return ScoringConfig(instances=n, perturbations=args.k, prompt=PromptConfig(args.template, 2, body),
                             generation=gen, entropy=False, ifd=False)

    out = []
    if args.niv2_tasks:
        out.append(("niv2", spread(list(load_pool(shared / "niv2").tasks), args.niv2_tasks), cfg("tk", 10)))
    if args.alpaca_tasks:
        tasks = load_pool(shared / "alpaca" / "alpaca_random5000_subset.json").tasks[: args.alpaca_tasks]
        out.append(("alpaca", list(tasks), cfg("alpaca", 1)))
    return out


def exact_row(lm, peer, name: str, tasks: list, cfg: ScoringConfig) -> dict:
    scorer = TaskScorer("", cfg, loaded=lm)
    batch = scorer.items([plan_task(t, cfg, scorer.template) for t in tasks])
    items, tok = batch.items, lm.tokenizer
    p_ids, t_ids = prompt_ids(tok, items.prompts, scorer.runner.max_prompt), target_ids(tok, items.targets)
    peer_mean_logprobs(peer, p_ids[:1], t_ids[:1])  # warm-up
    scorer.engine.score(items.prompts[:1], items.targets[:1], [0])
    ref, t_peer = timed(lambda: peer_mean_logprobs(peer, p_ids, t_ids))
    eng, t_eng = timed(lambda: scorer.engine.score(items.prompts, items.targets, items.groups))
    u_ref = np.array([r["prompt_uncertainty"] for r in task_rows(batch, ref)])
    u_eng = np.array([r["prompt_uncertainty"] for r in task_rows(batch, eng)])
    n = len(items)
    return {"pool": name, "tasks": len(tasks), "pairs": n, "tokens": sum(map(len, p_ids)) + sum(map(len, t_ids)),
            "peer_s": t_peer, "eng_s": t_eng, "peer_ps": n / t_peer, "eng_ps": n / t_eng, "ratio": t_peer / t_eng,
            "dlogp": float(np.max(np.abs(ref - eng))), "dU": float(np.max(np.abs(u_ref - u_eng)))}


def end_to_end(lm, peer, tasks: list, cfg: ScoringConfig, budget: int, with_peer: bool = True) -> list[dict]:
    ids = [t.task_id for t in tasks]
    k, n_inst = cfg.perturbations, [min(cfg.instances, len(t.instances)) for t in tasks]
    full_fw = sum(n * k for n in n_inst)
    scorer = TaskScorer("", cfg, loaded=lm)
    (full_rows, full_details), t_full = timed(lambda: scorer.score(tasks, True))
    full_top = race_rule.top_b([r["prompt_uncertainty"] for r in full_rows], ids, budget)

    def peer_run():
        plans = [plan_task(t, cfg, scorer.template) for t in tasks]
        fits = [scorer.runner.fit_prompt(lambda d, p=p, i=i: p.prompts.text(0, i, d), cfg.prompt.demonstrations)
                for p in plans for i in p.instances]
        answers = peer_answers(peer, [f.text for f in fits], cfg.generation.max_new_tokens)
        batch = scorer.items(plans, answers)
        tok = lm.tokenizer
        lp = peer_mean_logprobs(peer, prompt_ids(tok, batch.items.prompts, scorer.runner.max_prompt),
                                target_ids(tok, batch.items.targets))
        return task_rows(batch, lp), answers

    ours = [d["target"] for d in full_details if d["perturbation"] == 0]
    if with_peer:
        (peer_rows, answers), t_peer = timed(peer_run)
        peer_top = race_rule.top_b([r["prompt_uncertainty"] for r in peer_rows], ids, budget)
    else:  # speed-ups against raysys's full run instead
        answers, t_peer, peer_top = ours, t_full, full_top
    rcfg = replace(cfg, racing=budget)
    racer = TaskScorer("", rcfg, loaded=lm)
    result, t_race = timed(lambda: race(ids, rcfg, in_process(racer, tasks)))
    race_top = {r["task_id"] for r in result.rows if r["racing_selected"]}

    def jac(a: set, b: set) -> float:
        return len(a & b) / len(a | b)

    same = sum(a == b for a, b in zip(answers, ours))
    peer = [{"way": "peer", "s": t_peer, "speedup": 1.0, "forwards": 1.0, "jaccard": jac(peer_top, full_top),
             "note": f"lm-eval; {same}/{len(ours)} greedy answers equal raysys's"}] if with_peer else []
    return peer + [
        {"way": "full", "s": t_full, "speedup": t_peer / t_full, "forwards": 1.0, "jaccard": 1.0,
         "note": "raysys scorer, all k perturbations"},
        {"way": "racing", "s": t_race, "speedup": t_peer / t_race, "forwards": result.forwards / full_fw,
         "jaccard": jac(race_top, full_top),
         "note": f"rounds at {'/'.join(map(str, result.rounds))} perturbations, delta {rcfg.racing_delta}"},
    ]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny model, small pools (seconds)")
    p.add_argument("--models", default="smollm2", help="smollm2, tiny or a model folder")
    p.add_argument("--niv2-tasks", type=int, default=4)
    p.add_argument("--alpaca-tasks", type=int, default=40)
    p.add_argument("--race-tasks", type=int, default=100)
    p.add_argument("--budget", type=int, default=10, help="B of the end-to-end top-B selection")
    p.add_argument("--race-pool", choices=("alpaca", "niv2"), default="alpaca",
                   help="end to end: Alpaca (n = 1) or NIV2 tasks spread over the files (n = 10)")
    p.add_argument("--race-peer", action=argparse.BooleanOptionalAction, default=True,
                   help="end to end: also time lm-eval (--no-race-peer: raysys full vs racing only)")
    p.add_argument("-k", type=int, default=10, help="perturbations per task")
    p.add_argument("--batch", type=int, default=8, help="lm-eval's batch size")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--template", default="chat", choices=("chat", "tk"))
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    p.add_argument("--shared", default=str(DEFAULT_SHARED))
    p.add_argument("--cache-dir", default="~/.cache/raysys-bench")
    args = p.parse_args(argv)
    args.models = args.models.split(",")
    args.device, args.dtype = "cpu", "float32"
    if args.quick:
        args.models, args.template = ["tiny"], "tk"
        args.niv2_tasks, args.alpaca_tasks, args.race_tasks, args.budget = 1, 6, 12, 3
        args.max_new_tokens, args.k = 6, 4
    return args


def main(argv=None) -> None:
    import torch

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        for mname, lm in load_models(args, Path(tmp)):
            peer = peer_model(lm, args.batch)
            rows = []
            for name, tasks, cfg in pools(args):
                if args.quick and name == "niv2":
                    cfg = replace(cfg, instances=2)
                rows.append(exact_row(lm, peer, name, tasks, cfg))
                r = rows[-1]
                print(f"{mname}/{name}: {r['pairs']} pairs, lm-eval {r['peer_s']:.1f}s, raysys {r['eng_s']:.1f}s",
                      flush=True)
            print(f"\nexact, {mname}: the same token ids through lm-eval 0.4.13 (batch {args.batch}) and raysys")
            head = (f"{'pool':<7} {'tasks':>5} {'pairs':>6} {'tokens':>8} | {'lm-eval p/s':>11} {'raysys p/s':>10} "
                    f"{'ratio':>6} | {'max|dlogp|':>10} {'max|dU|':>9}")
            print(head + "\n" + "-" * len(head))
            for r in rows:
                print(f"{r['pool']:<7} {r['tasks']:>5} {r['pairs']:>6} {r['tokens']:>8} | {r['peer_ps']:>11.2f} "
                      f"{r['eng_ps']:>10.2f} {r['ratio']:>5.2f}x | {r['dlogp']:>10.2e} {r['dU']:>9.2e}")
            if args.race_pool == "niv2":
                tasks, body, n = spread(list(load_pool(Path(args.shared) / "niv2").tasks), args.race_tasks), "tk", 10
            else:
                tasks = load_pool(Path(args.shared) / "alpaca" / "alpaca_random5000_subset.json").tasks[: args.race_tasks]
                body, n = "alpaca", 1
            cfg = ScoringConfig(instances=n, perturbations=args.k, prompt=PromptConfig(args.template, 2, body),
                                generation=GenerationConfig(max_new_tokens=args.max_new_tokens), entropy=False,
                                ifd=False)
            e2e = end_to_end(lm, peer, list(tasks), cfg, args.budget, args.race_peer)
            print(f"\nend to end, {mname}: top {args.budget} of {len(tasks)} {args.race_pool} tasks by prompt "
                  f"uncertainty (n = {n}, k = {args.k}){'' if args.race_peer else '; speed-ups over the full run'}")
            head = f"{'way':<7} {'seconds':>8} {'speed-up':>8} {'forwards':>8} {'top-B Jaccard':>13}  note"
            print(head + "\n" + "-" * len(head))
            for r in e2e:
                print(f"{r['way']:<7} {r['s']:>8.1f} {r['speedup']:>7.2f}x {r['forwards']:>8.0%} "
                      f"{r['jaccard']:>13.2f}  {r['note']}")


if __name__ == "__main__":
    main()
