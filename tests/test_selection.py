"""Selection strategies, stratification and selected.json on hand-built candidates."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from raysys.config import SelectConfig
from raysys.errors import ConfigError, InvalidFile, RaysysError
from raysys.schema import Instance, Task
from raysys.selection.candidates import Candidates, build_candidates
from raysys.selection.rank import interleave, order_by
from raysys.selection.select import read_task_ids, select_tasks, write_selection
from raysys.selection.strategies import STRATEGIES
from raysys.selection.stratify import allocate, cls_quotas

N = 60


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def candidates(n: int = N, seed: int = 0) -> Candidates:
    """n tasks with random signals (a few NaN entropies), 1/3 classification, answer
    lengths over three 10-word bins, and random unit embeddings (2 targets)."""
    rng = np.random.default_rng(seed)
    signals = {
        "prompt_uncertainty": rng.random(n), "prediction_probability": rng.random(n),
        "perplexity": 1 + 10 * rng.random(n), "ifd": rng.random(n) * 2,
        "classification_entropy": np.where(np.arange(n) % 3 == 0, rng.random(n), np.nan),
        # training costs (raysys.training.data.task_costs); one task without examples
        "train_examples": np.where(np.arange(n) == 7, 0, 1 + np.arange(n) % 4).astype(float),
        "train_tokens": np.where(np.arange(n) == 7, 0, rng.integers(40, 400, n)).astype(float),
        "response_tokens": rng.integers(1, 120, n).astype(float),
    }
    from raysys.selection.taskmap import categorize

    return Candidates(
        task_ids=tuple(f"t{i:03d}" for i in range(n)), signals=signals,
        is_classification=(np.arange(n) % 3 == 0).astype(np.int8),
        answer_words=np.array([(i % 5) * 6.0 for i in range(n)]),  # 0, 6 | 12, 18 | 24 -> bins 0, 1, 2
        instructions=tuple(f"instruction {i}" for i in range(n)),
        category=categorize(signals["prompt_uncertainty"], signals["prediction_probability"]),
        embeddings=unit(rng.normal(size=(n, 8))), target_embeddings=unit(rng.normal(size=(2, 8))))


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_respects_budget_exclusions_and_seed(strategy):
    c = candidates()
    cfg = SelectConfig(strategy=strategy, budget=12, seed=3)
    excluded = {"t000", "t005", "t017", "t042"}
    a = select_tasks(c, cfg, excluded)
    assert len(a.task_ids) == 12 and len(set(a.task_ids)) == 12
    assert not excluded & set(a.task_ids)
    assert a.n_excluded == 4 and a.n_candidates == N - 4
    assert select_tasks(c, cfg, excluded).task_ids == a.task_ids  # a seed reproduces the selection
    assert [r["task_id"] for r in a.tasks] == list(a.task_ids) and [r["rank"] for r in a.tasks] == list(range(12))


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_respects_cls_ratio_and_strata(strategy):
    c = candidates()
    sel = select_tasks(c, SelectConfig(strategy=strategy, budget=20, cls_ratio=0.35, length_strata=True))
    chosen = np.array([c.task_ids.index(t) for t in sel.task_ids])
    assert len(set(sel.task_ids)) == 20
    assert int(c.is_classification[chosen].sum()) == 7  # round(0.35 x 20)
    quota = {s["name"]: s["quota"] for s in sel.strata}
    assert sum(quota.values()) == 20
    for name, q in quota.items():  # each stratum gets exactly its quota
        assert sum(r["stratum"] == name for r in sel.tasks) == q
    # every stratum's quota is proportional to its size within its cls group (largest remainder)
    for group, total in (("classification", 7), ("generative", 13)):
        parts = [s for s in sel.strata if s["name"].startswith(group)]
        assert [s["quota"] for s in parts] == allocate([s["candidates"] for s in parts], total)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("unit, budget", [("tokens", 3000), ("examples", 30)])
def test_a_budget_of_tokens_or_examples_is_filled_in_the_strategys_order(strategy, unit, budget):
    """Walking the strategy's whole order, a task is taken when its cost still fits: the
    selection's cost is at most the budget and within 2 % of it (many small tasks)."""
    c = candidates()
    cfg = SelectConfig(strategy=strategy, budget=budget, seed=3, budget_unit=unit)
    excluded = {"t000", "t005"}
    sel = select_tasks(c, cfg, excluded)
    left = c.subset([i for i, t in enumerate(c.task_ids) if t not in excluded])
    order = STRATEGIES[strategy](left, len(left), cfg, np.random.default_rng(3))
    cost = left.signals[f"train_{unit}"]
    want, room = [], float(budget)
    for i in order:
        if 0 < cost[i] <= room:
            want.append(left.task_ids[i])
            room -= cost[i]
    assert list(sel.task_ids) == want and "t007" not in want  # no examples: never taken
    spent = sum(cost[left.task_ids.index(t)] for t in want)
    assert 0.98 * budget <= spent <= budget
    data = sel.to_json()
    assert data["budget_unit"] == unit and data[f"selected_train_{unit}"] == spent
    assert data["selected_train_tokens"] == sum(r["train_tokens"] for r in data["tasks"])
    assert select_tasks(c, cfg, excluded).task_ids == sel.task_ids


