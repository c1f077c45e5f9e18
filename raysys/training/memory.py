"""Per-GPU memory plan of a training run, from the model's config alone (pure arithmetic
apart from building the model on the meta device to count its parameters exactly).

Bytes per parameter (Rajbhandari et al., ZeRO, 2020), Psi parameters, N GPUs:
- bf16 mixed precision with Adam: weights 2, gradients 2, optimizer states 12 (fp32
  master copy, momentum, variance);  float32: weights 4, gradients 4, states 8.
- ZeRO-1 partitions the optimizer states over N, ZeRO-2 also the gradients, ZeRO-3 also
  the weights; optimizer offload moves the states to CPU memory, parameter offload
  (ZeRO-3) the weights.
- LoRA: frozen base weights only (no gradients, no states); the adapters are trained.
Activations (an estimate): 34 x s x b x h bytes per layer with a fused attention kernel
(Korthikanti et al., 2022), 2 x s x b x h per layer with gradient checkpointing plus one
layer's worth; plus the logits, b x s x vocab x 6 bytes (bf16 logits and their float32
log-softmax), for micro batch b and sequence length s.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from raysys.config import TrainConfig
from raysys.errors import RaysysError

GIB = 1 << 30


@dataclass(frozen=True)
class MemoryPlan:
    parameters: int
    trainable: int
    gpus: int
    weights_gib: float
    gradients_gib: float
    optimizer_gib: float
    activations_gib: float
    total_gib: float
    cpu_offload_gib: float  # optimizer states / weights moved to CPU memory, per GPU's share
    gpu_memory_gib: float
    fits: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_parameters_from_config(model: str, trust_remote_code: bool = False) -> tuple[int, Any]:
    """(parameters, config) of a model folder or config, without loading weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    config = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
    auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    with torch.device("meta"):
        m = auto.from_config(config, trust_remote_code=trust_remote_code)
    return sum(p.numel() for p in m.parameters()), config


def trainable_parameters(model: str, cfg: TrainConfig, trust_remote_code: bool = False) -> int:
    """Parameters that training updates: all of them, or the LoRA adapters' (counted on
    the meta device)."""
    n, config = count_parameters_from_config(model, trust_remote_code)
    if not cfg.lora:
        return n
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from raysys.training.worker import lora_config

    seq2seq = getattr(config, "is_encoder_decoder", False)
    auto = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    with torch.device("meta"):
        m = get_peft_model(auto.from_config(config, trust_remote_code=trust_remote_code),
                           lora_config(cfg, "seq2seq" if seq2seq else "causal"))
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def memory_plan(parameters: int, config: Any, cfg: TrainConfig, gpus: int, gpu_memory_gib: float,
                trainable: int | None = None, bf16: bool = True) -> MemoryPlan:
    n = max(gpus, 1)
    trainable = parameters if trainable is None else trainable
    w_bytes, g_bytes, s_bytes = (2, 2, 12) if bf16 else (4, 4, 8)
    weights = parameters * w_bytes
    grads = trainable * g_bytes
    states = trainable * s_bytes
    stage = cfg.zero_stage if cfg.backend == "deepspeed" else 0
    if stage >= 1:
        states /= n
    if stage >= 2:
        grads /= n
    if stage >= 3:
        weights /= n
    offloaded = 0.0
    if cfg.offload_optimizer and stage >= 1:
        offloaded += states
        states = 0.0
    if cfg.offload_params and stage == 3:
        offloaded += weights
        weights = 0.0
    h = config.hidden_size if hasattr(config, "hidden_size") else config.d_model
    layers = getattr(config, "num_hidden_layers", None) or config.num_layers
    if getattr(config, "is_encoder_decoder", False):  # encoder and decoder stacks
        layers += getattr(config, "num_decoder_layers", None) or layers
    s = cfg.max_source_tokens + cfg.max_target_tokens
    b = cfg.micro_batch_size
    per_layer = 34 * s * b * h
    acts = (2 * s * b * h * layers + per_layer) if cfg.gradient_checkpointing else per_layer * layers
    acts += b * s * config.vocab_size * 6
    total = weights + grads + states + acts
    return MemoryPlan(parameters, trainable, n, weights / GIB, grads / GIB, states / GIB, acts / GIB, total / GIB,
                      offloaded / GIB, gpu_memory_gib, total / GIB <= gpu_memory_gib)


def render_plan(p: MemoryPlan, cfg: TrainConfig) -> str:
    how = f"DeepSpeed ZeRO-{cfg.zero_stage}" if cfg.backend == "deepspeed" else "DDP"
    return "\n".join([
        f"memory plan per GPU: {p.parameters:,} parameters ({p.trainable:,} trained), {how}, {p.gpus} GPU(s)"
        + (", optimizer offload" if cfg.offload_optimizer else "") + (", parameter offload" if cfg.offload_params
                                                                       else ""),
        f"  weights     {p.weights_gib:9.2f} GiB",
        f"  gradients   {p.gradients_gib:9.2f} GiB",
        f"  optimizer   {p.optimizer_gib:9.2f} GiB",
        f"  activations {p.activations_gib:9.2f} GiB  (micro batch {cfg.micro_batch_size}, "
        f"{cfg.max_source_tokens + cfg.max_target_tokens} tokens"
        f"{', checkpointed' if cfg.gradient_checkpointing else ''})",
        f"  total       {p.total_gib:9.2f} GiB of {p.gpu_memory_gib:g} GiB: {'fits' if p.fits else 'DOES NOT FIT'}"
        + (f"; {p.cpu_offload_gib:.2f} GiB per GPU in CPU memory" if p.cpu_offload_gib else ""),
    ])


def check_plan(p: MemoryPlan, cfg: TrainConfig) -> None:
    """Refuse, before launching anything, a plan that cannot fit the GPUs' memory."""
    if not p.fits:
        hints = []
        if cfg.backend != "deepspeed" or cfg.zero_stage < 3:
            hints.append("a higher ZeRO stage (--zero-stage 3)")
        if not cfg.offload_optimizer:
            hints.append("optimizer offload")
        if not cfg.gradient_checkpointing:
            hints.append("gradient checkpointing")
        hints += ["a smaller --micro-batch-size", "more GPUs", "LoRA (--lora)"]
        raise RaysysError(f"the run needs {p.total_gib:.1f} GiB per GPU but a GPU has {p.gpu_memory_gib:g} GiB:\n"
                          + render_plan(p, cfg) + "\ntry " + ", ".join(hints))
