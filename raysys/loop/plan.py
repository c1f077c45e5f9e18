"""The loop's decisions that need no model: which tasks each seed starts from and
validates on, what is left to select from in a round, and how many trials a cluster can
run at once (pure: task ids and resource counts in, plans out).

Every draw derives from the seed alone (and the round for candidate samples), so all
strategies of a seed share its initial and validation tasks, and a resumed run draws
exactly what an uninterrupted one did.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from raysys.cluster import cpus_needed
from raysys.config import LoopConfig
from raysys.errors import RaysysError


@dataclass(frozen=True)
class Universe:
    """The loop's task ids: the pool's (in pool order) and the held-out test tasks'; with
    a schedule in training examples or tokens, each trainable task's cost in that unit."""

    pool_ids: tuple[str, ...]
    test_ids: tuple[str, ...]
    costs: Mapping[str, float] | None = None  # None: the schedule counts tasks

    def trainable(self) -> tuple[str, ...]:
        test = set(self.test_ids)
        return tuple(t for t in self.pool_ids if t not in test)

    def cost(self, task_ids: Sequence[str]) -> float:
        """What training on these tasks costs in the schedule's unit."""
        return float(len(task_ids)) if self.costs is None else float(sum(self.costs[t] for t in task_ids))


@dataclass(frozen=True)
class SeedSets:
    seed: int
    initial: tuple[str, ...]  # round 0's random training tasks
    validation: tuple[str, ...]  # never selected; evaluated every round


def draw_sets(universe: Universe, seed: int, cfg: LoopConfig) -> SeedSets:
    """The seed's validation and initial random tasks, disjoint, from the trainable pool:
    in a random order, the validation tasks first, then as many tasks as fill the
    schedule's first budget (tasks, or training examples or tokens: each task taken while
    its cost fits, raysys.selection.select.fill_budget)."""
    from raysys.selection.select import fill_budget

    pool = universe.trainable()
    order = np.random.default_rng([seed, 0x5EED]).permutation(len(pool))
    val, rest = order[: cfg.validation_tasks], [pool[i] for i in order[cfg.validation_tasks:]]
    unit = cfg.select.budget_unit
    if universe.cost(rest) < cfg.schedule[-1]:
        have = f"{len(pool)} trainable task(s)" if unit == "tasks" else \
            f"{universe.cost(rest):,.0f} training {unit} outside the {cfg.validation_tasks} validation task(s)"
        raise RaysysError(f"the pool has {have} (test tasks excluded); the loop needs {cfg.validation_tasks} "
                          f"validation task(s) and {cfg.schedule[-1]:,} {unit} for the last round")
    if universe.costs is None:
        init = rest[: cfg.schedule[0]]
    else:
        init = [rest[j] for j in fill_budget([universe.costs[t] for t in rest], cfg.schedule[0])]
    return SeedSets(seed, tuple(init), tuple(pool[i] for i in val))


def round_budget(universe: Universe, cfg: LoopConfig, trained: Sequence[str], round_: int) -> int:
    """What round `round_` selects: the schedule's next total less what the tasks trained
    so far cost (in tasks, that is the schedule's step), at least 1."""
    return max(1, int(cfg.schedule[round_] - universe.cost(trained)))


def remaining(universe: Universe, sets: SeedSets, trained: Sequence[str], cfg: LoopConfig,
              round_: int) -> list[str]:
    """The round's candidates, in pool order: the trainable pool minus the tasks trained on
    and the validation tasks; a random `cfg.candidates` of them when set (the same sample
    for every strategy of the seed that has trained on the same tasks)."""
    taken = set(trained) | set(sets.validation)
    left = [t for t in universe.trainable() if t not in taken]
    if cfg.candidates and len(left) > cfg.candidates:
        pick = np.random.default_rng([sets.seed, round_, 0xCA7D]).choice(len(left), cfg.candidates, replace=False)
        left = [left[i] for i in sorted(pick)]
    return left


def selection_seed(seed: int, round_: int, offset: int = 0) -> int:
    """Seed of a round's selection (random strategy, tie-breaks): new each round; an arm's
    `offset` (raysys.selection.arms: random-2's 1) gives it draws of its own."""
    return seed * 1000 + round_ + offset * 1_000_000


@dataclass(frozen=True)
class TrialPlan:
    trials: int  # strategies x seeds
    concurrent: int  # trials run at once
    cpus_per_trial: float  # each trial's share of the CPUs, handed to its stages
    gpus_per_trial: int  # GPUs one trial needs at a time (its largest stage)


def plan_trials(cluster: Mapping[str, float], cfg: LoopConfig) -> TrialPlan:
    """How many trials run at once and each one's share; fails fast (instead of hanging
    on a resource request) when the cluster cannot host one trial's stages, or the
    trials the user asked for at once."""
    trials = len(cfg.strategies) * len(cfg.seeds)
    width = max(cfg.actors, cfg.train.workers)  # the stages of a trial run one after another
    gpus, cpus = int(cluster.get("GPU", 0)), float(cluster.get("CPU", 0))
    if gpus:
        if gpus < width:
            raise RaysysError(f"one trial needs {width} GPUs ({cfg.actors} scorer actor(s), {cfg.train.workers} "
                              f"training worker(s)); the cluster has {gpus}")
        fit = gpus // width
        per_gpu = width
    else:
        least = cpus_needed(width)
        if cpus < least:
            raise RaysysError(f"one trial needs at least {least:g} CPUs ({cfg.actors} scorer actor(s), "
                              f"{cfg.train.workers} training worker(s)); the cluster has {cpus:g}")
        fit = max(1, int(cpus // (width + 1)))  # a whole CPU each when trials run side by side
        per_gpu = 0
    if cfg.max_concurrent_trials > fit:
        what = f"{gpus} GPUs at {width} per trial" if gpus else f"{cpus:g} CPUs at {width + 1} per trial"
        raise RaysysError(f"max_concurrent_trials={cfg.max_concurrent_trials} does not fit the cluster "
                          f"({what}: at most {fit})")
    concurrent = min(trials, cfg.max_concurrent_trials or fit)
    share = cpus / concurrent
    if not gpus and share < cpus_needed(width):
        raise RaysysError(f"{concurrent} trials at once leave {share:g} CPUs each; one needs {cpus_needed(width):g}")
    return TrialPlan(trials, concurrent, math.floor(share * 100) / 100, per_gpu)
