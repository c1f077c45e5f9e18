"""Pairwise judging: score parsing, the two-order verdict that cancels position bias, and
`raysys compare` end to end with a judge model whose reply is known by construction."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import run_cli

from raysys.config import SynthConfig
from raysys.evaluation.pairwise import parse_scores, tally, verdict
from raysys.pools.synthetic import write_synthetic_pool


def test_parse_scores():
    assert parse_scores("8 6\nbecause ...") == (8.0, 6.0)
    assert parse_scores("\n  7.5, 9 \nx") == (7.5, 9.0)
    assert parse_scores("Assistant 1 is better") is None and parse_scores("") is None


def test_verdict_sums_both_orders():
    # A first: A 8, B 6; B first: B 7, A 5 -> A 13 vs B 13: a tie
    assert verdict((8, 6), (7, 5)) == "tie"
    assert verdict((9, 2), (3, 8)) == "win"  # A 17 vs B 5
    assert verdict((6, 7), (8, 6)) == "lose"  # A 12 vs B 15
    assert verdict((10, 1), (10, 1)) == "tie"  # a judge that always prefers the first answer: bias cancels
    assert verdict(None, (1, 2)) == "invalid"
    assert tally(["win", "win", "lose", "tie", "invalid"]) == {"win": 2, "lose": 1, "tie": 1, "invalid": 1,
                                                              "pairs": 5, "net_wins": 1}


def _first_answer_judge(base, out):
    """The tiny Llama rewired so that greedy decoding after the prompt always replies '9 1' then
    EOS: attention and MLP outputs are zeroed, so the next token depends on the current one
    only (one-hot embeddings, an lm_head row per transition). It always prefers Assistant 1."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    model.config.tie_word_embeddings = False
    h, v = model.config.hidden_size, model.config.vocab_size
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(torch.eye(v, h))
        model.lm_head = torch.nn.Linear(h, v, bias=False)
        model.lm_head.weight.zero_()
        ids = {c: tok.convert_tokens_to_ids(c) for c in "9 1"}
        ids["end"] = tok("x.\n\n").input_ids[-1]  # the judge prompt's last token, as this tokenizer reads it
        for a, b in (("end", "9"), ("9", " "), (" ", "1")):
            model.lm_head.weight[ids[b], ids[a]] = 1.0
        model.lm_head.weight[tok.eos_token_id, ids["1"]] = 1.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.mark.ray
def test_compare_with_a_position_biased_judge_gives_only_ties(tiny_model_dir, tmp_path):
    judge = _first_answer_judge(tiny_model_dir, tmp_path / "judge")
    pool = tmp_path / "pool.parquet"
    write_synthetic_pool(SynthConfig(rules=3, examples_per_rule=2, seed=5), pool)
    from raysys.config import TinyConfig
    from raysys.models import init_tiny

    other = init_tiny(tmp_path / "other", TinyConfig(seed=7))
    r = run_cli("compare", "--pool", pool, "--model-a", tiny_model_dir, "--model-b", other, "--judge", judge,
                "--out", tmp_path / "pairwise.json", "--instances", "2", "--max-new-tokens", "4",
                "--demonstrations", "0", "--judge-max-new-tokens", "6")
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads((tmp_path / "pairwise.json").read_text())
    assert out["pairs"] == 6 and out["tie"] == 6 and out["net_wins"] == 0 and out["invalid"] == 0
    assert all(p["judge_a_first"] == "9 1" == p["judge_b_first"] for p in out["pairs_detail"])
    assert "6 ties" in r.stdout
