"""Loading Hugging Face models and tokenizers, and the built-in tiny model.

`load_model` loads a causal LM or a seq2seq model (T5 and kin, told apart by the
config's `is_encoder_decoder`) with its tokenizer from a local folder, or from a hub
name where the machine has access. `trust_remote_code` stays off unless asked for.

`init_tiny` writes the built-in tiny model: a small, randomly initialised Llama (or T5)
with a character-level tokenizer built offline, saved as an ordinary HF folder so every
later stage treats it like any other model. Characters outside printable ASCII map to
<unk>; the tokenizer adds <s> in front of causal prompts and </s> after T5 inputs, like
the real tokenizers of those families.
"""
from __future__ import annotations

import os
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from raysys.config import TinyConfig
from raysys.errors import InvalidFile, RaysysError
from raysys.io import atomic_dir
from raysys.prompts import Template, template_for

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(4)
CHARS = tuple(c for c in string.printable if c not in "\x0b\x0c\r")


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    kind: str  # "causal" | "seq2seq"
    name: str  # the path or hub name it came from


def quiet_deepspeed() -> None:
    """transformers imports DeepSpeed when it is installed, and DeepSpeed warns on every
    CPU-only machine that it found no GPU; name the CPU accelerator there so it stays quiet."""
    if "DS_ACCELERATOR" not in os.environ:
        import torch

        if not torch.cuda.is_available():
            os.environ["DS_ACCELERATOR"] = "cpu"


def char_tokenizer(arch: str = "llama", max_length: int = 2048):
    """A character-level PreTrainedTokenizerFast built in-process (no download)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + CHARS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")  # one char per token
    tok.decoder = decoders.Fuse()  # decode joins characters without spaces
    if arch == "t5":
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", EOS_ID)]
        )
    else:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", BOS_ID)]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="<pad>", model_max_length=max_length,
    )


def tiny_model(cfg: TinyConfig):
    """A randomly initialised model of `cfg`'s shape (deterministic in cfg.seed)."""
    quiet_deepspeed()
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

    vocab_size = 128  # len(SPECIALS + CHARS) = 104, rounded up
    torch.manual_seed(cfg.seed)
    if cfg.arch == "t5":
        config = T5Config(
            vocab_size=vocab_size, d_model=cfg.hidden_size, d_kv=cfg.hidden_size // cfg.heads,
            d_ff=cfg.intermediate_size, num_layers=cfg.layers, num_decoder_layers=cfg.layers,
            num_heads=cfg.heads, pad_token_id=PAD_ID, eos_token_id=EOS_ID,
            decoder_start_token_id=PAD_ID, tie_word_embeddings=True,
        )
        return T5ForConditionalGeneration(config)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
        max_position_embeddings=cfg.max_positions, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
        pad_token_id=PAD_ID, tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def init_tiny(out: str | os.PathLike, cfg: TinyConfig = TinyConfig()) -> Path:
    """Write the tiny model and its tokenizer to `out` (atomically: a finished folder or none)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise RaysysError(f"{out}: folder exists and is not empty; choose another --out or remove it")
    with atomic_dir(out) as tmp:
        model = tiny_model(cfg)
        model.generation_config.pad_token_id = PAD_ID
        model.save_pretrained(tmp)
        char_tokenizer(cfg.arch, cfg.max_positions).save_pretrained(tmp)
    return out


def _is_local(name: str) -> bool:
    return Path(name).exists() or name.startswith((".", "/", "~")) or os.sep + os.sep in name


def resolved(name: str) -> str:
    """A local model folder as an absolute path (workers and actors run elsewhere: Ray
    Train's in its run's folder), a hub name as it is."""
    return os.path.abspath(os.path.expanduser(name)) if _is_local(name) else name


def check_model_path(name: str, weights: bool = True) -> None:
    """Clear errors, before any actor or worker starts, for a local model folder that is
    missing, not a Hugging Face folder, or whose config or weights cannot load: config.json
    must be a JSON object with a model_type; safetensors files must be whole (their header
    parses and every tensor's bytes are in the file); pickled weights (pytorch_model*.bin,
    only where no safetensors exist) must load with torch.load(weights_only=True), which runs
    no code. A hub name passes (it is fetched where it is used)."""
    path = Path(os.path.expanduser(name))
    if not _is_local(name):
        return
    if not path.is_dir():
        raise InvalidFile(name, "model folder not found")
    config = path / "config.json"
    if not config.exists():
        raise InvalidFile(name, "not a Hugging Face model folder (no config.json)")
    from raysys.io import read_json

    cfg = read_json(config)  # InvalidFile naming the file and line when it is not JSON
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model_type"), str):
        raise InvalidFile(config, "not a model config (a JSON object with a model_type)")
    if weights:
        check_weights(path)


def check_weights(folder: Path) -> None:
    """The folder's weights load (see check_model_path); InvalidFile naming the file otherwise."""
    safetensors = sorted(folder.glob("*.safetensors"))
    pickled = sorted(folder.glob("pytorch_model*.bin"))
    if not safetensors and not pickled:
        if any(folder.glob("*.gguf")):
            raise InvalidFile(folder, "holds GGUF weights: `raysys model import FILE.gguf --out DIR` first")
        raise InvalidFile(folder, "no weights (model.safetensors or pytorch_model.bin)")
    for f in safetensors:
        _check_safetensors(f)
    if not safetensors:
        import pickle
        import warnings
        import zipfile

        import torch

        for f in pickled:
            try:  # mmap: a large checkpoint is not read whole (only the zip format allows it)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # torch's note on pickle protocols
                    torch.load(f, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(f))
            except pickle.UnpicklingError as e:
                raise InvalidFile(f, "pickled weights that torch.load(weights_only=True) refuses (they would run "
                                     f"code); convert them to safetensors ({str(e).splitlines()[0][:120]})") from None
            except (RuntimeError, EOFError, OSError, ValueError) as e:
                raise InvalidFile(f, f"unreadable weights ({str(e).splitlines()[0][:160]})") from None


