"""The pure half of scoring (raysys.scoring.items) on hand-made tasks, without a model:
the layout of the items (counts, groups, index matrices, label and IFD items) and the
aggregation of known log-probabilities into hand-computed U, p, perplexity, entropy, IFD."""
from __future__ import annotations

import math

import numpy as np
import pytest

from raysys.config import PromptConfig, ScoringConfig
from raysys.prompts import FittedPrompt, Template, format_prompt
from raysys.schema import Demonstration, Instance, Task
from raysys.scoring.items import (
    DETAIL_COLUMNS,
    SCORE_COLUMNS,
    TaskPrompts,
    build_items,
    detail_rows,
    label_set,
    plan_task,
    task_rows,
)

CFG = ScoringConfig(instances=2, perturbations=2, drop_rate=0.5, seed=3, prompt=PromptConfig("tk", demonstrations=2))
CLS = Task("cls", "Answer yes or no to the question about the given sentence.",
           (Instance("a", "Is the sky blue?", ("yes",)), Instance("b", "Is fire cold?", ("no",)),
            Instance("c", "Is ice cold?", ("Yes ",))),
           demonstrations=(Demonstration("Is water wet?", "yes"), Demonstration("Is snow hot?", "no")),
           is_classification=True)
GEN = Task("gen", "Write the input backwards.", (Instance("x", "abc", ("cba",)),))
ALONE = "<s>"


def fitted(n_demos: int, truncated: bool = False) -> FittedPrompt:
    return FittedPrompt(n_demos, "", (), truncated)  # the text and ids are not used by build_items


@pytest.fixture
def batch():
    plans = [plan_task(CLS, CFG), plan_task(GEN, CFG)]
    return build_items(plans, [fitted(2), fitted(1), fitted(0, truncated=True)], ["y0", "y1", "yb"], ALONE)


def test_plan_samples_instances_and_labels():
    plan = plan_task(CLS, CFG)
    ids = [i.id for i in plan.instances]
    assert len(ids) == 2 and ids == sorted(ids) and set(ids) <= {"a", "b", "c"}  # file order
    assert plan_task(CLS, CFG).instances == plan.instances  # deterministic in (seed, task_id)
    assert plan.labels == ("yes", "no")  # "Yes " is the same label, first spelling kept
    assert len(plan.prompts.parts) == CFG.perturbations + 1 and plan.prompts.parts[0][0] == CLS.instruction
    assert plan_task(GEN, CFG).labels == ()
    assert plan_task(CLS, ScoringConfig(entropy=False)).labels == ()
    assert label_set(CLS, max_labels=2) == ["yes", "no"] and label_set(CLS, max_labels=1) == []
    assert label_set(Task("one", "d", (Instance("a", "x", ("same",)),), is_classification=True), 10) == []


def test_item_layout(batch):
    a, g = batch.tasks
    items = batch.items
    # cls: 2 instances x 3 prompts + 2 x 2 label items + 2 alone; gen: 1 x 3 + 1 alone
    assert len(items) == 12 + 4
    assert a.perturbed.tolist() == [[0, 6, 8], [3, 7, 9]]
    assert a.label_items.tolist() == [[1, 2], [4, 5]]
    assert a.alone.tolist() == [10, 11]
    assert g.perturbed.tolist() == [[12, 13, 14]] and g.label_items.shape == (1, 0) and g.alone.tolist() == [15]
    # one group per (task, j), the label items in their instance's j = 0 group; one per alone item
    assert list(items.groups) == [0] * 6 + [1, 1, 2, 2, 3, 4, 5, 6, 7, 8]
    assert (a.n_demos, a.answers, a.truncated, a.perturbations) == ((2, 1), ("y0", "y1"), 0, 2)
    assert (g.n_demos, g.answers, g.truncated) == ((0,), ("yb",), 1)


def test_item_contents(batch):
    a, _ = batch.tasks
    items, plan = batch.items, a.plan
    for r, inst in enumerate(plan.instances):
        for j, (definition, demos) in enumerate(plan.prompts.parts):
            k = a.perturbed[r, j]
            assert items.prompts[k] == format_prompt("tk", definition, inst.input, demos, a.n_demos[r])
            assert items.targets[k] == a.answers[r]
        for c, label in enumerate(plan.labels):
            assert items.prompts[a.label_items[r, c]] == items.prompts[a.perturbed[r, 0]]
            assert items.targets[a.label_items[r, c]] == label
        assert (items.prompts[a.alone[r]], items.targets[a.alone[r]]) == (ALONE, a.answers[r])
    first = items.prompts[a.perturbed[0, 0]]
    second = items.prompts[a.perturbed[1, 0]]
    assert "Positive Example 2" in first and "Positive Example 2" not in second and "Positive Example 1" in second
    assert items.prompts[a.perturbed[0, 1]] != first  # rate 0.5 drops words of a 10-word definition


