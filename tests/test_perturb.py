"""Instruction perturbations: the method's word-dropout semantics, determinism, kinds."""
from __future__ import annotations

import random

import pytest

from raysys.perturb import EXTRANEOUS_WORDS, perturb_prompt_parts, perturb_text, rng_for
from raysys.schema import Demonstration

TEXT = "In this task you are given a  sentence.\nAnswer with the word that the pronoun refers to please"


def test_dropout_matches_the_method():
    """Independent re-implementation: keep a word when uniform(0,1) > rate, join with ' '."""
    for seed in range(20):
        expected_rng = random.Random(seed)
        expected = " ".join(w for w in TEXT.split() if expected_rng.random() > 0.2)
        got = perturb_text(TEXT, "dropout", 0.2, random.Random(seed))
        assert got == expected or (got == TEXT and expected == " ".join(TEXT.split()))


def test_rate_zero_keeps_the_text_exactly_and_rate_one_drops_all():
    assert perturb_text(TEXT, "dropout", 0.0, random.Random(1)) == TEXT  # spacing kept too
    assert perturb_text(TEXT, "dropout", 1.0, random.Random(1)) == ""
    assert perturb_text(TEXT, "mask", 1.0, random.Random(1)) == " ".join(["<mask>"] * len(TEXT.split()))


def test_other_kinds():
    words = TEXT.split()
    rep = perturb_text(TEXT, "repeat", 0.5, random.Random(3)).split()
    assert len(words) < len(rep) <= 2 * len(words) and set(rep) == set(words)
    ext = perturb_text(TEXT, "extraneous", 0.5, random.Random(3)).split()
    extra = list(ext)
    for w in words:
        extra.remove(w)
    assert extra and all(w in EXTRANEOUS_WORDS for w in extra)
    masked = perturb_text(TEXT, "mask", 0.5, random.Random(3), mask_token="[M]").split()
    assert len(masked) == len(words) and 0 < masked.count("[M]") < len(words)
    with pytest.raises(ValueError):
        perturb_text(TEXT, "shuffle", 0.5, random.Random(0))


def test_parts_deterministic_shared_and_demo_outputs_untouched():
    demos = (Demonstration("the cat sat on the mat today", "cat"), Demonstration("a dog ran far away now", "dog"))
    a = perturb_prompt_parts("t1", TEXT, demos, 5, seed=3, demonstration_inputs=True)
    assert a == perturb_prompt_parts("t1", TEXT, demos, 5, seed=3, demonstration_inputs=True)
    assert a != perturb_prompt_parts("t2", TEXT, demos, 5, seed=3, demonstration_inputs=True)
    assert a != perturb_prompt_parts("t1", TEXT, demos, 5, seed=4, demonstration_inputs=True)
    assert len(a) == 6 and a[0] == (TEXT, demos)
    assert len({d for d, _ in a[1:]}) > 1  # the k perturbations differ
    for _, ds in a:
        assert [d.output for d in ds] == ["cat", "dog"]
    assert any(ds[0].input != demos[0].input for _, ds in a[1:])
    b = perturb_prompt_parts("t1", TEXT, demos, 5, seed=3)
    assert all(ds == demos for _, ds in b) and [d for d, _ in b] == [d for d, _ in a]
    # j's RNG depends only on (seed, task_id, j)
    assert rng_for(3, "t1", 2).random() == rng_for(3, "t1", 2).random() != rng_for(3, "t1", 1).random()