def test_length_ranks_by_response_tokens_and_a_large_budget_takes_everything():
    c = candidates()
    sel = select_tasks(c, SelectConfig(strategy="length", budget=5))
    r = c.signals["response_tokens"]
    assert [r[c.task_ids.index(t)] for t in sel.task_ids] == sorted(r, reverse=True)[:5]
    everything = select_tasks(c, SelectConfig(strategy="random", budget=10**7, budget_unit="tokens"))
    assert len(everything.task_ids) == N - 1 and "all of them are selected" in everything.notes[0]
    with pytest.raises(ConfigError, match="cls_ratio and length_strata split a budget of tasks"):
        SelectConfig(budget_unit="tokens", cls_ratio=0.3)


def test_random_differs_across_seeds_and_covers_uniformly():
    c = candidates()
    a = select_tasks(c, SelectConfig(strategy="random", budget=10, seed=0)).task_ids
    b = select_tasks(c, SelectConfig(strategy="random", budget=10, seed=1)).task_ids
    assert a != b
    hits = np.zeros(N)
    for seed in range(300):
        for t in select_tasks(c, SelectConfig(strategy="random", budget=10, seed=seed)).task_ids:
            hits[int(t[1:])] += 1
    assert hits.min() > 0.4 * hits.mean() and hits.max() < 1.6 * hits.mean()  # ~50 each


def hand_table() -> Candidates:
    u = np.array([0.5, 0.1, 0.9, 0.3, 0.7, 0.2])
    p = np.array([0.2, 0.8, 0.6, 0.4, 0.1, 0.9])
    ppl = np.array([3.0, 1.0, 2.0, 6.0, 5.0, 4.0])
    ent = np.array([0.2, np.nan, 0.9, np.nan, 0.5, np.nan])
    ifd = np.array([1.1, 0.5, 0.7, 0.9, 1.3, np.nan])
    from raysys.selection.taskmap import categorize

    return Candidates(tuple("abcdef"), {"prompt_uncertainty": u, "prediction_probability": p, "perplexity": ppl,
                                        "classification_entropy": ent, "ifd": ifd},
                      category=categorize(u, p))


@pytest.mark.parametrize("strategy, expected", [
    ("prompt-uncertainty", "ceadfb"),
    ("perplexity-high", "defacb"),
    ("perplexity-low", "bcafed"),
    ("probability-high", "fbcdae"),
    ("probability-low", "eadcbf"),
    ("ifd", "eadcb"),  # f has no IFD: last
    ("entropy", "cea"),  # then the tasks without entropy in random order
    # Task Map of the table: Ambiguous = c, e (top third by u); of a, b, d, f: Easy = f, b; Difficult = a, d
    ("ambiguous", "ceadfb"),
    ("easy", "fb" + "cdae"),  # the category by p high, then the rest by p high
    ("difficult", "ad" + "ecbf"),  # the category by p low, then the rest by p low
])
def test_ranking_strategies_on_a_hand_built_table(strategy, expected):
    sel = select_tasks(hand_table(), SelectConfig(strategy=strategy, budget=6))
    assert "".join(sel.task_ids).startswith(expected)
    assert sorted(sel.task_ids) == list("abcdef")


