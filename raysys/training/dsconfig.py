"""The DeepSpeed config dict for a TrainConfig (pure).

train_batch_size = micro batch x accumulation x workers. The optimizer is raysys's own
torch AdamW handed to deepspeed.initialize (no JIT-compiled DeepSpeed ops, so CPU runs
start at once); `zero_force_ds_cpu_optimizer` is off so that the torch optimizer also
works with optimizer offload. bf16 only on GPU. ZeRO-3 gathers 16-bit weights on save is
not needed: raysys exports from the fp32 checkpoint (raysys.training.export).
"""
from __future__ import annotations

from typing import Any

from raysys.config import TrainConfig


def deepspeed_config(cfg: TrainConfig, on_gpu: bool) -> dict[str, Any]:
    zero: dict[str, Any] = {"stage": cfg.zero_stage}
    if cfg.zero_stage >= 1 and cfg.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": on_gpu}
    if cfg.zero_stage == 3:
        zero.update({"overlap_comm": on_gpu, "contiguous_gradients": True, "stage3_param_persistence_threshold": 0})
        if cfg.offload_params:
            zero["offload_param"] = {"device": "cpu", "pin_memory": on_gpu}
    return {
        "train_batch_size": cfg.batch_size,
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.accumulation,
        "gradient_clipping": 1.0,
        "bf16": {"enabled": bool(on_gpu and cfg.bf16)},
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }
