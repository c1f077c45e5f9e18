"""Prompt templates, pure: a task's definition, demonstrations and an instance input in,
prompt text out.

- "tk": the TK-Instruct (Super-NaturalInstructions) encoding: "Definition: ...", up to
  `demonstrations` positive examples, then "Now complete the following example -" with
  the instance input and "Output: ". Punctuation rule as in TK-Instruct: a "." is added
  after a definition, example input or output that does not end in punctuation.
- "alpaca": the Stanford Alpaca template (with or without an input section); it shows no
  demonstrations.
- "plain": the instruction, then "Input: ..." and "Output: " on lines of their own, with
  no header and no demonstrations: for small models trained from scratch on short
  synthetic prompts (the instruction-diversity experiments).

Every prompt is `prefix + suffix`: the prefix depends only on the task (definition and
demonstrations, shared by all of its instances, and the part instruction perturbations
change), the suffix only on the instance. Scoring relies on that split.
"""
from __future__ import annotations

import string
from typing import Sequence

from raysys.schema import Demonstration

TEMPLATES = ("tk", "alpaca", "plain")  # the names prompt_parts knows

ALPACA_HEADER_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
)
ALPACA_HEADER_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n"
)


def _punct(text: str) -> str:
    """TK-Instruct's rule: end with punctuation (add '.' when missing)."""
    return text if text and text[-1] in string.punctuation else text + "."


def tk_prefix(definition: str, demonstrations: Sequence[Demonstration] = (), n_demos: int = 2) -> str:
    out = "Definition: " + _punct(definition.strip()) + "\n\n"
    for idx, demo in enumerate(demonstrations[:n_demos]):
        out += f" Positive Example {idx + 1} -\n"
        out += "Input: " + _punct(demo.input.strip()) + "\n"
        out += " Output: " + _punct(demo.output.strip()) + "\n\n"
    return out


def tk_suffix(instance_input: str) -> str:
    return "Now complete the following example -\nInput: " + _punct(instance_input.strip()) + "\nOutput: "


def alpaca_prefix(instruction: str, has_input: bool) -> str:
    header = ALPACA_HEADER_INPUT if has_input else ALPACA_HEADER_NO_INPUT
    return header + "### Instruction:\n" + instruction + "\n\n"


def alpaca_suffix(instance_input: str) -> str:
    if instance_input:
        return "### Input:\n" + instance_input + "\n\n### Response:"
    return "### Response:"


def prompt_parts(
    template: str,
    definition: str,
    instance_input: str,
    demonstrations: Sequence[Demonstration] = (),
    n_demos: int = 2,
) -> tuple[str, str]:
    """(prefix, suffix) of the prompt for one instance; see the module docstring."""
    if template == "tk":
        return tk_prefix(definition, demonstrations, n_demos), tk_suffix(instance_input)
    if template == "alpaca":
        return alpaca_prefix(definition, bool(instance_input)), alpaca_suffix(instance_input)
    if template == "plain":
        return definition.strip() + "\n", "Input: " + instance_input + "\nOutput: "
    raise ValueError(f"unknown template {template!r}")


def format_prompt(
    template: str,
    definition: str,
    instance_input: str,
    demonstrations: Sequence[Demonstration] = (),
    n_demos: int = 2,
) -> str:
    prefix, suffix = prompt_parts(template, definition, instance_input, demonstrations, n_demos)
    return prefix + suffix
