"""Prompt templates against hand-written expected strings."""
from __future__ import annotations

from raysys.prompts import format_prompt, prompt_parts
from raysys.schema import Demonstration

DEMOS = (Demonstration("the cat sat", "cat"), Demonstration("a dog ran!", "dog"), Demonstration("x", "y"))


def test_tk_instruct_format():
    got = format_prompt("tk", "Find the animal ", "the cow mooed", DEMOS, n_demos=2)
    expected = (
        "Definition: Find the animal.\n\n"
        " Positive Example 1 -\nInput: the cat sat.\n Output: cat.\n\n"
        " Positive Example 2 -\nInput: a dog ran!\n Output: dog.\n\n"
        "Now complete the following example -\nInput: the cow mooed.\nOutput: "
    )
    assert got == expected


def test_tk_zero_demos_and_punctuation_kept():
    got = format_prompt("tk", "Answer yes or no?", "Is it?", DEMOS, n_demos=0)
    assert got == "Definition: Answer yes or no?\n\nNow complete the following example -\nInput: Is it?\nOutput: "


def test_alpaca_format_with_and_without_input():
    with_input = format_prompt("alpaca", "Translate to French.", "cat")
    assert with_input == (
        "Below is an instruction that describes a task, paired with an input that provides further "
        "context. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nTranslate to French.\n\n### Input:\ncat\n\n### Response:"
    )
    without = format_prompt("alpaca", "Name a color.", "")
    assert without == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nName a color.\n\n### Response:"
    )


def test_prefix_is_shared_by_instances_and_suffix_holds_the_input():
    p1, s1 = prompt_parts("tk", "Do it.", "one", DEMOS)
    p2, s2 = prompt_parts("tk", "Do it.", "two", DEMOS)
    assert p1 == p2 and "one" in s1 and "two" in s2
    assert "Do it." not in s1


def test_plain_template():
    prefix, suffix = prompt_parts("plain", "ab -> c", "xaby", DEMOS)
    assert prefix + suffix == format_prompt("plain", "ab -> c", "xaby", DEMOS) == "ab -> c\nInput: xaby\nOutput: "
