"""The batched likelihood engine against the one-at-a-time reference (full logits)."""
from __future__ import annotations

import random

import numpy as np
import pytest

from raysys.scoring.likelihood import Budget, common_prefix_len, make_scorer
from raysys.scoring.reference import reference_mean_logprobs


def items(seed: int = 0):
    """Prompts in groups that share long prefixes (as perturbations of one task do),
    with targets of different lengths, an empty target and a group of one."""
    rng = random.Random(seed)
    words = "rewrite the leftmost ab with cd in the string below keep all other letters".split()
    prompts, targets, groups = [], [], []
    for g in range(5):
        definition = " ".join(rng.choice(words) for _ in range(rng.randint(3, 25)))
        for m in range(rng.choice([1, 3, 6])):
            inp = "".join(rng.choice("abcd") for _ in range(rng.randint(0, 20)))
            prompts.append(f"Definition: {definition}.\n\nNow complete -\nInput: {inp}\nOutput: ")
            targets.append("".join(rng.choice("abcd ") for _ in range(rng.choice([0, 1, 7, 19]))))
            groups.append(g)
    order = list(range(len(prompts)))
    rng.shuffle(order)  # members of a group need not be adjacent
    return [prompts[i] for i in order], [targets[i] for i in order], [groups[i] for i in order]


@pytest.mark.parametrize("budget", [Budget(), Budget(tokens=256, max_rows=3), Budget(tokens=128, logit_elements=4096)],
                         ids=["default", "small-batches", "tiny-logit-budget"])
@pytest.mark.parametrize("model", ["tiny_lm", "tiny_t5"])
def test_engine_matches_reference(model, budget, request):
    lm = request.getfixturevalue(model)
    prompts, targets, groups = items()
    ref = reference_mean_logprobs(lm.model, lm.tokenizer, lm.kind, prompts, targets)
    eng = make_scorer(lm.model, lm.tokenizer, lm.kind, budget).score(prompts, targets, groups)
    assert np.max(np.abs(np.exp(eng) - np.exp(ref))) < 1e-6
    assert np.max(np.abs(eng - ref)) < 1e-4
    ungrouped = make_scorer(lm.model, lm.tokenizer, lm.kind, budget).score(prompts, targets)
    assert np.max(np.abs(np.exp(ungrouped) - np.exp(ref))) < 1e-6


def test_prefixes_are_shared_and_logits_are_target_only(tiny_lm, monkeypatch):
    """Count the tokens the model is fed and the positions it projects on the vocabulary."""
    prompts, targets, groups = items(1)
    engine = make_scorer(tiny_lm.model, tiny_lm.tokenizer, "causal")
    fed, projected = [], []
    forward = tiny_lm.model.forward

    def spy(*args, **kwargs):
        ids = kwargs["input_ids"]
        fed.append(int(kwargs["attention_mask"][:, -ids.shape[1]:].sum()))
        out = forward(*args, **kwargs)
        projected.append(out.logits.numel() // out.logits.shape[-1])  # positions projected on the vocabulary
        return out

    monkeypatch.setattr(tiny_lm.model, "forward", spy)
    engine.score(prompts, targets, groups)
    tok = tiny_lm.tokenizer
    whole = sum(len(tok(p).input_ids) + len(tok(t, add_special_tokens=False).input_ids) + 1
                for p, t in zip(prompts, targets))
    n_targets = sum(len(tok(t, add_special_tokens=False).input_ids) + 1 for t in targets)
    assert sum(fed) < 0.7 * whole  # shared prefixes were encoded once per group
    assert sum(projected) <= n_targets + 2 * len(set(groups))  # targets, plus one per prefix-pass row


def test_fallback_without_logits_to_keep(tiny_lm):
    prompts, targets, groups = items(2)
    engine = make_scorer(tiny_lm.model, tiny_lm.tokenizer, "causal")
    a = engine.score(prompts, targets, groups)
    engine.inner.keep_mask = False
    b = engine.score(prompts, targets, groups)
    assert np.max(np.abs(a - b)) < 1e-5


def test_identical_items_get_identical_numbers(tiny_lm):
    prompts, targets, groups = items(3)
    engine = make_scorer(tiny_lm.model, tiny_lm.tokenizer, "causal")
    out = engine.score(prompts + prompts, targets + targets, groups + [g + 100 for g in groups])
    assert np.array_equal(out[: len(prompts)], out[len(prompts):])


def test_common_prefix_len():
    assert common_prefix_len([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert common_prefix_len([[5], [6]]) == 0
    assert common_prefix_len([[1, 2], [1, 2]]) == 2


def test_long_prompts_keep_their_last_tokens(tiny_lm):
    """A prompt over max_prompt_tokens is scored on its last tokens, exactly."""
    import torch

    tok, model = tiny_lm.tokenizer, tiny_lm.model
    prompts = ["Definition: " + "abc " * 40 + f"Input: {i}\nOutput: " for i in range(3)]
    targets = ["xy", "z", ""]
    m = 50
    engine = make_scorer(model, tok, "causal", max_prompt_tokens=m)
    got = engine.score(prompts, targets, [0, 0, 0])
    for k, (p, t) in enumerate(zip(prompts, targets)):
        ids = tok(p).input_ids[-m:]
        tgt = tok(t, add_special_tokens=False).input_ids + [tok.eos_token_id]
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=torch.tensor([ids + tgt])).logits[0].float(), -1)
        want = np.mean([lp[len(ids) - 1 + j, tgt[j]].item() for j in range(len(tgt))])
        assert abs(got[k] - want) < 1e-5
