"""Perturbation racing, the driver: rounds of scoring until the B most prompt-uncertain
tasks are known (`raysys score --racing B`). The rule and its guarantee are
raysys.scoring.race_rule's; this runs it.

Round 0 scores every task as a normal run does, with its first m_0 perturbations: the
greedy answers y_i, p_i0, the baselines (perplexity, entropy, IFD) and p_ij for
j = 1..m_0. Each later round scores the still-open tasks on their next perturbations
j = m_{r-1}+1..m_r only, against the answers found in round 0 (read from `answers`), and
the race decides who is in, out or still open. How a round runs is the caller's:
raysys.scoring.pipeline runs it on the actor pool (resumable, one parts folder per round),
a benchmark in one process (`in_process`).

The result has one row per task: the round-0 row, with `prompt_uncertainty` over the
`n_perturbations` the task received (its full-run U when that is K), `tokens` and `flops`
over all rounds, `decided_early` (stopped before K) and `racing_selected` (in the top B); and every
scored prompt as a detail row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from raysys.config import ScoringConfig
from raysys.schema import Task
from raysys.scoring import race_rule, signals
from raysys.scoring.answers import Answers, answers_of, given_answers
from raysys.scoring.items import sample_instances

# run_round(round, perturbations j to score (0 included in round 0), task ids, answers or None in round 0)
#   -> (rows, detail rows) of those tasks
RunRound = Callable[[int, tuple[int, ...], list[str], "Answers | None"], tuple[list[dict], list[dict]]]


@dataclass(frozen=True)
class RaceRound:
    """What a racing round's worker needs: the scoring config, the perturbations j it
    scores, and the answers file of round 0 ("" in round 0: it generates them)."""

    scoring: ScoringConfig
    columns: tuple[int, ...]
    answers: str = ""

    @property
    def tasks_per_batch(self) -> int:
        return self.scoring.tasks_per_batch


def score_round(scorer, tasks: Sequence[Task], columns: tuple[int, ...], answers: Answers | None,
                source: str = "round 0's answers"):
    """A TaskScorer's rows and detail rows for one round: perturbations `columns` of
    `tasks`, against round 0's `answers` (None in round 0: the scorer decodes them)."""
    given = None if answers is None else given_answers(
        answers, tasks, [[i.id for i in sample_instances(t, scorer.cfg.instances, scorer.cfg.seed)] for t in tasks],
        source)
    return scorer.score(tasks, True, columns=columns, answers=given)


class RoundScorer:
    """The actor pool's worker for a racing round (raysys.actors.Worker)."""

    def __init__(self, model: str, cfg: RaceRound, *, trust_remote_code: bool = False, loaded=None):
        import pyarrow.parquet as pq

        from raysys.scoring.scorer import TaskScorer

        self.cfg = cfg
        self.scorer = TaskScorer(model, cfg.scoring, trust_remote_code=trust_remote_code, loaded=loaded)
        self.answers = answers_of(pq.read_table(cfg.answers).to_pylist()) if cfg.answers else None

    def process(self, tasks: Sequence[Task], details: bool = True):
        return score_round(self.scorer, tasks, self.cfg.columns, self.answers, self.cfg.answers)


@dataclass(frozen=True)
class RaceResult:
    rows: list[dict[str, Any]]  # one per task, in the input order
    details: list[dict[str, Any]]  # every scored prompt, task by task
    rounds: tuple[int, ...]  # the perturbation counts of the rounds run
    forwards: int  # perturbed items scored (p_ij with j >= 1)
    forwards_full: int  # those a full run scores


def race(task_ids: Sequence[str], cfg: ScoringConfig, run_round: RunRound,
         on_round: Callable[[int, int, int, int], None] | None = None) -> RaceResult:
    """Race the tasks (see the module docstring). `on_round(round, m, open, decided)` is
    called after each round (progress lines)."""
    ids, k, budget = list(task_ids), cfg.perturbations, cfg.racing
    sched = race_rule.schedule(k, cfg.racing_first)
    rows, details = run_round(0, tuple(range(sched[0] + 1)), ids, None)
    by_id = {r["task_id"]: dict(r) for r in rows}
    answers = answers_of(details)
    inst: dict[str, list[str]] = {}  # task -> its instance ids, in scoring order
    for d in details:
        if d["perturbation"] == 0:
            inst.setdefault(d["task_id"], []).append(d["instance_id"])
    p = {t: np.full((len(inst[t]), k + 1), np.nan) for t in ids}
    pos = {t: {iid: i for i, iid in enumerate(inst[t])} for t in ids}

    def take(batch: Sequence[dict]) -> None:
        for d in batch:
            p[d["task_id"]][pos[d["task_id"]][d["instance_id"]], d["perturbation"]] = d["p"]

    take(details)
    m_of = {t: sched[0] for t in ids}
    status = [race_rule.OPEN] * len(ids)
    for r, m in enumerate(sched):
        if r:
            open_ids = [ids[i] for i in range(len(ids)) if status[i] == race_rule.OPEN]
            more, extra = run_round(r, tuple(range(sched[r - 1] + 1, m + 1)), open_ids, answers)
            take(extra)
            details += extra
            for row in more:
                by_id[row["task_id"]]["tokens"] += row["tokens"]
                by_id[row["task_id"]]["flops"] += row["flops"]
            for t in open_ids:
                m_of[t] = m
        lo, hi = race_rule.intervals([race_rule.deviations(p[t][:, 0], p[t][:, 1: m_of[t] + 1]) for t in ids], k,
                                     cfg.racing_delta, cfg.racing_rule)
        status = race_rule.decide(lo, hi, budget, status)
        if r == len(sched) - 1:
            status = race_rule.finish(status, [_u(p[t], m_of[t]) for t in ids], ids, budget)
        if on_round:
            on_round(r, m, status.count(race_rule.OPEN), len(ids) - status.count(race_rule.OPEN))
        if race_rule.OPEN not in status:
            break
    out = []
    for t, s in zip(ids, status):
        row = by_id[t]
        row.update(prompt_uncertainty=_u(p[t], m_of[t]), n_perturbations=m_of[t], decided_early=m_of[t] < k,
                   racing_selected=s == race_rule.IN)
        out.append(row)
    order = {t: i for i, t in enumerate(ids)}
    details.sort(key=lambda d: (order[d["task_id"]], pos[d["task_id"]][d["instance_id"]], d["perturbation"]))
    n = {t: len(inst[t]) for t in ids}
    return RaceResult(out, details, tuple(sched[: r + 1]), sum(n[t] * m_of[t] for t in ids),
                      sum(n[t] * k for t in ids))


def _u(p: np.ndarray, m: int) -> float:
    """U over the first m perturbations, as a full run computes it (raysys.scoring.signals)."""
    return signals.prompt_uncertainty(p[:, 0], p[:, 1: m + 1])


def in_process(scorer, tasks: Sequence[Task]) -> RunRound:
    """Rounds run by a TaskScorer in this process (benchmarks, tests)."""
    by_id = {t.task_id: t for t in tasks}

    def run_round(r: int, columns: tuple[int, ...], ids: list[str], answers: Answers | None):
        return score_round(scorer, [by_id[t] for t in ids], columns, answers)

    return run_round