def test_without_ifd_there_are_no_alone_items():
    b = build_items([plan_task(GEN, CFG)], [fitted(0)], ["y"], None)
    assert len(b.items) == 3 and b.tasks[0].alone is None
    assert math.isnan(task_rows(b, np.zeros(3))[0]["ifd"])


def test_counts_must_match():
    with pytest.raises(ValueError, match="3 instances"):
        build_items([plan_task(CLS, CFG), plan_task(GEN, CFG)], [fitted(0)] * 2, ["y"] * 3, None)
    b = build_items([plan_task(GEN, CFG)], [fitted(0)], ["y"], None)
    with pytest.raises(ValueError, match="2 log-probabilities for 3 items"):
        task_rows(b, np.zeros(2))


def test_aggregation_of_known_log_probs(batch):
    a, g = batch.tasks
    logp = np.full(len(batch.items), np.nan)
    p = np.array([[0.5, 0.4, 0.7], [0.2, 0.2, 0.1]])
    logp[a.perturbed] = np.log(p)
    logp[a.label_items] = np.log([[0.1, 0.1], [0.1, 0.3]])  # normalised: (1/2, 1/2) and (1/4, 3/4)
    logp[a.alone] = np.log([0.25, 0.4])
    logp[g.perturbed] = np.log([[0.9, 0.9, 0.6]])
    logp[g.alone] = np.log([0.3])
    rows = task_rows(batch, logp)
    assert [tuple(r) for r in rows] == [SCORE_COLUMNS] * 2
    r = rows[0]
    assert r["prompt_uncertainty"] == pytest.approx((0.1 + 0.2 + 0.0 + 0.1) / 4)
    assert r["prediction_probability"] == pytest.approx(0.35)
    assert r["perplexity"] == pytest.approx((1 / 0.5 + 1 / 0.2) / 2)
    assert r["classification_entropy"] == pytest.approx((math.log(2) - 0.25 * math.log(0.25) - 0.75 * math.log(0.75))
                                                        / 2)
    assert r["ifd"] == pytest.approx((0.25 / 0.5 + 0.4 / 0.2) / 2)  # PPL(y | x) / PPL(y) = p(y) / p(y | x)
    assert (r["n_instances"], r["n_instances_total"], r["n_perturbations"], r["n_labels"], r["n_truncated"]) == \
        (2, 3, 2, 2, 0)
    assert r["is_classification"] is True and r["mean_answer_chars"] == 2.0
    r = rows[1]
    assert r["prompt_uncertainty"] == pytest.approx(0.15) and r["prediction_probability"] == pytest.approx(0.9)
    assert math.isnan(r["classification_entropy"]) and r["ifd"] == pytest.approx(0.3 / 0.9)
    assert (r["n_labels"], r["n_truncated"], r["task_id"]) == (0, 1, "gen")


def test_detail_rows(batch):
    logp = np.log(np.linspace(0.05, 0.8, len(batch.items)))
    details = detail_rows(batch, logp)
    assert len(details) == 2 * 3 + 3 and all(tuple(d) == DETAIL_COLUMNS for d in details)
    a = batch.tasks[0]
    mine = [d for d in details if d["task_id"] == "cls"]
    assert [(d["instance_id"], d["perturbation"]) for d in mine] == [
        (i.id, j) for i in a.plan.instances for j in range(3)]
    for d, k in zip(mine, a.perturbed.reshape(-1)):
        assert d["p"] == pytest.approx(math.exp(logp[k])) and d["prompt"] == batch.items.prompts[k]


def test_original_prompts_are_the_unperturbed_ones():
    inst = CLS.instances[0]
    assert TaskPrompts.original(CLS, Template("tk")).text(0, inst, 1) == format_prompt(
        "tk", CLS.instruction, inst.input, CLS.demonstrations, 1)
    assert plan_task(CLS, CFG).prompts.text(0, inst, 2) == TaskPrompts.original(CLS, Template("tk")).text(0, inst, 2)
