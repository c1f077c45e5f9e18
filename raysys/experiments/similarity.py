"""The instruction-similarity experiment's pure parts (INSTA): each seed's target tasks,
what each strategy name means for the selection, the selected tasks' similarity to the
targets, and the summary over seeds.

- `similarity`: raysys's similarity strategy with the encoder as configured;
- `similarity-aligned`: the same strategy with that encoder aligned to the pool first;
- `random`: a uniform random selection.

The summary per strategy is the mean and sample std over seeds of the targets' Rouge-L
and exact match (raysys.stats), and the paired difference with random (and with the
base model): the same seed, so the same targets.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from raysys.errors import ConfigError
from raysys.stats import mean_std, paired

BASE = "base"  # the rows of the model before any fine-tuning
METRICS = ("rougeL", "exact_match")


def draw_targets(ids: Sequence[str], n: int, seed: int) -> list[str]:
    """`n` of the target ids (all when n is 0), in their pool order."""
    if n > len(ids):
        raise ConfigError(f"target_tasks = {n} but the targets' pool has {len(ids)} task(s)")
    if n == 0:
        return list(ids)
    pick = np.random.default_rng([seed, 0x7A67]).choice(len(ids), n, replace=False)
    return [ids[i] for i in sorted(pick)]


def select_strategy(name: str) -> tuple[str, bool]:
    """(raysys.selection strategy, whether the encoder is the aligned one)."""
    return ("similarity", True) if name == "similarity-aligned" else (name, False)


def max_similarity(pool_emb: np.ndarray, target_emb: np.ndarray) -> np.ndarray:
    """Per pool task, the highest cosine similarity to a target (rows are unit-norm)."""
    return (pool_emb @ target_emb.T).max(axis=1)


def summarize(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per strategy (base first) mean +- std over seeds of each metric and of the
    selection's similarity; each strategy's paired difference with random and with base."""
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    per: dict[str, dict] = {}
    for s in strategies:
        rs = [r for r in rows if r["strategy"] == s]
        row: dict[str, Any] = {"seeds": len(rs)}
        for k in (*METRICS, "selected_similarity"):
            row[k], row[f"{k}_std"] = mean_std(r.get(k) for r in rs)
        per[s] = row
    diffs = {}
    for ref in ("random", BASE):
        for s in strategies:
            if s not in (ref, BASE) and ref in per:
                diffs[f"{s} - {ref}"] = {k: paired(rows, k, s, ref) for k in METRICS}
    return {"strategies": per, "paired": diffs}


def render(summary: Mapping[str, Any]) -> str:
    def pm(m, sd, scale=1.0, digits=1):  # Rouge-L and exact match are percentages already
        if m is None:
            return "-"
        return f"{m * scale:.{digits}f}" + ("" if sd is None else f" ± {sd * scale:.{digits}f}")

    head = f"{'strategy':<20} {'seeds':>5} {'Rouge-L':>13} {'exact match':>13} {'similarity':>13}"
    lines = [head, "-" * len(head)]
    for s, r in summary["strategies"].items():
        lines.append(f"{s:<20} {r['seeds']:>5} {pm(r['rougeL'], r['rougeL_std']):>13} "
                     f"{pm(r['exact_match'], r['exact_match_std']):>13} "
                     f"{pm(r['selected_similarity'], r['selected_similarity_std'], digits=3):>13}")
    for name, d in summary["paired"].items():
        p = d["rougeL"]
        if p["pairs"]:
            lines.append(f"paired {name}, Rouge-L: {pm(p['mean'], p['std'])} over {p['pairs']} seed(s), "
                         f"ahead in {p['a_better']}")
    return "\n".join(lines)
