"""The real model (SmolLM2-135M-Instruct, imported offline) scored with its own chat
template: `raysys score --template chat` on real NIV2 tasks, every p in --details against
a straightforward reference: plain transformers, one prompt at a time, full logits,
`tokenizer(prompt).input_ids`, and the engine's target contract (the answer's tokens
alone, then eos = <|im_end|>, which closes the assistant's turn)."""
from __future__ import annotations

import math

import pyarrow.parquet as pq
import pytest
import torch
from conftest import run_cli

TASKS = ["task1393_superglue_copa_text_completion", "task664_mmmlu_answer_generation_abstract_algebra"]


@pytest.fixture(scope="module")
def niv2_pair(shared_data, tmp_path_factory):
    from raysys.pools.canonical import write_parquet_tasks
    from raysys.pools.load import load_pool

    tasks = [t for t in load_pool(shared_data / "niv2").tasks if t.task_id in TASKS]
    path = tmp_path_factory.mktemp("real") / "pool.parquet"
    write_parquet_tasks(tasks, path)
    return path


@torch.inference_mode()
def reference_p(model, tok, prompt: str, target: str) -> float:
    p_ids = tok(prompt).input_ids
    t_ids = tok(target, add_special_tokens=False).input_ids + [tok.eos_token_id]
    ids = torch.tensor([p_ids + t_ids])
    n = len(p_ids)
    logits = model(input_ids=ids).logits[0, n - 1: n - 1 + len(t_ids)]  # the positions that predict the target
    logp = torch.log_softmax(logits.double(), dim=-1)
    return math.exp(sum(float(logp[i, t]) for i, t in enumerate(t_ids)) / len(t_ids))


