"""Racing replayed offline from a full run: what `raysys score --racing B` would have spent
and found on a pool already scored with all K perturbations (issue 26, item 1).

    raysys score --pool P --model M --out S.parquet --perturbations 20 --details D.parquet
    python benchmarks/bench_race_replay.py --details D.parquet [D2.parquet ...] [--budgets 0.01 0.1]
        [--first 2 3] [--deltas 0.05 0.2] [--rules t moderated]
    python benchmarks/bench_race_replay.py --quick        # synthetic details, no model

The detail rows keep every p_ij of the full run. Racing's rounds are replayed from them:
raysys.scoring.race_rounds.race, the driver `raysys score --racing` runs, with a round
function that reads the details instead of scoring. Perturbation j of a task is the same
in a raced and a full run (it depends on (seed, task, j) only), so the replay decides as
the live race would, in seconds instead of hours, and a rule can be tried on a real pool
at every budget B, first round, delta and rule. Per setting it prints the rounds, the perturbed
forwards racing would have scored (the share of the full run's), the overlap (Jaccard) of
its top B with the full run's and the tasks it misplaced. --quick makes a synthetic full
run (tasks with known spreads of U) and checks that a race whose first round is all K
spends everything and finds the full run's top B exactly (tests/test_benchmarks.py).
"""
from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def replay(details: list[dict]):
    """(task ids in the details' order, K, a RunRound that serves each round's detail rows
    from the full run's instead of scoring them)."""
    by_task: dict[str, list[dict]] = defaultdict(list)
    for d in details:
        by_task[d["task_id"]].append(d)
    k = max(int(d["perturbation"]) for d in details)

    def run_round(r, columns, ids, answers):
        wanted = set(columns)
        rows = [{"task_id": t, "tokens": 0, "flops": 0.0} for t in ids]
        return rows, [dict(d) for t in ids for d in by_task[t] if int(d["perturbation"]) in wanted]

    return list(by_task), k, run_round


def full_u(details: list[dict]) -> dict[str, float]:
    """Each task's U over all K perturbations, as the full run computes it."""
    import numpy as np

    from raysys.scoring import signals

    p: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for d in details:
        p[d["task_id"]][d["instance_id"]][int(d["perturbation"])] = float(d["p"])
    out = {}
    for t, inst in p.items():
        k = max(max(js) for js in inst.values())
        m = np.array([[js[j] for j in range(k + 1)] for js in inst.values()])
        out[t] = float(signals.prompt_uncertainty(m[:, 0], m[:, 1:]))
    return out


def settings_table(details: list[dict], budgets, firsts, deltas, rules=("t",)) -> list[dict]:
    """One row per (B, first round, delta, rule): what the replayed race spent and found."""
    from raysys.config import ScoringConfig
    from raysys.scoring import race_rule
    from raysys.scoring.race_rounds import race

    ids, k, run_round = replay(details)
    u = full_u(details)
    rows = []
    for share in budgets:
        budget = max(1, math.ceil(share * len(ids))) if share < 1 else int(share)
        truth = race_rule.top_b([u[t] for t in ids], ids, budget)
        for first in firsts:
            for delta in deltas:
                for rule in rules:
                    cfg = ScoringConfig(perturbations=k, racing=budget, racing_first=min(first, k), racing_delta=delta,
                                        racing_rule=rule)
                    result = race(ids, cfg, run_round)
                    chosen = {r["task_id"] for r in result.rows if r["racing_selected"]}
                    rows.append({"B": budget, "first": min(first, k), "delta": delta, "rule": rule,
                                 "rounds": len(result.rounds), "forwards": result.forwards / result.forwards_full,
                                 "jaccard": len(chosen & truth) / len(chosen | truth),
                                 "misplaced": len(truth - chosen)})
    return rows


def synthetic(tasks: int = 60, instances: int = 2, k: int = 10, seed: int = 0) -> list[dict]:
    """A full run's detail rows with known structure: each task's p_ij spread around its
    p_i0 by a task-specific scale (log-normal), so that U ranges over two decades."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for t in range(tasks):
        scale = float(np.exp(rng.normal(-3.0, 1.0)))
        for i in range(instances):
            p0 = float(rng.uniform(0.2, 0.8))
            for j in range(k + 1):
                p = p0 if j == 0 else float(np.clip(p0 + rng.normal(0.0, scale), 0.0, 1.0))
                out.append({"task_id": f"t{t:03d}", "instance_id": f"i{i}", "perturbation": j, "prompt": "",
                            "target": "y", "p": p})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--details", nargs="+", help="the detail rows of a full run (raysys score --details "
                    "D.parquet); several files are one pool (e.g. the scale run's shards)")
    ap.add_argument("--budgets", type=float, nargs="+", default=[0.01, 0.1],
                    help="B as a share of the tasks (< 1) or a count (>= 1)")
    ap.add_argument("--first", type=int, nargs="+", default=[2, 3], help="perturbations in the first round")
    ap.add_argument("--deltas", type=float, nargs="+", default=[0.05, 0.2])
    ap.add_argument("--rules", nargs="+", default=["t", "moderated"], choices=["t", "moderated"],
                    help="racing's bounds (raysys.scoring.race_rule.intervals)")
    ap.add_argument("--quick", action="store_true", help="a synthetic full run (60 tasks, n 2, K 10); no model")
    a = ap.parse_args(argv)
    if a.quick:
        details, firsts = synthetic(), [*a.first, 10]  # first = K: one round, the full run itself
    elif a.details:
        import pyarrow.parquet as pq

        details, firsts = [d for path in a.details for d in pq.read_table(path).to_pylist()], a.first
    else:
        ap.error("give --details D.parquet (or --quick)")
    ids = {d["task_id"] for d in details}
    k = max(int(d["perturbation"]) for d in details)
    print(f"{len(ids)} tasks, K = {k}, {'synthetic' if a.quick else ' '.join(a.details)}")
    print(f"{'B':>5} {'first':>5} {'delta':>6} {'rule':>9} {'rounds':>6} {'forwards':>9} {'jaccard':>8} "
          f"{'misplaced':>9}")
    for r in settings_table(details, a.budgets, firsts, a.deltas, a.rules):
        print(f"{r['B']:>5} {r['first']:>5} {r['delta']:>6.2f} {r['rule']:>9} {r['rounds']:>6} {r['forwards']:>8.1%} "
              f"{r['jaccard']:>8.3f} {r['misplaced']:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
