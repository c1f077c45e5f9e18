"""The built-in tiny model and model loading."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from raysys.config import TinyConfig
from raysys.errors import ConfigError, InvalidFile, RaysysError
from raysys.models import BOS_ID, EOS_ID, PAD_ID, init_tiny, load_model


def test_tiny_llama_round_trips_through_auto_classes(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert type(model).__name__ == "LlamaForCausalLM"
    text = 'Replace "ab" with "c".\nInput: xaby\tOutput: '
    ids = tok(text).input_ids
    assert ids[0] == BOS_ID and len(ids) == len(text) + 1  # one token per character
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok("ab", add_special_tokens=False).input_ids == ids[10:12]  # after <s> and `Replace "`
    assert (tok.eos_token_id, tok.pad_token_id) == (EOS_ID, PAD_ID)
    assert tok.decode(tok("é").input_ids, skip_special_tokens=False) == "<s><unk>"
    # the reloaded model computes the same logits as the loader's
    lm = load_model(str(tiny_model_dir))
    x = torch.tensor([ids])
    with torch.no_grad():
        assert torch.equal(model(x).logits, lm.model(x).logits)
    assert lm.kind == "causal" and lm.tokenizer.pad_token_id == PAD_ID


def test_tiny_t5_round_trips(tmp_path):
    out = init_tiny(tmp_path / "t5", TinyConfig(arch="t5", layers=2))
    model = AutoModelForSeq2SeqLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert type(model).__name__ == "T5ForConditionalGeneration"
    assert tok("ab").input_ids == tok("ab", add_special_tokens=False).input_ids + [EOS_ID]
    lm = load_model(str(out))
    assert lm.kind == "seq2seq"
    enc = tok(["abc"], return_tensors="pt")
    labels = torch.tensor([[14, 15, EOS_ID]])
    with torch.no_grad():
        loss = lm.model(**enc, labels=labels).loss
    assert torch.isfinite(loss)


def test_tiny_is_deterministic_in_seed(tmp_path):
    a = init_tiny(tmp_path / "a", TinyConfig(seed=3, layers=1))
    b = init_tiny(tmp_path / "b", TinyConfig(seed=3, layers=1))
    c = init_tiny(tmp_path / "c", TinyConfig(seed=4, layers=1))
    wa, wb, wc = (AutoModelForCausalLM.from_pretrained(p).state_dict() for p in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_greedy_generation_runs(tiny_model_dir):
    lm = load_model(str(tiny_model_dir))
    enc = lm.tokenizer("Input: ab", return_tensors="pt")
    out = lm.model.generate(**enc, max_new_tokens=4, do_sample=False)
    assert out.shape == (1, enc.input_ids.shape[1] + 4) or out[0, -1].item() == EOS_ID


def test_init_tiny_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "keep.txt").write_text("x")
    with pytest.raises(RaysysError, match="not empty"):
        init_tiny(tmp_path / "m")
    assert (tmp_path / "m" / "keep.txt").read_text() == "x"


@pytest.mark.parametrize("bad", [{"arch": "gpt"}, {"hidden_size": 130, "heads": 4}, {"layers": 0}])
def test_bad_tiny_config(bad):
    with pytest.raises(ConfigError):
        TinyConfig(**bad)


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(InvalidFile, match="model folder not found"):
        load_model(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidFile, match="no config.json"):
        load_model(str(tmp_path / "empty"))


def test_remote_code_is_off_unless_asked(tmp_path, tiny_model_dir):
    """A folder whose config points at shipped code is refused, and the code never runs."""
    import shutil

    folder = tmp_path / "remote"
    shutil.copytree(tiny_model_dir, folder)
    marker = tmp_path / "code-ran"
    (folder / "custom_config.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import LlamaConfig\n"
        "class CustomConfig(LlamaConfig):\n    model_type = 'raysys_custom'\n"
    )
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_type"] = "raysys_custom"
    cfg["auto_map"] = {"AutoConfig": "custom_config.CustomConfig"}
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(RaysysError, match="cannot load model"):
        load_model(str(folder))
    assert not marker.exists()
