"""Instruction perturbations, pure and deterministic from (seed, task_id, j).

All perturbations split the text on whitespace and re-join with single spaces; each word
is hit independently unless uniform(0, 1) > `rate`:

- dropout    : the word is dropped (kept when uniform(0, 1) > rate): the method's choice;
- mask       : the word is replaced by `mask_token`;
- repeat     : the word is written twice;
- extraneous : a word drawn from EXTRANEOUS_WORDS is inserted after the word.

`perturb_prompt_parts` perturbs a task's definition, and optionally its demonstration
inputs (never their outputs), once per j = 1..k; the same k perturbations are shared by
every instance of the task. j = 0 is the original text.

A conversation task has no definition: `perturb_turns` perturbs each instance's last user
turn (and its system turn, when asked; never the other turns), from (seed, task_id and
instance id, j).
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import replace
from typing import Sequence

from raysys.schema import Demonstration, Instance, Message, prompt_turns

KINDS = ("dropout", "mask", "repeat", "extraneous")
EXTRANEOUS_WORDS = ("the", "of", "and", "a", "to", "in", "is", "it", "that", "for", "on", "with", "as", "very",
                    "also", "just", "really", "then")


def rng_for(seed: int, task_id: str, j: int) -> random.Random:
    """An RNG that depends only on (seed, task_id, j), on every machine and process."""
    digest = hashlib.sha256(f"{seed}\x1f{task_id}\x1f{j}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def perturb_text(text: str, kind: str, rate: float, rng: random.Random, mask_token: str = "<mask>") -> str:
    """`text` perturbed word by word; when no word is hit, `text` itself (spacing kept), so
    that a perturbation that changes nothing gives exactly the original prompt."""
    if kind not in KINDS:
        raise ValueError(f"unknown perturbation {kind!r}; one of {KINDS}")
    words = text.split()
    out: list[str] = []
    hits = 0
    for w in words:
        hit = not (rng.random() > rate)  # the method keeps a word when uniform(0,1) > rate
        hits += hit
        if kind == "dropout":
            if not hit:
                out.append(w)
        elif kind == "mask":
            out.append(mask_token if hit else w)
        elif kind == "repeat":
            out.extend((w, w) if hit else (w,))
        elif kind == "extraneous":
            out.append(w)
            if hit:
                out.append(rng.choice(EXTRANEOUS_WORDS))
    return " ".join(out) if hits else text


def perturb_prompt_parts(
    task_id: str,
    definition: str,
    demonstrations: Sequence[Demonstration],
    k: int,
    *,
    kind: str = "dropout",
    rate: float = 0.2,
    seed: int = 0,
    demonstration_inputs: bool = False,
    mask_token: str = "<mask>",
) -> list[tuple[str, tuple[Demonstration, ...]]]:
    """[(definition_j, demonstrations_j) for j = 0..k]; j = 0 is the original."""
    out = [(definition, tuple(demonstrations))]
    for j in range(1, k + 1):
        rng = rng_for(seed, task_id, j)
        d = perturb_text(definition, kind, rate, rng, mask_token)
        demos = tuple(
            replace(demo, input=perturb_text(demo.input, kind, rate, rng, mask_token)) if demonstration_inputs else demo
            for demo in demonstrations
        )
        out.append((d, demos))
    return out


def perturb_turns(
    task_id: str,
    inst: Instance,
    k: int,
    *,
    kind: str = "dropout",
    rate: float = 0.2,
    seed: int = 0,
    system: bool = False,
    mask_token: str = "<mask>",
) -> tuple[tuple[Message, ...], ...]:
    """A conversation instance's prompt turns for j = 0..k (raysys.schema.prompt_turns); j = 0
    is the original. The last user turn is perturbed first, so that `system` leaves it as
    it is without."""
    out = [prompt_turns(inst)]
    for j in range(1, k + 1):
        rng = rng_for(seed, f"{task_id}\x1f{inst.id}", j)
        turns = prompt_turns(inst, perturb_text(inst.input, kind, rate, rng, mask_token))
        if system and turns[0].role == "system":
            turns = (Message("system", perturb_text(turns[0].content, kind, rate, rng, mask_token)), *turns[1:])
        out.append(turns)
    return tuple(out)
