"""The evaluation worker: batched greedy answers of one model to a batch of tasks, Rouge-L
and exact match per instance, aggregated per task. No Ray: the actor pool
(raysys.actors, worker "evaluate") builds it once per actor, and the loop's in-process
stages call it directly.

It samples instances and writes prompts as scoring does (raysys.scoring.items) and uses
the model runner (raysys.models.runner: prompt fitting, then batched greedy generation),
so answers are those `raysys score` takes as the model's own. Each task's row counts the
tokens its evaluation processed (`tokens`: its prompts, fitted and cut as generation reads
them, plus every generated token, end of sequence included) and their FLOPs (`flops`,
raysys.costs).
"""
from __future__ import annotations

from functools import partial
from typing import Sequence

import pyarrow as pa

from raysys.config import EvalConfig
from raysys.costs import forward_flops
from raysys.evaluation.metrics import exact_match, rouge_l
from raysys.schema import Task

DETAIL_SCHEMA = pa.schema([("task_id", pa.string()), ("instance_id", pa.string()), ("prompt", pa.string()),
                           ("prediction", pa.string()), ("references", pa.list_(pa.string())),
                           ("rougeL", pa.float64()), ("exact_match", pa.float64())])


class Evaluator:
    def __init__(self, model: str, cfg: EvalConfig, *, trust_remote_code: bool = False, loaded=None,
                 device: str | None = None):
        from raysys.models.runner import worker_setup  # torch: only where a model is loaded

        self.cfg = cfg
        self.runner, self.parameters, self.template = worker_setup(
            model, cfg.generation, cfg.prompt, device=device, trust_remote_code=trust_remote_code, loaded=loaded)

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