def test_order_by_puts_nan_last_and_breaks_ties_by_seed():
    key = np.array([1.0, np.nan, 3.0, 3.0, 0.0])
    orders = {tuple(order_by(key, np.random.default_rng(s))) for s in range(20)}
    assert orders == {(2, 3, 0, 4, 1), (3, 2, 0, 4, 1)}  # ties both ways, NaN last
    assert tuple(order_by(key, np.random.default_rng(0), descending=False))[:2] == (4, 0)


def test_interleave_spreads_each_group_along_the_order():
    assert interleave([np.array([1, 2, 3, 4]), np.array([9, 8])]).tolist() == [1, 9, 2, 3, 8, 4]


def test_similarity_overall_and_per_target():
    emb = unit(np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0.95, 0.05], [0, 0, 1], [0.5, 0.5, 0]], float))
    targets = unit(np.array([[1, 0, 0], [0, 1, 0]], float))
    c = Candidates(tuple("abcdef"), embeddings=emb, target_embeddings=targets)
    overall = select_tasks(c, SelectConfig(strategy="similarity", budget=4)).task_ids
    assert set(overall[:2]) == {"a", "c"} and set(overall[2:]) == {"b", "d"}  # cos 1, then ~0.99
    per = select_tasks(c, SelectConfig(strategy="similarity", budget=4, similarity_mode="per-target")).task_ids
    assert per == ("a", "c", "b", "d")  # target 1's best, target 2's best, then their next
    mean = select_tasks(c, SelectConfig(strategy="similarity", budget=1, similarity_reduce="mean")).task_ids
    assert mean == ("f",)  # the only task close to both targets


def test_uncertainty_diverse_skips_near_duplicates_then_fills():
    emb = unit(np.array([[1, 0], [1, 0.01], [0, 1], [0.7, 0.7]], float))
    c = Candidates(tuple("abcd"), {"prompt_uncertainty": np.array([0.9, 0.8, 0.7, 0.1])}, embeddings=emb)
    cfg = SelectConfig(strategy="uncertainty-diverse", budget=3, diversity_threshold=0.95)
    assert select_tasks(c, cfg).task_ids == ("a", "c", "d")  # b is a near copy of a
    assert select_tasks(c, replace(cfg, budget=4)).task_ids == ("a", "c", "d", "b")  # b fills the budget last


def test_uncertainty_kcenter_takes_the_farthest_points():
    emb = unit(np.array([[1, 0, 0], [0.99, 0.1, 0], [0, 1, 0], [0, 0, 1], [0.6, 0.6, 0.1]], float))
    u = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    c = Candidates(tuple("abcde"), {"prompt_uncertainty": u}, embeddings=emb)
    sel = select_tasks(c, SelectConfig(strategy="uncertainty-kcenter", budget=3, candidate_factor=2)).task_ids
    assert sel == ("a", "c", "d")  # a (most uncertain), then the farthest, then the farthest from both
    # candidate_factor 1 keeps only the budget's most uncertain tasks
    assert set(select_tasks(c, SelectConfig(strategy="uncertainty-kcenter", budget=2, candidate_factor=1))
               .task_ids) == {"a", "b"}


@given(st.lists(st.integers(0, 50), min_size=1, max_size=8), st.integers(0, 200))
def test_allocate_is_proportional_and_within_sizes(sizes, budget):
    q = allocate(sizes, budget)
    total = sum(sizes)
    assert sum(q) == min(budget, total)
    for qi, s in zip(q, sizes):
        assert 0 <= qi <= s
        if total:
            exact = min(budget, total) * s / total
            assert math.floor(exact) <= qi <= math.ceil(exact)


def test_cls_quotas_make_up_a_short_group():
    assert cls_quotas(30, 70, 68, 24 / 68) == (24, 44)
    assert cls_quotas(3, 70, 20, 0.35) == (3, 17)
    assert cls_quotas(30, 5, 20, 0.35) == (15, 5)
    sel = select_tasks(candidates(n=9), SelectConfig(strategy="random", budget=8, cls_ratio=0.9))
    assert any("asks for 7 classification" in n for n in sel.notes)  # only 3 exist: 3 + 5, noted


