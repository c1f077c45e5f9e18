"""Selection strategies: plain functions with one signature, in the dict STRATEGIES.

    strategy(c: Candidates, budget: int, cfg: SelectConfig, rng: np.random.Generator)
        -> np.ndarray of at most `budget` indices into c, best first, no repeats

A strategy sees only the candidates it may pick (exclusions and strata are applied by
raysys.selection.select before it is called). Orders are deterministic for a given
generator: ties are broken by a permutation drawn from it (raysys.selection.rank).

- random: a uniform random order.
- prompt-uncertainty: highest prompt uncertainty first (the method); prompt-uncertainty-low:
  lowest first (the control: is there signal in the ranking at all?).
- perplexity-high / perplexity-low, probability-high / probability-low: the baselines.
- ambiguous / easy / difficult: the Task Map categories (raysys.selection.taskmap, computed over
  the whole scores file): tasks of the category first, ranked by its own key (uncertainty
  high; probability high; probability low), then the other tasks by the same key.
- entropy: highest classification entropy first; tasks without one (generative tasks,
  label sets too large) follow in random order.
- ifd: highest IFD = PPL(y | prompt) / PPL(y) first; missing values last.
- length: longest reference responses first, in tokens (the mean over the task's training
  examples, raysys.training.data.task_costs): the "longest responses" baseline.
- similarity (INSTA): cosine similarity of the instruction embeddings to the target tasks'
  instructions; `overall` ranks by the max (or mean) over targets, `per-target` takes
  each target's next most similar task in turn.
- rds (RDS+): the same rule on the scoring model's own embeddings of the tasks' prompts
  (position-weighted mean of its final hidden states, stored by `raysys score`; targets
  embedded the same way: raysys.models.pooling).
- uncertainty-diverse: the most uncertain tasks in order, skipping any whose instruction
  embedding has cosine similarity >= diversity_threshold with one already taken; when too
  few remain, the skipped ones fill the budget in the same order.
- uncertainty-kcenter: greedy k-center (farthest point, cosine distance) over the
  candidate_factor x budget most uncertain tasks, starting from the most uncertain.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from raysys.config import SelectConfig
from raysys.errors import ConfigError, RaysysError
from raysys.selection.candidates import Candidates
from raysys.selection.rank import order_by

Strategy = Callable[[Candidates, int, SelectConfig, np.random.Generator], np.ndarray]


def random_order(c: Candidates, budget: int, cfg: SelectConfig, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(len(c))[:budget]


def _ranked(column: str, descending: bool) -> Strategy:
    def strategy(c: Candidates, budget: int, cfg: SelectConfig, rng: np.random.Generator) -> np.ndarray:
        return order_by(c.signal(column), rng, descending)[:budget]

    strategy.__name__ = f"{column}_{'high' if descending else 'low'}"
    return strategy


def _category(name: str, column: str, descending: bool) -> Strategy:
    def strategy(c: Candidates, budget: int, cfg: SelectConfig, rng: np.random.Generator) -> np.ndarray:
        if c.category is None:
            raise RaysysError(f"the {name.lower()} strategy needs a scores file (--scores)")
        order = order_by(c.signal(column), rng, descending)
        inside = c.category[order] == name
        return np.concatenate([order[inside], order[~inside]])[:budget]

    strategy.__name__ = name.lower()
    return strategy


def _need_embeddings(c: Candidates, what: str) -> np.ndarray:
    if c.embeddings is None:
        raise RaysysError(f"the {what} strategy needs instruction embeddings (give --pool)")
    return c.embeddings


def similarity(c: Candidates, budget: int, cfg: SelectConfig, rng: np.random.Generator) -> np.ndarray:
    return _by_similarity(c, budget, cfg, rng, "similarity")


def rds(c: Candidates, budget: int, cfg: SelectConfig, rng: np.random.Generator) -> np.ndarray:
    """RDS+: `similarity`'s rule on the scoring model's RDS+ embeddings (raysys.models.pooling)."""
    return _by_similarity(c, budget, cfg, rng, "rds")


def _by_similarity(c: Candidates, budget: int, cfg: SelectConfig, rng: np.random.Generator, what: str) -> np.ndarray:
    emb = _need_embeddings(c, what)
    if c.target_embeddings is None or len(c.target_embeddings) == 0:
        raise RaysysError(f"the {what} strategy needs target tasks (--targets)")
    sim = emb @ c.target_embeddings.T  # (tasks, targets), cosine: rows are unit-norm
    if cfg.similarity_mode == "overall":
        key = sim.max(axis=1) if cfg.similarity_reduce == "max" else sim.mean(axis=1)
        return order_by(key, rng)[:budget]
    per_target = [order_by(sim[:, t], rng) for t in range(sim.shape[1])]
    taken: list[int] = []
    seen = np.zeros(len(c), dtype=bool)
    cursor = [0] * len(per_target)
    while len(taken) < min(budget, len(c)):
        for t, order in enumerate(per_target):  # round robin: each target's next best unseen task
            while cursor[t] < len(order) and seen[order[cursor[t]]]:
                cursor[t] += 1
            if cursor[t] < len(order) and len(taken) < budget:
                i = int(order[cursor[t]])
                seen[i] = True
                taken.append(i)
    return np.array(taken, dtype=np.int64)


def uncertainty_diverse(c: Candidates, budget: int, cfg: SelectConfig, rng: np.random.Generator) -> np.ndarray:
    emb = _need_embeddings(c, "uncertainty-diverse")
    order = order_by(c.signal("prompt_uncertainty"), rng)
    taken: list[int] = []
    skipped: list[int] = []
    for i in order:
        if len(taken) == budget:
            break
        if taken and float((emb[taken] @ emb[i]).max()) >= cfg.diversity_threshold:
            skipped.append(int(i))
        else:
            taken.append(int(i))
    taken += skipped[: budget - len(taken)]
    return np.array(taken, dtype=np.int64)


def uncertainty_kcenter(c: Candidates, budget: int, cfg: SelectConfig, rng: np.random.Generator) -> np.ndarray:
    emb = _need_embeddings(c, "uncertainty-kcenter")
    pool = order_by(c.signal("prompt_uncertainty"), rng)[: budget * cfg.candidate_factor]
    if len(pool) == 0:
        return pool
    e = emb[pool]
    taken = [0]  # the most uncertain task
    dist = 1.0 - e @ e[0]  # cosine distance of each candidate to its nearest taken task
    dist[0] = -np.inf
    while len(taken) < min(budget, len(pool)):
        nxt = int(np.argmax(dist))  # first maximum = the more uncertain on ties
        taken.append(nxt)
        dist = np.minimum(dist, 1.0 - e @ e[nxt])
        dist[taken] = -np.inf
    return pool[np.array(taken, dtype=np.int64)]


STRATEGIES: dict[str, Strategy] = {
    "random": random_order,
    "prompt-uncertainty": _ranked("prompt_uncertainty", True),
    "prompt-uncertainty-low": _ranked("prompt_uncertainty", False),
    "perplexity-high": _ranked("perplexity", True),
    "perplexity-low": _ranked("perplexity", False),
    "probability-high": _ranked("prediction_probability", True),
    "probability-low": _ranked("prediction_probability", False),
    "ambiguous": _category("Ambiguous", "prompt_uncertainty", True),
    "easy": _category("Easy", "prediction_probability", True),
    "difficult": _category("Difficult", "prediction_probability", False),
    "entropy": _ranked("classification_entropy", True),
    "ifd": _ranked("ifd", True),
    "length": _ranked("response_tokens", True),
    "similarity": similarity,
    "rds": rds,
    "uncertainty-diverse": uncertainty_diverse,
    "uncertainty-kcenter": uncertainty_kcenter,
}
NEEDS_EMBEDDINGS = frozenset({"similarity", "uncertainty-diverse", "uncertainty-kcenter"})
NEEDS_SCORES = frozenset(STRATEGIES) - {"random", "similarity", "length"}
NEEDS_COSTS = frozenset({"length"})  # training costs: a pool and the trained model's tokenizer
NEEDS_TARGETS = frozenset({"similarity", "rds"})


def check_strategies(*names: str, targets: str | None = None) -> None:
    """The one check of strategy names (selection, the loop, the demo): ConfigError for
    unknown ones and, when `targets` is given, for a strategy that needs targets without them."""
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown:
        what = f"strategy {unknown[0]!r}" if len(unknown) == 1 else f"strategies {unknown}"
        raise ConfigError(f"unknown {what}; one of {', '.join(STRATEGIES)}")
    lacking = [n for n in names if n in NEEDS_TARGETS] if targets == "" else []
    if lacking:
        kinds = "a pool or a .txt of instructions" if lacking[0] == "similarity" else "a pool"
        raise ConfigError(f"the {lacking[0]} strategy needs targets ({kinds})")
