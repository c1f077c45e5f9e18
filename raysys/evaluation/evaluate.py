"""`raysys eval`: a model evaluated on a pool's tasks (or some of them) on the actor pool
(raysys.actors, worker "evaluate": raysys.evaluation.evaluator), with the same resumable
part files as scoring; metrics.json (NLL of the references, label accuracy, Rouge-L and
exact match overall, per classification and generative tasks, per task; tokens and FLOPs)
written atomically.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from raysys.actors import map_pool
from raysys.config import EvalConfig
from raysys.config.mapping import to_dict
from raysys.costs import total
from raysys.evaluation.evaluator import DETAIL_SCHEMA
from raysys.evaluation.metrics import aggregate
from raysys.io import write_json, write_parquet
from raysys.models import check_model_path, prompt_template
from raysys.pools.load import detect_format
from raysys.pools.subset import subset_pool
from raysys.runs.keys import run_id
from raysys.runs.parts import Parts

PER_TASK = ("task_id", "is_classification", "n_instances", "n_answered", "rougeL", "exact_match", "nll", "n_labeled",
            "label_accuracy", "tokens", "flops")


def evaluate_pool(pool: str, model: str, out: str, cfg: EvalConfig = EvalConfig(), *,
                  task_ids: Sequence[str] | None = None, actors: int = 1, gpus_per_actor: float | None = None,
                  details: str | None = None, trust_remote_code: bool = False, num_cpus: int | None = None,
                  progress: bool = True, cpus: float | None = None) -> dict[str, Any]:
    """metrics.json for `model` on `pool` (or its `task_ids`); resumable like scoring;
    `cpus`: this call's share of the cluster's CPUs (default: all)."""
    start = time.perf_counter()
    check_model_path(model)
    prompt_template(model, cfg.prompt.template, cfg.prompt.chat_body, trust_remote_code)  # a chat template: usable?
    detect_format(pool)
    run = "eval-" + run_id(cfg, model, pool, details is not None, tasks=list(task_ids or []))
    parts_dir = Path(f"{out}.parts") / run
    source = subset_pool(pool, task_ids, parts_dir / "tasks.parquet") if task_ids else pool
    mapped = map_pool("evaluate", source, parts_dir, model, cfg, actors=actors, gpus_per_actor=gpus_per_actor,
                      details=details is not None, trust_remote_code=trust_remote_code, num_cpus=num_cpus,
                      progress=progress, detail_schema=DETAIL_SCHEMA,
                      verb="evaluating", cpus=cpus)
    table, chosen = Parts(parts_dir).merge(mapped.order, "evaluated")
    tasks = table.to_pylist()
    metrics = {"model": model, "pool": pool, "run": run, "n_tasks": len(tasks), **aggregate(tasks),
               "tokens": total(r.get("tokens") for r in tasks),  # None for parts written before counts
               "flops": total(r.get("flops") for r in tasks),
               "per_task": [{k: r.get(k) for k in PER_TASK} for r in tasks],
               "config": to_dict(cfg), "seconds": round(time.perf_counter() - start, 1)}
    write_json(out, metrics)
    if details:
        write_parquet(details, Parts(parts_dir).merged_details(chosen, DETAIL_SCHEMA))
    return metrics


def render_metrics(m: dict[str, Any]) -> str:
    def f(v):
        return "   -  " if v is None else f"{v:6.2f}"

    lines = [f"{'':<16} {'NLL/tok':>7} {'label acc':>9} {'Rouge-L':>7} {'exact':>7} {'instances':>9} {'answered':>8}"]
    for k in ("overall", "classification", "generative"):
        lines.append(f"{k:<16} {f(m['nll'][k]):>7} {f(m['label_accuracy'][k]):>9} {f(m['rougeL'][k]):>7} "
                     f"{f(m['exact_match'][k]):>7} {m['n_instances'][k]:>9} {m['n_answered'][k]:>8}")
    tokens = "" if m.get("tokens") is None else f", {m['tokens']:,} tokens processed"
    tokens += "" if m.get("flops") is None else f", {m['flops']:.3g} FLOPs"
    return "\n".join(lines) + f"\n({m['n_tasks']} tasks, model {m['model']}{tokens})"
