"""One selection: exclusions, strata, the strategy, and the selected.json it writes.

`select_tasks` is pure given the candidates (with embeddings already attached when the
strategy needs them; see raysys.selection.embed). The output JSON holds the strategy, its
parameters, the seed, the ordered task ids and their scores; `read_task_ids` reads it
back (or a plain JSON list of ids) so that a selection becomes the next round's
training set and is excluded from later rounds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from raysys.config import SelectConfig
from raysys.config.mapping import to_dict
from raysys.errors import InvalidFile
from raysys.io import read_json, write_json
from raysys.jsontypes import type_name
from raysys.selection.candidates import Candidates
from raysys.selection.rank import interleave
from raysys.selection.strategies import STRATEGIES, check_strategies
from raysys.selection.stratify import Stratum, strata


@dataclass(frozen=True)
class Selection:
    strategy: str
    params: dict[str, Any]
    seed: int
    budget: int
    task_ids: tuple[str, ...]
    tasks: tuple[dict[str, Any], ...]  # per selected task: rank, stratum, scores, category
    strata: tuple[dict[str, Any], ...]
    n_candidates: int
    n_excluded: int
    notes: tuple[str, ...]
    budget_unit: str = "tasks"
    totals: dict[str, float] = field(default_factory=dict)  # the selected tasks' train_examples / train_tokens

    def to_json(self) -> dict[str, Any]:
        return {"raysys_selection": 1, "strategy": self.strategy, "params": self.params, "seed": self.seed,
                "budget": self.budget, "budget_unit": self.budget_unit, "n_selected": len(self.task_ids),
                **{f"selected_{k}": v for k, v in self.totals.items()}, "n_candidates": self.n_candidates,
                "n_excluded": self.n_excluded, "notes": list(self.notes), "strata": list(self.strata),
                "task_ids": list(self.task_ids), "tasks": list(self.tasks)}


def _num(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def select_tasks(c: Candidates, cfg: SelectConfig, exclude: Iterable[str] = (),
                 notes: Iterable[str] = ()) -> Selection:
    """Up to cfg.budget task ids chosen by cfg.strategy among the non-excluded candidates."""
    check_strategies(cfg.strategy)
    notes = list(notes)
    excluded = set(exclude)
    keep = np.array([t not in excluded for t in c.task_ids], dtype=bool)
    left = c.subset(np.flatnonzero(keep))
    n_excluded = len(c) - len(left)
    if cfg.budget_unit == "tasks" and cfg.budget > len(left):
        notes.append(f"budget {cfg.budget} exceeds the {len(left)} candidate(s) left; all of them are selected")
    rng = np.random.default_rng(cfg.seed)
    if cfg.budget_unit != "tasks":
        return _select_to_cost(left, cfg, rng, n_excluded, notes)
    groups, strata_notes = strata(left, cfg.budget, cfg)
    notes += strata_notes
    picked, names = [], {}
    for g in groups:
        local = STRATEGIES[cfg.strategy](left.subset(g.indices), g.quota, cfg, rng) if g.quota else np.zeros(0, int)
        if len(local) != g.quota or len(set(local.tolist())) != len(local):
            raise AssertionError(f"strategy {cfg.strategy} returned {len(local)} of {g.quota} or repeats")
        chosen = g.indices[local]
        picked.append(chosen)
        names.update({int(i): g.name for i in chosen})
    order = interleave(picked)
    return _selection(left, cfg, order, names, groups, n_excluded, notes)


def fill_budget(costs: Sequence[float], budget: float) -> list[int]:
    """The positions taken when a budget is filled in this order: each item whose cost
    (> 0) still fits in what is left, the others passed over."""
    taken, left_over = [], float(budget)
    for i, c in enumerate(costs):
        if 0 < c <= left_over:
            taken.append(i)
            left_over -= c
    return taken


def _select_to_cost(left: Candidates, cfg: SelectConfig, rng: np.random.Generator, n_excluded: int,
                    notes: list[str]) -> Selection:
    """A budget of training examples or tokens: the strategy's whole order, walked from the
    top, each task taken when its cost (with_costs) still fits in what is left; tasks
    without training examples are never taken."""
    cost = left.signal(f"train_{cfg.budget_unit}")
    order = STRATEGIES[cfg.strategy](left, len(left), cfg, rng).tolist()
    taken = [order[j] for j in fill_budget([cost[i] for i in order], cfg.budget)]
    left_over = cfg.budget - float(sum(cost[i] for i in taken))
    if left_over > 0 and len(taken) == int((cost > 0).sum()):
        notes.append(f"budget {cfg.budget} {cfg.budget_unit} exceeds the {cfg.budget - left_over:.0f} of the "
                     f"{len(left)} candidate(s) left; all of them are selected")
    return _selection(left, cfg, np.array(taken, dtype=np.int64), {i: "all" for i in taken},
                      [Stratum("all", np.arange(len(left)), len(taken))], n_excluded, notes)


def _selection(left: Candidates, cfg: SelectConfig, order: np.ndarray, names: dict, groups, n_excluded: int,
               notes: list[str]) -> Selection:
    rows = []
    for rank, i in enumerate(order.tolist()):
        row: dict[str, Any] = {"task_id": left.task_ids[i], "rank": rank, "stratum": names[i]}
        row.update({k: _num(v[i]) for k, v in left.signals.items()})
        if left.category is not None:
            row["category"] = str(left.category[i])
        rows.append(row)
    totals = {k: float(left.signals[k][order].sum()) for k in ("train_examples", "train_tokens")
              if k in left.signals}
    return Selection(
        strategy=cfg.strategy, params=to_dict(cfg), seed=cfg.seed, budget=cfg.budget,
        task_ids=tuple(left.task_ids[i] for i in order.tolist()), tasks=tuple(rows),
        strata=tuple({"name": g.name, "candidates": len(g.indices), "quota": g.quota} for g in groups),
        n_candidates=len(left), n_excluded=n_excluded, notes=tuple(notes), budget_unit=cfg.budget_unit,
        totals=totals)


def write_selection(sel: Selection, path: str | Path) -> None:
    write_json(path, sel.to_json())


def read_task_ids(path: str | Path) -> list[str]:
    """Task ids of a selected.json (its `task_ids`) or of a JSON list of ids."""
    p = Path(path)
    data = read_json(p)
    ids = data.get("task_ids") if isinstance(data, dict) else data
    if not isinstance(ids, list):
        got = f"an object with task_ids {type_name(ids)}" if isinstance(data, dict) else type_name(data)
        raise InvalidFile(p, f"expected a selected.json (with task_ids) or a JSON list of task ids, got {got}")
    for i, t in enumerate(ids):
        if not isinstance(t, str) or not t:
            got = "an empty string" if t == "" else type_name(t)
            raise InvalidFile(p, f"task_ids[{i}]: a task id must be a non-empty string, got {got}")
    return ids
