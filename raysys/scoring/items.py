"""The pure half of prompt-uncertainty scoring: what a batch of tasks is scored on, and
how the scores of those items become task rows. No model, no torch, no Ray.

For each task (plan_task): n instances sampled deterministically from (seed, task_id)
(sample_instances); the k perturbed instructions built once and shared by its instances
(raysys.perturb), j = 0 being the original (a conversation task: each instance's last user
turn perturbed k times); its label set when classification entropy is
scored (label_set). The model's half (raysys.scoring.scorer) then fits each instance's
original prompt to the model's length, which fixes how many demonstrations all k + 1 of
that instance's prompts show (FittedPrompt), and answers it greedily (y_i).

build_items lays out the flat item list (prompt, target, group) the engine scores:

- per task and j = 0..k, one group holding its n items (prompt_j(instance_i), y_i): the
  members of a group share the prompt prefix (definition and demonstrations), which the
  engine encodes once;
- right after each j = 0 item, one item per label (the same prompt, the label as target),
  in the same group;
- with IFD, one group per instance holding (alone prompt, y_i).

TaskItems keeps each task's indices into that list, so task_rows (SCORE_COLUMNS, through
raysys.scoring.signals) and detail_rows (DETAIL_COLUMNS) read the engine's mean log-probs
(one per item) without re-deriving the layout.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from raysys.config import ScoringConfig
from raysys.costs import forward_flops
from raysys.perturb import perturb_prompt_parts, perturb_turns, rng_for
from raysys.prompts import FittedPrompt, Template
from raysys.schema import Demonstration, Instance, Message, Task, prompt_turns
from raysys.scoring import signals
from raysys.scoring.answers import column as answer_column

SCORE_COLUMNS = ("task_id", "prompt_uncertainty", "prediction_probability", "perplexity", "classification_entropy",
                 "ifd", "n_instances", "n_instances_total", "n_perturbations", "n_labels", "n_truncated",
                 "is_classification", "mean_answer_chars", "tokens", "flops", "rds_embedding", "answers")
DETAIL_COLUMNS = ("task_id", "instance_id", "perturbation", "prompt", "target", "p")


def sample_instances(task: Task, n: int, seed: int) -> list[Instance]:
    """n instances drawn without replacement (all when fewer), in file order."""
    if len(task.instances) <= n:
        return list(task.instances)
    rng: random.Random = rng_for(seed, task.task_id, 0)
    return [task.instances[i] for i in sorted(rng.sample(range(len(task.instances)), n))]


def label_set(task: Task, max_labels: int) -> list[str]:
    """The distinct reference outputs of a classification task (first spelling kept), or []
    when the task is not classification or has fewer than 2 or more than max_labels."""
    if task.is_classification is not True:
        return []
    seen: dict[str, str] = {}
    for inst in task.instances:
        for o in inst.outputs:
            seen.setdefault(" ".join(o.lower().split()), o.strip())
    labels = list(seen.values())
    return labels if 2 <= len(labels) <= max_labels else []


@dataclass(frozen=True)
class TaskPrompts:
    """A task's prompt variants in one template: parts[0] is its (definition,
    demonstrations), parts[j] the j-th perturbation of them; a conversation task's are its
    instances' own (`turns`: instance id -> the turns of j = 0..k, raysys.perturb.perturb_turns)."""

    template: Template  # resolved for the model (a chat template carries its frame)
    parts: tuple[tuple[str, tuple[Demonstration, ...]], ...]
    turns: Mapping[str, tuple[tuple[Message, ...], ...]] | None = None

    @classmethod
    def original(cls, task: Task, template: Template) -> TaskPrompts:
        """The unperturbed prompt only (evaluation, training)."""
        return cls(template, ((task.instruction, tuple(task.demonstrations)),),
                   {i.id: (prompt_turns(i),) for i in task.instances} if task.conversation else None)

    def text(self, j: int, inst: Instance, n_demos: int) -> str:
        """The prompt of variant j for `inst`, showing at most n_demos demonstrations."""
        if self.turns is not None:
            return self.template.conversation(self.turns[inst.id][j])
        definition, demos = self.parts[j]
        return self.template.text(definition, inst.input, demos, n_demos)


@dataclass(frozen=True)
class TaskPlan:
    """What a task is scored on, fixed before any model runs."""

    task: Task
    instances: tuple[Instance, ...]  # the sampled instances, in file order
    prompts: TaskPrompts  # j = 0..k
    labels: tuple[str, ...]  # candidate labels for classification entropy; () = not scored