def test_score_with_the_chat_template_equals_a_plain_reference(real_model, niv2_pair, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, details = tmp_path / "scores.parquet", tmp_path / "details.parquet"
    r = run_cli("score", "--pool", niv2_pair, "--model", real_model, "--out", out, "--details", details,
                "--template", "chat", "--instances", "2", "--perturbations", "2", "--max-new-tokens", "8",
                "--no-entropy", "--no-ifd", "--actors", "1", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = pq.read_table(details).to_pylist()
    assert len(rows) == len(TASKS) * 2 * 3 and {r["task_id"] for r in rows} == set(TASKS)
    tok = AutoTokenizer.from_pretrained(real_model)
    model = AutoModelForCausalLM.from_pretrained(real_model, dtype=torch.float32).eval()
    assert tok.eos_token == "<|im_end|>"
    for row in rows:
        prompt = row["prompt"]
        assert prompt.startswith("<|im_start|>system\n") and "<|im_start|>user\nDefinition: " in prompt
        assert prompt.endswith("Output:<|im_end|>\n<|im_start|>assistant\n")
        assert abs(reference_p(model, tok, prompt, row["target"]) - row["p"]) < 1e-5, row["prompt"][-200:]
    scores = pq.read_table(out).to_pylist()
    assert [s["task_id"] for s in scores] == [t for t in TASKS if t in {s["task_id"] for s in scores}]
    assert all(0.0 < s["prediction_probability"] <= 1.0 for s in scores)


def test_the_decode_scores_its_own_answer_as_a_plain_forward_does(real_model, niv2_pair):
    """ModelRunner.generate_scored on SmolLM2: each answer's likelihood, taken from the
    greedy decode's logits (its answer ended by EOS, or cut at max_new_tokens and EOS's
    log-probability from one step more), equals the plain one-at-a-time reference; the
    answers are those of a decode without it. Then the scorer with and without decode_p0:
    the same answers, every p within 1e-5."""
    import dataclasses

    from raysys.config import GenerationConfig, PromptConfig, ScoringConfig
    from raysys.models import load_model
    from raysys.pools.load import load_pool
    from raysys.scoring.items import TaskPrompts
    from raysys.scoring.scorer import TaskScorer

    lm = load_model(str(real_model), dtype="float32", device="cpu")
    cfg = ScoringConfig(instances=3, perturbations=2, entropy=False, ifd=False, prompt=PromptConfig("chat", 0),
                        generation=GenerationConfig(max_new_tokens=6, batch=4))
    tasks = load_pool(niv2_pair).tasks
    scorer = TaskScorer("", cfg, loaded=lm, device="cpu")
    texts = [TaskPrompts.original(t, scorer.template).text(0, i, 0) for t in tasks for i in t.instances[:4]]
    prompts = [lm.tokenizer(text).input_ids for text in texts]
    answers, _, _, scored = scorer.runner.generate_scored(prompts, embed=False)
    assert answers == scorer.runner.generate_embedded(prompts, embed=False)[0]
    lengths = set()
    for text, y, got in zip(texts, answers, scored):
        assert got is not None
        lengths.add(len(got[0]) - 1)
        assert got[0] == lm.tokenizer(y, add_special_tokens=False).input_ids + [lm.tokenizer.eos_token_id]
        assert abs(math.exp(got[1]) - reference_p(lm.model, lm.tokenizer, text, y)) < 1e-5
    assert min(lengths) < 6 and max(lengths) == 6  # answers ended by EOS and answers cut at the cap
    on = scorer.score(tasks, True)[1]
    off = TaskScorer("", dataclasses.replace(cfg, decode_p0=False), loaded=lm, device="cpu").score(tasks, True)[1]
    assert [d["target"] for d in on] == [d["target"] for d in off]
    assert max(abs(a["p"] - b["p"]) for a, b in zip(on, off)) < 1e-5


def test_a_conversation_is_scored_under_smollm2s_own_chat_template(real_model):
    """A multi-turn conversation with a system turn, and one without (SmolLM2's template then
    writes its own system turn): the prompts are the tokenizer's apply_chat_template with
    the generation prompt, the last user turn perturbed, every p against the reference."""
    from raysys.config import GenerationConfig, ScoringConfig
    from raysys.models import load_model
    from raysys.schema import Instance, Message, Task
    from raysys.scoring.scorer import TaskScorer

    system, first = Message("system", "Answer briefly."), Message("user", "Name a planet near the sun.")
    tasks = [Task("multi", "", (Instance("m0", "And the largest planet of all?", ("Jupiter",),
                                         (system, first, Message("assistant", "Mercury."))),), conversation=True),
             Task("single", "", (Instance("s0", "What is the capital city of France?", ("Paris",)),),
                  conversation=True)]
    lm = load_model(str(real_model))
    cfg = ScoringConfig(instances=1, perturbations=2, drop_rate=0.5, seed=3, entropy=False, ifd=False,
                        generation=GenerationConfig(max_new_tokens=6))
    rows, details = TaskScorer("", cfg, loaded=lm).score(tasks, details=True)
    tok = lm.tokenizer
    for task in tasks:
        inst = task.instances[0]
        mine = [d for d in details if d["task_id"] == task.task_id]
        turns = [{"role": m.role, "content": m.content} for m in inst.context]
        original = tok.apply_chat_template(turns + [{"role": "user", "content": inst.input}], tokenize=False,
                                           add_generation_prompt=True)
        assert mine[0]["prompt"] == original and original.endswith("<|im_start|>assistant\n")
        assert original.startswith("<|im_start|>system\n" + ("Answer briefly." if inst.context else "You are"))
        for d in mine[1:]:  # perturbed: the turns before the last user turn stay as they are
            assert d["prompt"].rsplit("<|im_start|>user\n", 1)[0] == original.rsplit("<|im_start|>user\n", 1)[0]
        assert any(d["prompt"] != original for d in mine[1:])
        for d in mine:
            assert abs(reference_p(lm.model, tok, d["prompt"], d["target"]) - d["p"]) < 1e-5
    assert all(0.0 <= r["prompt_uncertainty"] < 1.0 for r in rows)
