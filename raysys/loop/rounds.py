"""The active loop's rounds, with its collaborators injected (no Ray here: the Tune
plumbing is in driver.py, the real collaborators are raysys.stages.RayStages, fakes in
the tests).

Round 0 (`base_round`, once per seed, shared by all strategies of the seed) trains the
base model on the seed's random initial tasks and evaluates it. Every later round of a
trial (`run_trial`) scores the remaining pool with the current model (strategies that
rank by scores), selects to the schedule's next total (of tasks, or of training examples
or tokens: `select.budget_unit`), trains (the base model on all tasks
so far, or the previous model on the new ones), evaluates on the validation and test
tasks, and hands the round's record and the loop state to `report` (the Tune driver
checkpoints it there). A trial restored from a state continues after its last round.

Folders (under the loop's work_dir): seed-<s>/round-0/ and <strategy>/seed-<s>/round-<r>/,
each with the round's model, scores, selection and evaluations, then record.json and
loop_state.json (the mark of a finished round).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from raysys.config import LoopConfig
from raysys.io import read_json, write_json
from raysys.loop.plan import SeedSets, Universe, remaining, round_budget, selection_seed
from raysys.selection.arms import arm
from raysys.selection.candidates import read_scores
from raysys.selection.strategies import NEEDS_SCORES
from raysys.stages import Stages

RECORD = "record.json"
STATE = "loop_state.json"
SIGNALS = ("prompt_uncertainty", "prediction_probability")


@dataclass(frozen=True)
class LoopState:
    """Where a trial stands: what its Tune checkpoint holds."""

    strategy: str
    seed: int
    round: int  # the last finished round
    trained: tuple[str, ...]  # every task trained on so far, in the order added
    model: str  # the last round's model
    history: tuple[dict[str, Any], ...] = field(default_factory=tuple)  # one record per finished round

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "trained": list(self.trained), "history": list(self.history)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "LoopState":
        return cls(d["strategy"], int(d["seed"]), int(d["round"]), tuple(d["trained"]), d["model"],
                   tuple(d["history"]))


def seed_dir(work: Path, seed: int) -> Path:
    return work / f"seed-{seed}" / "round-0"


def round_dir(work: Path, strategy: str, seed: int, round_: int) -> Path:
    return work / strategy / f"seed-{seed}" / f"round-{round_}"


def _evaluate_both(stages: Stages, model: str, sets: SeedSets, universe: Universe, out: Path) -> dict[str, Any]:
    splits = {k: v for k, v in (("validation", sets.validation), ("test", universe.test_ids)) if v}
    if not splits:
        return {}
    got = stages.evaluate(model, splits, out)
    prefix = {"validation": "val", "test": "test"}
    return {f"{prefix[s]}_{k}": v for s in splits for k, v in got[s].items()}


def base_round(cfg: LoopConfig, base_model: str, sets: SeedSets, universe: Universe, stages: Stages,
               work: Path, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Round 0 of a seed (done once, reused by every strategy): its record, from record.json
    when a previous run finished it."""
    out = seed_dir(work, sets.seed)
    done = out / RECORD
    if done.is_file():
        return read_json(done)
    t0 = time.perf_counter()
    say(f"[seed {sets.seed}] round 0: training on {len(sets.initial)} random tasks")
    model, train_metrics = stages.train(base_model, sets.initial, out / "model", val_ids=sets.validation)
    record = {"seed": sets.seed, "round": 0, "n_tasks": len(sets.initial), "n_new": len(sets.initial),
              "model": model, "selected": list(sets.initial), **train_metrics,
              **_evaluate_both(stages, model, sets, universe, out),
              **{f"selected_{s}": None for s in SIGNALS}, "seconds": round(time.perf_counter() - t0, 2)}
    write_json(done, record)
    return record


def start_state(strategy: str, base: dict[str, Any]) -> LoopState:
    """A trial's state after its seed's round 0."""
    record = {"strategy": strategy, **base}
    return LoopState(strategy, base["seed"], 0, tuple(base["selected"]), base["model"], (record,))