def _check_safetensors(f: Path) -> None:
    """A safetensors file is whole: an 8-byte header length, a JSON header, and every
    tensor's data_offsets inside the file (a truncated download fails here)."""
    import json
    import struct

    size = f.stat().st_size
    try:
        with open(f, "rb") as fh:
            head = fh.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if n < 2 or 8 + n > size:
                raise ValueError(f"header of {n} bytes in a file of {size}")
            header = json.loads(fh.read(n))
        data = size - 8 - n
        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
        if any(e > data for e in ends):
            raise ValueError(f"tensors need {max(ends):,} bytes, the file holds {data:,}")
    except (ValueError, KeyError, TypeError, IndexError, struct.error, UnicodeDecodeError) as e:
        raise InvalidFile(f, f"not a whole safetensors file, truncated or corrupt ({e})") from None
    except OSError as e:
        raise InvalidFile(f, f"cannot read ({e.strerror or e})") from None


def load_model(
    name: str,
    *,
    trust_remote_code: bool = False,
    dtype: str = "float32",
    device: str = "cpu",
) -> LoadedModel:
    """Model, tokenizer and kind ("causal" or "seq2seq") from a folder or hub name."""
    quiet_deepspeed()
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    check_model_path(name, weights=False)  # the driver checked the weights (check_model_path)
    path = os.path.expanduser(name)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        kind = "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        auto = AutoModelForSeq2SeqLM if kind == "seq2seq" else AutoModelForCausalLM
        model = auto.from_pretrained(path, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:  # missing files, unreachable hub, remote code refused
        raise RaysysError(f"cannot load model {name!r}: {e}") from None
    if tokenizer.pad_token_id is None:  # Llama-style tokenizers ship no pad token
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device).eval()
    return LoadedModel(model=model, tokenizer=tokenizer, kind=kind, name=name)


def model_kind(model: str, trust_remote_code: bool = False) -> str:
    """"seq2seq" for an encoder-decoder model folder, else "causal" (its config alone)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
    return "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"


def load_tokenizer(model: str, trust_remote_code: bool = False):
    """The tokenizer of a checked model folder; a clear error when it cannot load."""
    from transformers import AutoTokenizer

    check_model_path(model, weights=False)  # the caller checks the weights
    try:
        return AutoTokenizer.from_pretrained(os.path.expanduser(model), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise RaysysError(f"cannot load the tokenizer of {model!r}: {e}") from None


def prompt_template(model: str, template: str, chat_body: str = "tk", trust_remote_code: bool = False,
                    conversation: bool = False) -> Template:
    """A prompt setting resolved for `model` (raysys.prompts.template_for): the chat template,
    or `conversation` (the tasks include conversations), reads the model's tokenizer (only
    the tokenizer is loaded). Drivers call it before launching actors or workers, so that a
    model without a usable chat template is one clear error rather than one per actor."""
    if template != "chat" and not conversation:
        return Template(template)
    return template_for(template, chat_body, load_tokenizer(model, trust_remote_code), model, conversation)


def count_parameters(model) -> int:
    """All parameters of a torch model (a ZeRO-3 partitioned one by its full sizes)."""
    return int(sum(getattr(p, "ds_numel", 0) or p.numel() for p in model.parameters()))


def prompt_ids(tokenizer, prompts: Sequence[str], max_prompt_tokens: int | None = None) -> list[list[int]]:
    """tokenizer(prompt).input_ids; a prompt longer than max_prompt_tokens keeps its last tokens."""
    ids = tokenizer(list(prompts)).input_ids if prompts else []
    if max_prompt_tokens:
        ids = [p[-max_prompt_tokens:] for p in ids]
    return [list(p) for p in ids]
