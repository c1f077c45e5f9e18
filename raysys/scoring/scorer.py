"""The per-actor task scorer: loads a model once and scores batches of tasks with it.

The items a batch is scored on and the aggregation of their scores are pure
(raysys.scoring.items); this is the part that runs the model: each instance's original
prompt is fitted to the model's length and answered greedily (raysys.models.runner),
then every item is scored by the batched engine (raysys.scoring.likelihood), but the
original prompt's p_i0, which the decode already computed (decode_p0: where the answer
re-encodes to the decoded tokens and the forwards use the decoding weights). Knows
nothing of Ray: the actor pool (raysys.actors, worker "score") calls `process` on each actor.

Each task's row counts the tokens its scoring processed (`tokens`): the greedy answers'
prompts and generated tokens, and every item's prompt and target tokens, as a plain
one-sequence-at-a-time loop reads them (the engine computes fewer: shared prefixes are
encoded once, duplicate items scored once); and their FLOPs (`flops`, raysys.costs). It
also holds the task's RDS+ embedding (`rds_embedding`, raysys.models.pooling), taken from the
prefill of the greedy decode, and its answers (`answers`). With `answers_from`, the answers
of another scoring are scored instead of decoded (raysys.scoring.answers).
"""
from __future__ import annotations

from functools import partial
from typing import Any, Sequence

import numpy as np

from raysys.config import ScoringConfig
from raysys.costs import forward_flops
from raysys.models import LoadedModel, prompt_ids
from raysys.models.pooling import task_means
from raysys.models.runner import in_dtype, worker_setup
from raysys.schema import Task
from raysys.scoring.answers import given_answers, read_answers
from raysys.scoring.items import Batch, TaskPlan, build_items, detail_rows, plan_task, task_rows, tokens
from raysys.scoring.likelihood import Budget, make_scorer, target_ids


