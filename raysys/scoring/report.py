"""A short, human summary of a scores file: what `raysys score` prints at the end."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from raysys.costs import score_flops, score_tokens
from raysys.scoring.scores_file import scoring_setup


def extremes(path: str, column: str = "prompt_uncertainty", top: int = 5) -> tuple[list[dict], list[dict]]:
    """The `top` rows with the highest and the lowest `column` (ties by task_id)."""
    rows = pq.read_table(path, columns=["task_id", column, "prediction_probability"]).to_pylist()
    rows.sort(key=lambda r: (-r[column], r["task_id"]))
    return rows[:top], rows[::-1][:top]


def render_score_summary(run, top: int = 5) -> str:
    table = pq.read_table(run.out, columns=["prompt_uncertainty", "prediction_probability", "perplexity"])
    u = table.column("prompt_uncertainty").to_numpy()
    pp = table.column("prediction_probability").to_numpy()
    ppl = table.column("perplexity").to_numpy()
    rate = run.n_scored_now / run.seconds if run.seconds else 0.0
    tokens, flops = score_tokens(run.out), score_flops(run.out)
    counted = "" if tokens is None else f"; {tokens:,} tokens processed"
    counted += "" if flops is None else f", {flops:.3g} FLOPs"
    lines = [
        f"scored {run.n_tasks} tasks into {run.out} ({run.n_scored_now} now, {run.n_resumed} resumed) "
        f"in {run.seconds:.1f} s ({rate:.1f} tasks/s){counted}",
        f"prompt uncertainty   mean {np.mean(u):.4g}  median {np.median(u):.4g}  max {np.max(u):.4g}",
        f"prediction prob.     mean {np.mean(pp):.4g}  perplexity mean {np.mean(ppl):.4g}",
    ]
    lines += racing_lines(run.out)
    if run.details:
        lines.append(f"per-prompt details in {run.details}")
    high, low = extremes(run.out, top=top)
    for title, rows in (("most prompt-uncertain", high), ("least prompt-uncertain", low)):
        lines.append(f"{title}:")
        lines += [f"  {r['task_id']:<40} U={r['prompt_uncertainty']:.4g}  p={r['prediction_probability']:.4g}"
                  for r in rows]
    return "\n".join(lines)


def racing_lines(path: str) -> list[str]:
    """What racing spent and found (no lines for a full run)."""
    _, cfg = scoring_setup(path)
    if not cfg.racing:
        return []
    t = pq.read_table(path, columns=["n_instances", "n_perturbations", "decided_early", "racing_selected"])
    n, m = t.column("n_instances").to_numpy(), t.column("n_perturbations").to_numpy()
    spent, full = int(np.sum(n * m)), int(np.sum(n * cfg.perturbations))
    early = int(np.sum(t.column("decided_early").to_numpy(zero_copy_only=False)))
    return [f"racing: top {cfg.racing} found with {spent:,} of {full:,} perturbed forwards "
            f"({spent / max(full, 1):.0%}); {early} of {t.num_rows} tasks decided early "
            f"(column racing_selected)"]