def plan_task(task: Task, cfg: ScoringConfig, template: Template | None = None) -> TaskPlan:
    """`template`: cfg.prompt's resolved for the model (needed for chat; a text template by
    default)."""
    parts = perturb_prompt_parts(task.task_id, task.instruction, task.demonstrations, cfg.perturbations,
                                 kind=cfg.perturbation, rate=cfg.drop_rate, seed=cfg.seed,
                                 demonstration_inputs=cfg.perturb_demonstrations, mask_token=cfg.mask_token)
    insts = tuple(sample_instances(task, cfg.instances, cfg.seed))
    turns = {i.id: perturb_turns(task.task_id, i, cfg.perturbations, kind=cfg.perturbation, rate=cfg.drop_rate,
                                 seed=cfg.seed, system=cfg.perturb_system, mask_token=cfg.mask_token)
             for i in insts} if task.conversation else None
    return TaskPlan(task, insts, TaskPrompts(template or Template(cfg.prompt.template), tuple(parts), turns),
                    tuple(label_set(task, cfg.max_labels)) if cfg.entropy else ())


@dataclass(frozen=True)
class ItemList:
    """The flat items the engine scores: mean log p(target | prompt), per item; items of
    one group may share a prompt prefix."""

    prompts: tuple[str, ...]
    targets: tuple[str, ...]
    groups: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.prompts)


@dataclass(frozen=True, eq=False)  # eq=False: numpy fields do not compare to a bool
class TaskItems:
    """One task's place in a batch's ItemList (all arrays hold int64 item indices)."""

    plan: TaskPlan
    n_demos: tuple[int, ...]  # demonstrations shown in each instance's prompts
    answers: tuple[str, ...]  # y_i, the target of every item of instance i but its labels
    truncated: int  # instances whose original prompt is longer than the model's limit
    perturbed: np.ndarray  # (n, len(columns)): (prompt_j(instance_i), y_i) for j = columns[c]
    label_items: np.ndarray  # (n, c): (prompt_0(instance_i), label_c); (n, 0) without j = 0
    alone: np.ndarray | None  # (n,): (alone prompt, y_i) for IFD; None when IFD is off or j = 0 is not laid out
    columns: tuple[int, ...]  # the j of each column of `perturbed`: 0..k unless a racing round asked for fewer

    @property
    def perturbations(self) -> int:
        return self.perturbed.shape[1] - 1


@dataclass(frozen=True)
class Batch:
    items: ItemList
    tasks: tuple[TaskItems, ...]


class _Appender:
    """Builds the three parallel lists of an ItemList in one place."""

    def __init__(self) -> None:
        self.prompts: list[str] = []
        self.targets: list[str] = []
        self.groups: list[int] = []

    def add(self, prompt: str, target: str, group: int) -> int:
        self.prompts.append(prompt)
        self.targets.append(target)
        self.groups.append(group)
        return len(self.prompts) - 1

    def freeze(self) -> ItemList:
        return ItemList(tuple(self.prompts), tuple(self.targets), tuple(self.groups))


def build_items(plans: Sequence[TaskPlan], fits: Sequence[FittedPrompt], answers: Sequence[str],
                alone_prompt: str | None, columns: Sequence[int] | None = None) -> Batch:
    """The items of a batch of tasks (see the module docstring). `fits` and `answers` hold
    one entry per sampled instance, task after task in plan order; `alone_prompt`: the
    prompt y_i is scored alone under for IFD (None: no IFD items). `columns`: the
    perturbations j laid out (default all, 0..k; a racing round asks for some); the label
    and IFD items come with j = 0."""
    n_all = sum(len(p.instances) for p in plans)
    if len(fits) != n_all or len(answers) != n_all:
        raise ValueError(f"{n_all} instances but {len(fits)} fitted prompts and {len(answers)} answers")
    out, tasks, group, start = _Appender(), [], 0, 0
    for plan in plans:
        n = len(plan.instances)
        cols = tuple(range(len(plan.prompts.parts)) if columns is None else columns)
        fit, ys = fits[start: start + n], tuple(answers[start: start + n])
        start += n
        pert = np.empty((n, len(cols)), dtype=np.int64)
        lab = np.empty((n, len(plan.labels) if 0 in cols else 0), dtype=np.int64)
        for c_j, j in enumerate(cols):
            for r, inst in enumerate(plan.instances):
                pert[r, c_j] = out.add(plan.prompts.text(j, inst, fit[r].n_demos), ys[r], group)
                if j == 0:  # the same prompt, so the label items share the group's prefix
                    for c, label in enumerate(plan.labels):
                        lab[r, c] = out.add(out.prompts[pert[r, c_j]], label, group)
            group += 1
        alone = None
        if alone_prompt is not None and 0 in cols:
            alone = np.empty(n, dtype=np.int64)
            for r in range(n):  # one group each: nothing to share
                alone[r] = out.add(alone_prompt, ys[r], group)
                group += 1
        tasks.append(TaskItems(plan, tuple(f.n_demos for f in fit), ys, sum(f.truncated for f in fit), pert, lab,
                               alone, cols))
    return Batch(out.freeze(), tuple(tasks))


