"""The chat template (`template: chat`): the model's own chat template around the TK or
Alpaca text, read from its tokenizer; scoring, evaluation and training data with it, each
checked against prompts written out by hand and a plain one-prompt-at-a-time reference.

The tiny model gets a ChatML-like template here (the real SmolLM2 has ChatML; its own
tests are with the imported model): `<s>` written by the template, `<|user|>` and
`<|assistant|>` turns, each closed by `</s>`, the tokenizer's eos.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from raysys.config import EvalConfig, GenerationConfig, PromptConfig, ScoringConfig, SynthConfig, TrainConfig
from raysys.errors import RaysysError
from raysys.pools.markov import generate
from raysys.prompts import Template, chat_frame, template_for, tk_prefix, tk_suffix
from raysys.scoring.reference import reference_mean_logprobs
from raysys.scoring.scorer import TaskScorer

sys.path.insert(0, str(Path(__file__).parent))
from conftest import run_cli
from test_scorer import greedy

HEAD, TAIL = "<|user|>\n", "</s>\n<|assistant|>\n"  # <s> left out: the tokenizer adds its own


def by_hand(definition: str, inp: str, demos=(), n: int = 0) -> str:
    """The chat prompt written out: head, the TK text without its trailing space, tail."""
    return HEAD + (tk_prefix(definition, demos, n) + tk_suffix(inp)).rstrip() + TAIL


def test_the_frame_is_read_from_the_template_and_keeps_the_prefix_split(chat_lm):
    frame = chat_frame(chat_lm.tokenizer)
    assert (frame.head, frame.tail, frame.end) == (HEAD, TAIL, "</s>\n")
    t = Template("chat", "tk", frame)
    assert t.text("Copy it", "abc") == by_hand("Copy it", "abc")
    (p1, s1), (p2, s2) = t.parts("Copy it", "one"), t.parts("Copy it", "two")
    assert p1 == p2 == HEAD + tk_prefix("Copy it", (), 2) and s1 != s2 and s1.endswith(TAIL)
    ids = chat_lm.tokenizer(t.text("Copy it", "abc")).input_ids
    assert ids[0] == chat_lm.tokenizer.bos_token_id and ids[1] != ids[0]  # one BOS, not two
    alp = template_for("chat", "alpaca", chat_lm.tokenizer)
    assert alp.text("Name a color.", "") == HEAD + "Below is an instruction that describes a task. Write a response " \
        "that appropriately completes the request.\n\n### Instruction:\nName a color.\n\n### Response:" + TAIL


@pytest.mark.parametrize("template, message", [
    (None, "has no chat template"),
    ("{% for m in messages %}{{ m['content'] | trim }}{% endfor %}", "changes the user's text"),
    ("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}<|end|>{% endfor %}", "not with the eos token"),
])
def test_unusable_chat_templates_are_clear_errors(chat_lm, template, message):
    tok = chat_lm.tokenizer
    saved = tok.chat_template
    try:
        tok.chat_template = template
        with pytest.raises(RaysysError, match=message):
            chat_frame(tok, "m")
    finally:
        tok.chat_template = saved


def test_scoring_with_the_chat_template_equals_a_plain_reference(chat_lm):
    cfg = ScoringConfig(instances=2, perturbations=2, seed=1, prompt=PromptConfig("chat", 0),
                        generation=GenerationConfig(max_new_tokens=5), entropy=False, ifd=False)
    tasks = generate(SynthConfig(rules=2, examples_per_rule=3, seed=5))
    rows, details = TaskScorer("", cfg, loaded=chat_lm).score(tasks, details=True)
    assert len(details) == 2 * 2 * 3
    for d in details:
        assert d["prompt"].startswith(HEAD) and d["prompt"].endswith(TAIL)
    for task, row in zip(tasks, rows):
        mine = [d for d in details if d["task_id"] == task.task_id]
        for d in mine:
            if d["perturbation"] == 0:  # the original prompt, written out by hand
                inst = next(i for i in task.instances if i.id == d["instance_id"])
                assert d["prompt"] == by_hand(task.instruction, inst.input)
                assert d["target"] == greedy(chat_lm, d["prompt"], 5)
        p = np.exp(reference_mean_logprobs(chat_lm.model, chat_lm.tokenizer, "causal", [d["prompt"] for d in mine],
                                           [d["target"] for d in mine]))
        assert np.max(np.abs(p - np.array([d["p"] for d in mine]))) < 1e-7
        p = p.reshape(-1, 3)  # (instance, j)
        assert abs(row["prompt_uncertainty"] - np.mean(np.abs(p[:, 1:] - p[:, :1]))) < 1e-7


def test_evaluation_and_training_data_use_the_chat_template(chat_lm):
    from raysys.evaluation.evaluator import Evaluator
    from raysys.training.data import encode, training_examples

    tasks = generate(SynthConfig(rules=2, examples_per_rule=2, seed=6))
    ev = Evaluator("", EvalConfig(instances=2, prompt=PromptConfig("chat", 0), generation=GenerationConfig(4)),
                   loaded=chat_lm)
    _, details = ev.process(tasks, details=True)
    for d in details:
        inst = next(i for t in tasks for i in t.instances if i.id == d["instance_id"])
        task = next(t for t in tasks if t.task_id == d["task_id"])
        assert d["prompt"] == by_hand(task.instruction, inst.input)
        assert d["prediction"] == greedy(chat_lm, d["prompt"], 4)
    cfg = TrainConfig(prompt=PromptConfig("chat", 0))
    template = template_for("chat", "tk", chat_lm.tokenizer)
    rows = training_examples(tasks, [tasks[0].task_id], cfg, template)
    inst = tasks[0].instances[0]
    assert rows[0]["prompt"] == by_hand(tasks[0].instruction, inst.input) and rows[0]["target"] == inst.outputs[0]
    ids, labels = encode(chat_lm.tokenizer, "causal", rows[0]["prompt"], rows[0]["target"], cfg)
    tok = chat_lm.tokenizer
    answer = tok(inst.outputs[0], add_special_tokens=False).input_ids + [tok.eos_token_id]  # the turn's close: eos
    assert [x for x in labels if x != -100] == answer and ids[-len(answer):] == answer
    with pytest.raises(ValueError, match="needs the model's ChatFrame"):
        training_examples(tasks, [tasks[0].task_id], cfg)  # chat without the model's frame: never silently plain


def test_cli_chat_without_a_chat_template_is_one_line(tiny_model_dir, chat_model, tmp_path):
    pool = tmp_path / "pool.parquet"
    from raysys.pools.canonical import write_parquet_tasks

    write_parquet_tasks(generate(SynthConfig(rules=2, examples_per_rule=1, seed=0)), pool)
    r = run_cli("score", "--pool", pool, "--model", tiny_model_dir, "--out", tmp_path / "s.parquet",
                "--template", "chat")
    assert r.returncode == 2 and "has no chat template" in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1
    r = run_cli("pool", "show", pool, "--template", "chat", "--model", chat_model, "--n", "1", "--demonstrations", "0")
    assert r.returncode == 0 and HEAD in r.stdout and TAIL.strip() in r.stdout, r.stderr
