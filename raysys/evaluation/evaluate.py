"""Evaluate a model on a pool's tasks: batched greedy answers on the scoring actor pool,
Rouge-L and exact match per instance, aggregated per task and overall.

`Evaluator` is the per-actor worker (raysys.scoring.pipeline.ScoreBatch builds it): it
samples instances and writes prompts as scoring does (raysys.scoring.items) and uses the
scorer's ModelRunner (prompt fitting: fewer demonstrations for long prompts, then the last
tokens; batched greedy generation), so answers are those `raysys score` takes as the
model's own. `evaluate_pool` runs it over the pool (or the given task ids) with the
same resumable part files as scoring and writes metrics.json atomically. Each task's row
counts the tokens its evaluation processed (`tokens`: its prompts, fitted and cut as
generation reads them, plus every generated token, end of sequence included) and their
FLOPs (`flops`, raysys.costs); metrics.json has both totals.
"""
from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa

from raysys.config import EvalConfig, to_dict
from raysys.costs import forward_flops, total
from raysys.evaluation.metrics import aggregate, exact_match, rouge_l
from raysys.io import write_json, write_parquet
from raysys.models import check_model_path, count_parameters, prompt_template
from raysys.prompts import template_for
from raysys.runs import Parts, subset_pool
from raysys.schema import Task

DETAIL_SCHEMA = pa.schema([("task_id", pa.string()), ("instance_id", pa.string()), ("prompt", pa.string()),
                           ("prediction", pa.string()), ("references", pa.list_(pa.string())),
                           ("rougeL", pa.float64()), ("exact_match", pa.float64())])


class Evaluator:
    def __init__(self, model: str, cfg: EvalConfig, *, trust_remote_code: bool = False, loaded=None,
                 device: str | None = None):
        from raysys.scoring.runner import ModelRunner  # torch: only where a model is loaded

        self.cfg = cfg
        self.runner = ModelRunner(model, cfg.generation, trust_remote_code=trust_remote_code, loaded=loaded,
                                  device=device)
        lm = self.runner.lm
        self.parameters = count_parameters(lm.model)
        self.template = template_for(cfg.prompt.template, cfg.prompt.chat_body, lm.tokenizer, lm.name)

    def process(self, tasks: Sequence[Task], details: bool = False):
        from raysys.scoring.items import TaskPrompts, sample_instances

        cfg = self.cfg
        work = []  # (task index, instance, fitted prompt), every task's instances in turn
        for ti, t in enumerate(tasks):
            prompts = TaskPrompts.original(t, self.template)
            for inst in sample_instances(t, cfg.instances, cfg.seed):
                work.append((ti, inst, self.runner.fit_prompt(partial(prompts.text, 0, inst),
                                                              cfg.prompt.demonstrations)))
        answers, spent = self.runner.generate_counted([fit.ids for _, _, fit in work])  # one pass for all tasks
        scored: list[list[tuple[float, float]]] = [[] for _ in tasks]
        tokens = [0] * len(tasks)
        detail_rows = []
        for (ti, inst, fit), pred, n in zip(work, answers, spent, strict=True):
            r, e = rouge_l(pred, inst.outputs), exact_match(pred, inst.outputs)
            scored[ti].append((r, e))
            tokens[ti] += n
            if details:
                detail_rows.append({"task_id": tasks[ti].task_id, "instance_id": inst.id, "prompt": fit.text,
                                    "prediction": pred, "references": list(inst.outputs), "rougeL": r,
                                    "exact_match": e})
        rows = []
        for t, pairs, n in zip(tasks, scored, tokens, strict=True):
            r_sum, e_sum = sum(r for r, _ in pairs), sum(e for _, e in pairs)
            rows.append({"task_id": t.task_id, "is_classification": t.is_classification, "n_instances": len(pairs),
                         "rougeL_sum": r_sum, "exact_match_sum": e_sum, "rougeL": r_sum / len(pairs),
                         "exact_match": e_sum / len(pairs), "tokens": n,
                         "flops": forward_flops(n, self.parameters)})
        return rows, detail_rows


def evaluate_pool(pool: str, model: str, out: str, cfg: EvalConfig = EvalConfig(), *,
                  task_ids: Sequence[str] | None = None, actors: int = 1, gpus_per_actor: float | None = None,
                  details: str | None = None, trust_remote_code: bool = False, num_cpus: int | None = None,
                  progress: bool = True, cpus: float | None = None) -> dict[str, Any]:
    """metrics.json for `model` on `pool` (or its `task_ids`); resumable like scoring;
    `cpus`: this call's share of the cluster's CPUs (default: all)."""
    from raysys.pools import detect_format
    from raysys.scoring.pipeline import map_pool, run_id

    start = time.perf_counter()
    check_model_path(model)
    prompt_template(model, cfg.prompt.template, cfg.prompt.chat_body, trust_remote_code)  # a chat template: usable?
    detect_format(pool)
    run = "eval-" + run_id(cfg, model, pool, details is not None, tasks=list(task_ids or []))
    parts_dir = Path(f"{out}.parts") / run
    source = subset_pool(pool, task_ids, parts_dir / "tasks.parquet") if task_ids else pool
    mapped = map_pool(source, parts_dir, model, cfg, actors=actors, gpus_per_actor=gpus_per_actor,
                      details=details is not None, trust_remote_code=trust_remote_code, num_cpus=num_cpus,
                      progress=progress, make="raysys.evaluation.evaluate:Evaluator", detail_schema=DETAIL_SCHEMA,
                      verb="evaluating", cpus=cpus)
    table, chosen = Parts(parts_dir).merge(mapped.order, "evaluated")
    tasks = table.to_pylist()
    metrics = {"model": model, "pool": pool, "run": run, "n_tasks": len(tasks), **aggregate(tasks),
               "tokens": total(r.get("tokens") for r in tasks),  # None for parts written before counts
               "flops": total(r.get("flops") for r in tasks),
               "per_task": [{k: r.get(k) for k in ("task_id", "is_classification", "n_instances", "rougeL",
                                                   "exact_match", "tokens", "flops")} for r in tasks],
               "config": to_dict(cfg), "seconds": round(time.perf_counter() - start, 1)}
    write_json(out, metrics)
    if details:
        write_parquet(details, Parts(parts_dir).merged_details(chosen, DETAIL_SCHEMA))
    return metrics


def render_metrics(m: dict[str, Any]) -> str:
    def f(v):
        return "   -  " if v is None else f"{v:6.2f}"

    lines = [f"{'':<16} {'Rouge-L':>7} {'exact':>7} {'instances':>9}"]
    for k in ("overall", "classification", "generative"):
        lines.append(f"{k:<16} {f(m['rougeL'][k]):>7} {f(m['exact_match'][k]):>7} {m['n_instances'][k]:>9}")
    tokens = "" if m.get("tokens") is None else f", {m['tokens']:,} tokens processed"
    tokens += "" if m.get("flops") is None else f", {m['flops']:.3g} FLOPs"
    return "\n".join(lines) + f"\n({m['n_tasks']} tasks, model {m['model']}{tokens})"
