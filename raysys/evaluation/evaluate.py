"""Evaluate a model on a pool's tasks: batched greedy answers on the scoring actor pool,
Rouge-L and exact match per instance, aggregated per task and overall.

`Evaluator` is the per-actor worker (raysys.scoring.pipeline.ScoreBatch builds it): it
reuses the TaskScorer's prompt fitting (fewer demonstrations for long prompts, then the
last tokens) and its batched generation, so answers are those `raysys score` takes as
the model's own. `evaluate_pool` runs it over the pool (or the given task ids) with the
same resumable part files as scoring and writes metrics.json atomically.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from raysys.config import EvalConfig, to_dict
from raysys.errors import RaysysError
from raysys.evaluation.metrics import aggregate, exact_match, rouge_l
from raysys.io import atomic_path, write_json
from raysys.models import check_model_path
from raysys.prompts import format_prompt
from raysys.schema import Task

DETAIL_SCHEMA = pa.schema([("task_id", pa.string()), ("instance_id", pa.string()), ("prompt", pa.string()),
                           ("prediction", pa.string()), ("references", pa.list_(pa.string())),
                           ("rougeL", pa.float64()), ("exact_match", pa.float64())])


class Evaluator:
    def __init__(self, model: str, cfg: EvalConfig, *, trust_remote_code: bool = False, loaded=None,
                 device: str | None = None):
        from raysys.scoring.scorer import TaskScorer

        self.cfg = cfg
        self.scorer = TaskScorer(model, cfg.scoring(), trust_remote_code=trust_remote_code, loaded=loaded,
                                 device=device)

    def process(self, tasks: Sequence[Task], details: bool = False):
        from raysys.scoring.scorer import sample_instances

        cfg, sc = self.cfg, self.scorer
        sampled = [sample_instances(t, cfg.instances, cfg.seed) for t in tasks]
        fitted = [sc._fit(lambda n, t=t, inst=inst: format_prompt(cfg.template, t.instruction, inst.input,
                                                                   t.demonstrations, n))
                  for t, insts in zip(tasks, sampled) for inst in insts]
        answers = iter(sc._generate_ids([ids[-sc.max_prompt:] for _, _, ids in fitted]))
        prompts = iter(text for _, text, _ in fitted)
        rows, detail_rows = [], []
        for t, insts in zip(tasks, sampled):
            r_sum = e_sum = 0.0
            for inst in insts:
                pred, prompt = next(answers), next(prompts)
                r, e = rouge_l(pred, inst.outputs), exact_match(pred, inst.outputs)
                r_sum, e_sum = r_sum + r, e_sum + e
                if details:
                    detail_rows.append({"task_id": t.task_id, "instance_id": inst.id, "prompt": prompt,
                                        "prediction": pred, "references": list(inst.outputs), "rougeL": r,
                                        "exact_match": e})
            rows.append({"task_id": t.task_id, "is_classification": t.is_classification, "n_instances": len(insts),
                         "rougeL_sum": r_sum, "exact_match_sum": e_sum, "rougeL": r_sum / len(insts),
                         "exact_match": e_sum / len(insts)})
        return rows, detail_rows


def _subset_pool(pool: str, task_ids: Sequence[str], run_dir: Path) -> str:
    from raysys.pools import load_pool, write_parquet_tasks

    path = run_dir / "tasks.parquet"
    if not path.exists():
        tasks = {t.task_id: t for t in load_pool(pool).tasks}
        missing = [t for t in task_ids if t not in tasks]
        if missing:
            raise RaysysError(f"{len(missing)} task(s) to evaluate are not in {pool} (e.g. {missing[0]!r})")
        run_dir.mkdir(parents=True, exist_ok=True)
        write_parquet_tasks([tasks[t] for t in dict.fromkeys(task_ids)], path)
    return str(path)


def evaluate_pool(pool: str, model: str, out: str, cfg: EvalConfig = EvalConfig(), *,
                  task_ids: Sequence[str] | None = None, actors: int = 1, gpus_per_actor: float | None = None,
                  details: str | None = None, trust_remote_code: bool = False, num_cpus: int | None = None,
                  progress: bool = True, cpus: float | None = None) -> dict[str, Any]:
    """metrics.json for `model` on `pool` (or its `task_ids`); resumable like scoring;
    `cpus`: this call's share of the cluster's CPUs (default: all)."""
    from raysys.pools import detect_format
    from raysys.scoring.pipeline import map_pool, pool_fingerprint

    start = time.perf_counter()
    check_model_path(model)
    detect_format(pool)
    blob = {"cfg": to_dict(cfg), "model": os.path.abspath(model) if os.path.exists(model) else model,
            "pool": os.path.abspath(pool), "files": pool_fingerprint(pool), "tasks": list(task_ids or []),
            "details": details is not None}
    run = "eval-" + hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]
    parts_dir = Path(f"{out}.parts") / run
    source = _subset_pool(pool, task_ids, parts_dir) if task_ids else pool
    mapped = map_pool(source, parts_dir, model, cfg, actors=actors, gpus_per_actor=gpus_per_actor,
                      details=details is not None, trust_remote_code=trust_remote_code, num_cpus=num_cpus,
                      progress=progress, make="raysys.evaluation.evaluate:Evaluator", detail_schema=DETAIL_SCHEMA,
                      verb="evaluating", cpus=cpus)
    rank = {t: i for i, t in enumerate(mapped.order)}
    per_task: dict[str, dict] = {}
    for part in sorted(parts_dir.glob("scores-*.parquet")):
        for row in pq.read_table(part).to_pylist():
            if row["task_id"] in rank:
                per_task.setdefault(row["task_id"], row)  # the first part wins (a retried batch may repeat)
    missing = [t for t in mapped.order if t not in per_task]
    if missing:
        raise RaysysError(f"{len(missing)} task(s) were not evaluated (e.g. {missing[0]}); rerun to finish them")
    tasks = [per_task[t] for t in mapped.order]
    metrics = {"model": model, "pool": pool, "run": run, "n_tasks": len(tasks), **aggregate(tasks),
               "per_task": [{k: r[k] for k in ("task_id", "is_classification", "n_instances", "rougeL",
                                               "exact_match")} for r in tasks],
               "config": to_dict(cfg), "seconds": round(time.perf_counter() - start, 1)}
    write_json(out, metrics)
    if details:
        parts = [pq.read_table(p) for p in sorted(parts_dir.glob("details-*.parquet"))]
        table = pa.concat_tables(parts) if parts else DETAIL_SCHEMA.empty_table()
        seen: set[tuple[str, str]] = set()
        mask = []
        for tid, iid in zip(table.column("task_id").to_pylist(), table.column("instance_id").to_pylist()):
            mask.append(tid in rank and (tid, iid) not in seen)
            seen.add((tid, iid))
        with atomic_path(details) as tmp:
            pq.write_table(table.filter(pa.array(mask, type=pa.bool_())), tmp)
    return metrics


def render_metrics(m: dict[str, Any]) -> str:
    def f(v):
        return "   -  " if v is None else f"{v:6.2f}"

    lines = [f"{'':<16} {'Rouge-L':>7} {'exact':>7} {'instances':>9}"]
    for k in ("overall", "classification", "generative"):
        lines.append(f"{k:<16} {f(m['rougeL'][k]):>7} {f(m['exact_match'][k]):>7} {m['n_instances'][k]:>9}")
    return "\n".join(lines) + f"\n({m['n_tasks']} tasks, model {m['model']})"
