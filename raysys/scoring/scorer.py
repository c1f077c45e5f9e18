"""The per-actor task scorer: loads a model once and scores batches of tasks with it.

The items a batch is scored on and the aggregation of their scores are pure
(raysys.scoring.items); this is the part that runs the model: each instance's original
prompt is fitted to the model's length and answered greedily (raysys.scoring.runner),
then every item is scored by the batched engine (raysys.scoring.likelihood). Knows
nothing of Ray: raysys.scoring.pipeline's ScoreBatch calls `process` on each actor.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Sequence

from raysys.config import ScoringConfig
from raysys.models import LoadedModel
from raysys.prompts import template_for
from raysys.schema import Task
from raysys.scoring.items import Batch, TaskPlan, build_items, detail_rows, plan_task, task_rows
from raysys.scoring.likelihood import Budget, make_scorer
from raysys.scoring.runner import ModelRunner


class TaskScorer:
    def __init__(self, model_path: str, cfg: ScoringConfig, *, device: str | None = None,
                 trust_remote_code: bool = False, loaded: LoadedModel | None = None):
        self.cfg = cfg
        self.runner = ModelRunner(model_path, cfg.generation, device=device, trust_remote_code=trust_remote_code,
                                  loaded=loaded)
        lm = self.runner.lm
        self.template = template_for(cfg.prompt.template, cfg.prompt.chat_body, lm.tokenizer, lm.name)
        self.engine = make_scorer(lm.model, lm.tokenizer, lm.kind, Budget(tokens=cfg.token_budget),
                                  self.runner.max_prompt)
        # IFD scores y with no prompt at all, but the engine needs >= 1 prompt token: a
        # tokenizer that adds no BOS to "" gets its BOS (or EOS) text instead
        alone = lm.tokenizer("").input_ids
        self.alone_prompt = "" if alone else (lm.tokenizer.bos_token or lm.tokenizer.eos_token)

    def process(self, tasks: Sequence[Task], details: bool = False):
        """The pipeline's worker interface (raysys.scoring.pipeline.ScoreBatch)."""
        return self.score(tasks, details)

    def items(self, plans: Sequence[TaskPlan], answers: Sequence[str] | None = None) -> Batch:
        """The items of `plans`: each instance's original prompt fitted to the model (its
        perturbed prompts show as many demonstrations; a prompt too long even without any
        is scored on its last tokens and counted as truncated), with the model's greedy
        answers as targets, or `answers` (one per instance, in plan order) when given."""
        fits = [self.runner.fit_prompt(partial(plan.prompts.text, 0, inst), self.cfg.prompt.demonstrations)
                for plan in plans for inst in plan.instances]
        if answers is None:
            answers = self.runner.generate_ids([f.ids for f in fits])
        return build_items(plans, fits, answers, self.alone_prompt if self.cfg.ifd else None)

    def score(self, tasks: Sequence[Task], details: bool = False) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """One score row per task (items.SCORE_COLUMNS) and, if asked, one detail row per
        scored prompt (items.DETAIL_COLUMNS)."""
        batch = self.items([plan_task(t, self.cfg, self.template) for t in tasks])
        logp = self.engine.score(batch.items.prompts, batch.items.targets, batch.items.groups)
        return task_rows(batch, logp), (detail_rows(batch, logp) if details else [])
