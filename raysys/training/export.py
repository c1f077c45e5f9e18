"""Export a training checkpoint as an ordinary Hugging Face model folder (torch, peft).

The trained weights come from the checkpoint (with LoRA: the adapters; the frozen
weights are the base model's), in float32: a DeepSpeed ZeRO-1/2/3
checkpoint is consolidated with DeepSpeed's zero_to_fp32 (ZeRO-3 shards included), a
ZeRO-0 checkpoint holds the whole module, a DDP checkpoint holds `model.pt`. They are
loaded into a fresh copy of the base model (wrapped with the same LoRA config when LoRA
was trained); LoRA is then merged into the weights (an ordinary model folder) or saved as
a peft adapter, as chosen. The folder (model, tokenizer, raysys_train.json) is written
under a temporary name and renamed when complete.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from raysys.io import atomic_dir, write_json

REPORT = "raysys_train.json"


def trained_state_dict(checkpoint_dir: str | Path, cfg) -> dict[str, Any]:
    """The trained module's float32 state dict from a raysys checkpoint folder."""
    import torch

    d = Path(checkpoint_dir)
    if cfg.backend == "ddp":
        return torch.load(d / "ddp" / "model.pt", map_location="cpu")
    ds = d / "ds"
    if cfg.zero_stage == 0:
        state = torch.load(ds / "ckpt" / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
        return {k: v.float() for k, v in state["module"].items()}
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return get_fp32_state_dict_from_zero_checkpoint(str(ds), tag="ckpt")


def export_model(checkpoint_dir: str | Path, base_model: str, kind: str, cfg, out: str | Path,
                 facts: dict[str, Any], trust_remote_code: bool = False) -> Path:
    import torch
    from transformers import AutoTokenizer

    from raysys.training.worker import build_model, is_frozen

    out = Path(out)
    state = trained_state_dict(checkpoint_dir, cfg)
    model = build_model(base_model, kind, cfg, torch.float32, trust_remote_code)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # a tied weight (e.g. lm_head = embed_tokens) is stored once: missing is fine if its twin is present;
    # a LoRA checkpoint leaves the frozen base weights out (they are the base model's, loaded above)
    ptr = {k: v.data_ptr() for k, v in model.state_dict(keep_vars=True).items()}
    present = {ptr[k] for k in state if k in ptr}
    frozen = {k for k, v in model.state_dict(keep_vars=True).items() if cfg.lora and is_frozen(v)}
    untied = [k for k in missing if ptr.get(k) not in present and k not in frozen]
    if unexpected or untied:
        raise RuntimeError(f"checkpoint does not match the model: missing {untied[:5]}, unexpected {unexpected[:5]}")
    if cfg.lora and cfg.lora_export == "merged":
        model = model.merge_and_unload()
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(base_model, trust_remote_code=trust_remote_code).save_pretrained(tmp)
        write_json(tmp / REPORT, facts)
    return out