def _check(batch: Batch, logp: np.ndarray) -> None:
    if len(logp) != len(batch.items):
        raise ValueError(f"{len(logp)} log-probabilities for {len(batch.items)} items")


def tokens(batch: Batch, per_item: Sequence[int], per_instance: Sequence[int]) -> list[int]:
    """Per task, the tokens of all its items plus those its instances' greedy answers cost
    (both lists in batch order: items as in batch.items, instances task after task)."""
    out, start = [], 0
    for t in batch.tasks:
        idx = [t.perturbed.ravel(), t.label_items.ravel()] + ([t.alone] if t.alone is not None else [])
        n = len(t.answers)
        out.append(int(sum(per_item[i] for i in np.concatenate(idx))) + int(sum(per_instance[start: start + n])))
        start += n
    return out


def task_rows(batch: Batch, logp: np.ndarray, task_tokens: Sequence[int] | None = None,
              parameters: int | None = None, embeddings: Sequence | None = None) -> list[dict[str, Any]]:
    """One row per task (SCORE_COLUMNS) from the engine's mean log-prob of every item;
    `task_tokens`: each task's token count (raysys.scoring.items.tokens), else None; with
    the model's `parameters` too, their FLOPs (raysys.costs), else None; `embeddings`:
    each task's RDS+ embedding (a list of floats), else None."""
    _check(batch, logp)
    rows = []
    for i, t in enumerate(batch.tasks):
        if t.columns[:1] != (0,):
            raise ValueError("task rows need the original prompt (j = 0) as the first column")
        lp = logp[t.perturbed]  # (n, k + 1)
        p = np.exp(lp)
        task = t.plan.task
        rows.append({
            "task_id": task.task_id,
            "prompt_uncertainty": signals.prompt_uncertainty(p[:, 0], p[:, 1:]),
            "prediction_probability": signals.prediction_probability(p[:, 0]),
            "perplexity": signals.perplexity(lp[:, 0]),
            "classification_entropy": (signals.label_entropy(logp[t.label_items]) if t.label_items.size
                                       else float("nan")),
            "ifd": signals.ifd(lp[:, 0], logp[t.alone]) if t.alone is not None else float("nan"),
            "n_instances": len(t.answers),
            "n_instances_total": len(task.instances),
            "n_perturbations": t.perturbations,
            "n_labels": len(t.plan.labels),
            "n_truncated": t.truncated,
            "is_classification": task.is_classification,
            "mean_answer_chars": float(np.mean([len(y) for y in t.answers])),
            "tokens": None if task_tokens is None else int(task_tokens[i]),
            "flops": None if task_tokens is None or parameters is None else forward_flops(task_tokens[i], parameters),
            "rds_embedding": None if embeddings is None else embeddings[i],
            "answers": answer_column([inst.id for inst in t.plan.instances], t.answers),
        })
    return rows


def detail_rows(batch: Batch, logp: np.ndarray) -> list[dict[str, Any]]:
    """One row per (task, instance, j) (DETAIL_COLUMNS): the prompt, y_i and p_ij."""
    _check(batch, logp)
    rows = []
    for t in batch.tasks:
        p = np.exp(logp[t.perturbed])
        for r, inst in enumerate(t.plan.instances):
            for c, j in enumerate(t.columns):
                k = t.perturbed[r, c]
                rows.append({"task_id": t.plan.task.task_id, "instance_id": inst.id, "perturbation": j,
                             "prompt": batch.items.prompts[k], "target": batch.items.targets[k], "p": float(p[r, c])})
    return rows