class TaskScorer:
    def __init__(self, model_path: str, cfg: ScoringConfig, *, device: str | None = None,
                 trust_remote_code: bool = False, loaded: LoadedModel | None = None):
        self.cfg = cfg
        self.runner, self.parameters, self.template = worker_setup(
            model_path, cfg.generation, cfg.prompt, device=device, trust_remote_code=trust_remote_code, loaded=loaded,
            dtype=cfg.dtype)
        lm = self.runner.lm
        # the greedy answers come from the weights in cfg.dtype; the forwards that score them
        # may run in another (forward_dtype: float32 answers, bfloat16 forwards)
        forward = in_dtype(lm.model, cfg.forward_dtype)
        self.engine = make_scorer(forward, lm.tokenizer, lm.kind, Budget(tokens=cfg.token_budget),
                                  self.runner.max_prompt)
        # p_i0 from the decode's own logits when the forwards run on the weights that decode
        self.decode_p0 = cfg.decode_p0 and forward is lm.model and lm.kind != "seq2seq"
        # IFD scores y with no prompt at all, but the engine needs >= 1 prompt token: a
        # tokenizer that adds no BOS to "" gets its BOS (or EOS) text instead
        alone = lm.tokenizer("").input_ids
        self.alone_prompt = "" if alone else (lm.tokenizer.bos_token or lm.tokenizer.eos_token)
        self.fixed = read_answers(cfg.answers_from) if cfg.answers_from else None  # answers to score, not decode

    def process(self, tasks: Sequence[Task], details: bool = False):
        """The pipeline's worker interface (raysys.actors.Worker)."""
        return self.score(tasks, details)

    def items(self, plans: Sequence[TaskPlan], answers: Sequence[str] | None = None) -> Batch:
        """The items of `plans`: each instance's original prompt fitted to the model (its
        perturbed prompts show as many demonstrations; a prompt too long even without any
        is scored on its last tokens and counted as truncated), with the model's greedy
        answers as targets, or `answers` (one per instance, in plan order) when given."""
        return self._items(plans, answers)[0]

    def _items(self, plans: Sequence[TaskPlan], answers: Sequence[str] | None = None,
               columns: Sequence[int] | None = None) -> tuple[Batch, list[int], list | None, dict[int, float]]:
        """The batch, per instance the tokens its greedy answer cost (0 when `answers` are
        given), per task its RDS+ embedding from the decode's prefill (None when `answers`
        are given: nothing was decoded), and the items the decode already scored (item
        index -> mean log-prob; see _decoded_p0)."""
        fits = self.fits(plans)
        spent, embedded, decoded = [0] * len(fits), None, None
        if answers is None:
            answers, spent, vectors, decoded = self.runner.generate_scored([f.ids for f in fits],
                                                                           scored=self.decode_p0)
            embedded = task_means(vectors, [len(plan.instances) for plan in plans])
        batch = build_items(plans, fits, answers, self.alone_prompt if self.cfg.ifd else None, columns)
        return batch, spent, embedded, self._decoded_p0(batch, decoded) if self.decode_p0 and decoded else {}

    def _decoded_p0(self, batch: Batch, decoded: Sequence) -> dict[int, float]:
        """Item index -> the decode's mean log-prob (raysys.models.runner.Recorder) for each
        j = 0 item whose target tokenizes to exactly the tokens the decode scored, its
        answer and EOS: the same sequence the engine would score. `decoded`: one entry per
        sampled instance, task after task (None where the decode could not score it)."""
        known, n = {}, 0
        targets = target_ids(self.runner.lm.tokenizer, [y for t in batch.tasks for y in t.answers])
        for t in batch.tasks:
            c = t.columns.index(0) if 0 in t.columns else None
            for r in range(len(t.answers)):
                got = decoded[n]
                if c is not None and got is not None and got[0] == targets[n]:
                    known[int(t.perturbed[r, c])] = got[1]
                n += 1
        return known

    def item_tokens(self, batch: Batch) -> list[int]:
        """Per item, the tokens a forward pass over it reads: its prompt's (cut to the
        engine's limit, as the engine cuts it) and its target's, end of sequence included."""
        tok, limit = self.runner.lm.tokenizer, self.runner.max_prompt
        return [len(p) + len(t) for p, t in zip(prompt_ids(tok, batch.items.prompts, limit),
                                                 target_ids(tok, batch.items.targets))]

    def fits(self, plans: Sequence[TaskPlan]) -> list:
        """Each sampled instance's original prompt fitted to the model, task after task."""
        return [self.runner.fit_prompt(partial(plan.prompts.text, 0, inst), self.cfg.prompt.demonstrations)
                for plan in plans for inst in plan.instances]

    def embed(self, tasks: Sequence[Task]) -> list[list[float]]:
        """Each task's RDS+ embedding as `score` stores it, by forward passes alone (target
        tasks of the rds strategy)."""
        plans = [plan_task(t, self.cfg, self.template) for t in tasks]
        fits = self.fits(plans)
        return task_means(self.runner.embed_prompts([f.ids for f in fits]), [len(p.instances) for p in plans])

    def score(self, tasks: Sequence[Task], details: bool = False, *, columns: Sequence[int] | None = None,
              answers: Sequence[str] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """One score row per task (items.SCORE_COLUMNS) and, if asked, one detail row per
        scored prompt (items.DETAIL_COLUMNS). A racing round (raysys.scoring.race_rounds) asks for
        some perturbations j only (`columns`) and may give the greedy answers found before
        (`answers`, one per sampled instance, task after task); without j = 0 a task's row
        holds its task_id and tokens only."""
        plans = [plan_task(t, self.cfg, self.template) for t in tasks]
        if answers is None and self.fixed is not None:
            answers = given_answers(self.fixed, tasks, [[i.id for i in p.instances] for p in plans],
                                    self.cfg.answers_from)
        batch, spent, embedded, known = self._items(plans, answers, columns)
        its, logp = batch.items, np.empty(len(batch.items))
        # the decode scored some j = 0 items; an item with the same prompt and target (a
        # perturbation that changed nothing) takes the same number, as the engine's own
        # duplicates do; the engine scores the rest
        same = {(its.prompts[i], its.targets[i]): v for i, v in known.items()}
        rest = []
        for i in range(len(its)):
            v = same.get((its.prompts[i], its.targets[i]))
            if v is None:
                rest.append(i)
            else:
                logp[i] = v
        if rest:
            logp[rest] = self.engine.score([its.prompts[i] for i in rest], [its.targets[i] for i in rest],
                                           [its.groups[i] for i in rest])
        counts = tokens(batch, self.item_tokens(batch), spent)
        if columns is not None and 0 not in columns:
            rows = [{"task_id": t.plan.task.task_id, "tokens": n, "flops": forward_flops(n, self.parameters)}
                    for t, n in zip(batch.tasks, counts)]
        else:
            rows = task_rows(batch, logp, counts, self.parameters, embedded)
        return rows, detail_rows(batch, logp) if details else []