def test_budget_larger_than_the_pool_takes_all_and_says_so():
    sel = select_tasks(candidates(n=10), SelectConfig(strategy="prompt-uncertainty", budget=50), {"t001"})
    assert len(sel.task_ids) == 9 and any("exceeds the 9 candidate" in n for n in sel.notes)


def test_unknown_classification_with_cls_ratio_is_a_clear_error():
    c = replace(candidates(n=6), is_classification=np.array([1, 0, -1, 0, 1, 0], np.int8))
    with pytest.raises(RaysysError, match="neither marked classification nor generative"):
        select_tasks(c, SelectConfig(strategy="random", budget=2, cls_ratio=0.5))


def test_selection_round_trips_and_feeds_the_next_round(tmp_path):
    c = candidates()
    first = select_tasks(c, SelectConfig(budget=10))
    write_selection(first, tmp_path / "round1.json")
    data = json.loads((tmp_path / "round1.json").read_text())
    assert data["strategy"] == "prompt-uncertainty" and data["seed"] == 0 and data["params"]["budget"] == 10
    assert data["tasks"][0]["prompt_uncertainty"] == pytest.approx(c.signals["prompt_uncertainty"].max())
    assert read_task_ids(tmp_path / "round1.json") == list(first.task_ids)
    second = select_tasks(c, SelectConfig(budget=10), read_task_ids(tmp_path / "round1.json"))
    assert not set(first.task_ids) & set(second.task_ids)
    # the second round continues the same ranking
    ranking = list(select_tasks(c, SelectConfig(budget=20)).task_ids)
    assert list(first.task_ids) + list(second.task_ids) == ranking
    (tmp_path / "bad.json").write_text('{"task_ids": [1]}')
    with pytest.raises(InvalidFile, match="task_ids\\[0\\]"):
        read_task_ids(tmp_path / "bad.json")


def _scores_file(path, ids, u=None, p=None, **extra):
    n = len(ids)
    cols = {"task_id": ids, "prompt_uncertainty": u if u is not None else [0.1] * n,
            "prediction_probability": p if p is not None else [0.5] * n, **extra}
    pq.write_table(pa.table(cols), path)
    return path


def _task(tid: str, out: str = "yes", cls: bool | None = True) -> Task:
    return Task(tid, f"Do {tid}.", (Instance("0", "x", (out,)),), is_classification=cls)


def test_candidates_from_scores_and_pool(tmp_path):
    s = _scores_file(tmp_path / "s.parquet", ["b", "a"], u=[0.2, 0.1])
    tasks = [_task("a", "one two three"), _task("b"), _task("c")]
    c, notes = build_candidates(s, tasks)
    assert c.task_ids == ("b", "a") and c.instructions == ("Do b.", "Do a.")
    assert c.answer_words.tolist() == [1.0, 3.0] and c.is_classification.tolist() == [1, 1]
    assert notes == ["1 pool task(s) have no score and are not candidates"]
    with pytest.raises(RaysysError, match="not in the pool"):
        build_candidates(s, [_task("a")])
    pq.write_table(pa.table({"task_id": ["a"]}), tmp_path / "y.parquet")
    with pytest.raises(InvalidFile, match="missing column"):
        build_candidates(tmp_path / "y.parquet", None)
    _scores_file(tmp_path / "d.parquet", ["a", "a"])
    with pytest.raises(InvalidFile, match="row 1: duplicate task_id 'a'"):
        build_candidates(tmp_path / "d.parquet", None)
    _scores_file(tmp_path / "n.parquet", ["a", "b"], u=[0.1, float("nan")])
    with pytest.raises(InvalidFile, match="row 1 .task 'b'.: prompt_uncertainty is not a finite"):
        build_candidates(tmp_path / "n.parquet", None)
    (tmp_path / "t.parquet").write_text("not parquet")
    with pytest.raises(InvalidFile, match="not a Parquet scores file"):
        build_candidates(tmp_path / "t.parquet", None)