def _mean_signals(scores: str | None, picked: Sequence[str]) -> dict[str, float | None]:
    if scores is None or not picked:
        return {f"selected_{s}": None for s in SIGNALS}
    cols = read_scores(scores)  # checked: every signal finite
    want = set(picked)
    rows = [i for i, t in enumerate(cols["task_id"]) if t in want]
    return {f"selected_{s}": float(np.asarray(cols[s], dtype=np.float64)[rows].mean()) if rows else None
            for s in SIGNALS}


def run_round(cfg: LoopConfig, state: LoopState, base_model: str, sets: SeedSets, universe: Universe,
              stages: Stages, work: Path, say: Callable[[str], None] = print) -> LoopState:
    """One round after round 0: score, select, train, evaluate; the state after it."""
    r = state.round + 1
    t0 = time.perf_counter()
    out = round_dir(work, state.strategy, state.seed, r)
    tag = f"[{state.strategy} seed {state.seed}] round {r}"
    budget = round_budget(universe, cfg, state.trained, r)
    pool = remaining(universe, sets, state.trained, cfg, r)
    scores = None
    strategy, offset = arm(state.strategy)  # random-2: random with draws of its own
    if strategy in NEEDS_SCORES:
        say(f"{tag}: scoring {len(pool)} remaining tasks")
        scores = stages.score(state.model, pool, out / "scores" / "scores.parquet")
    say(f"{tag}: selecting {budget:,} {cfg.select.budget_unit} with {strategy}")
    picked = stages.select(strategy, budget, selection_seed(state.seed, r, offset), pool, scores, out,
                           model=base_model)  # the costs: training tokens as the base model's tokenizer counts
    if scores is None and cfg.score_selected:
        scores = stages.score(state.model, picked, out / "scores-selected" / "scores.parquet")
    trained = state.trained + tuple(picked)
    if cfg.train_from == "base":
        say(f"{tag}: training the base model on {len(trained)} tasks")
        model, train_metrics = stages.train(base_model, trained, out / "model", val_ids=sets.validation)
    else:
        say(f"{tag}: training the previous model on {len(picked)} new tasks")
        model, train_metrics = stages.train(state.model, picked, out / "model", val_ids=sets.validation)
    record = {"strategy": state.strategy, "seed": state.seed, "round": r, "n_tasks": len(trained),
              "n_new": len(picked), "model": model, "selected": list(picked), "candidates": len(pool),
              **train_metrics, **_evaluate_both(stages, model, sets, universe, out),
              **_mean_signals(scores, picked), "seconds": round(time.perf_counter() - t0, 2)}
    new = replace(state, round=r, trained=trained, model=model, history=state.history + (record,))
    write_json(out / RECORD, record)
    write_json(out / STATE, new.to_json())  # the round is finished once this exists
    return new


def latest_state(work: Path, strategy: str, seed: int, rounds: int) -> LoopState | None:
    """The state saved by the trial's last finished round, if any (a round that finished
    just before a crash counts even when Tune's experiment snapshot predates it)."""
    for r in range(rounds - 1, 0, -1):
        path = round_dir(work, strategy, seed, r) / STATE
        if path.is_file():
            return LoopState.from_json(read_json(path))
    return None


def run_trial(cfg: LoopConfig, state: LoopState, base_model: str, sets: SeedSets, universe: Universe,
              stages: Stages, work: Path, report: Callable[[dict[str, Any], LoopState], None],
              fresh: bool, say: Callable[[str], None] = print) -> LoopState:
    """The trial's rounds after `state.round`; `fresh`: the trial starts now (its round-0
    record is reported first, so that every trial's curve starts at its seed's base)."""
    if fresh:
        report(state.history[-1], state)
    while state.round + 1 < cfg.rounds:
        state = run_round(cfg, state, base_model, sets, universe, stages, work, say)
        report(state.history[-1], state)
    return state
