"""The per-worker training loop that Ray Train runs on every worker (torch, DeepSpeed,
peft; Ray only through ray.train's session API).

Each worker loads the base model (under ZeRO-3 the HF DeepSpeed config is created first,
so weights are partitioned as they load and no rank holds the whole model), optionally
wraps it with LoRA, builds a torch AdamW and either `deepspeed.initialize`s it or wraps
it in DDP. It reads its shard of the training rows (`data.shard`: the driver puts the rows
in Ray's object store once; no Ray Data pipeline, whose actors cost a training run seconds
of start-up), trains
`epochs` epochs with gradient accumulation, computes the validation loss when there is a
validation set, and at the end of every epoch saves a checkpoint and calls
`ray.train.report` (all workers; it is a barrier). On start it resumes from
`ray.train.get_checkpoint()` when Ray Train has one (an interrupted run of the same name).
When the driver draws a progress bar, rank 0 also writes its optimizer steps and tokens so
far to `progress_file` (raysys.console.ProgressFile, at most once a second).

Checkpoint layout: `raysys_state.json` (epoch, step, this epoch's metrics and those of
every epoch so far) plus either a DeepSpeed
checkpoint (`ds/`, written by every rank: each writes its own shards) or, for DDP,
`ddp/model.pt` and `ddp/optimizer.pt` (rank 0). With LoRA the checkpoint holds the
adapters and their optimizer states only (the frozen base weights are left out: 4 MB
instead of 548 MB for SmolLM2-135M with r 8 on q/k/v/o); export takes the base weights
from the base model.

Metrics per epoch: the losses, tokens/s over the whole epoch and in steady state (after
the first micro batch: the first collate and the first, allocation-heavy step left out),
the time to the first batch and of the first step, the padded tokens, the set-up time
(model load, wrappers), the checkpoint's save time and size, the examples and tokens trained by all workers (`trained_examples`, `trained_tokens`: summed across
ranks), and the model's parameters and the epoch's training FLOPs over all workers
(raysys.costs). Every row of a worker's shard trains every epoch: the last micro batch may
be smaller, and DDP steps on an incomplete last accumulation (its gradient the mean over
its micro batches); DeepSpeed carries it into the next epoch's first step. On CPU,
`cpu_bf16` runs the forward passes under bf16 autocast (weights, gradients and optimizer
states stay float32).
"""
from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

STATE = "raysys_state.json"
PROGRESS = "raysys_progress.json"  # rank 0's optimizer steps and tokens so far, for the driver's progress bar


def micro_batches(cfg, rows_per_worker: int) -> int:
    """A worker's micro batches an epoch: every row is trained (the last micro batch may be
    smaller), so ceil(rows / micro_batch_size)."""
    return -(-rows_per_worker // cfg.micro_batch_size)


def optimizer_steps(cfg, rows_per_worker: int) -> int:
    """Optimizer steps of the whole run (the schedule's length and the progress bar's).
    DDP steps on an epoch's incomplete last accumulation too; DeepSpeed carries it into
    the next epoch's first step."""
    micro = micro_batches(cfg, rows_per_worker)
    if cfg.backend == "deepspeed":
        return max(1, micro * cfg.epochs // cfg.accumulation)
    return max(1, -(-micro // cfg.accumulation) * cfg.epochs)


def lr_lambda(cfg, total_steps: int):
    warm = int(cfg.warmup_ratio * total_steps)

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.lr_schedule == "constant":
            return 1.0
        return max(0.0, (total_steps - step) / max(1, total_steps - warm))

    return f


def lora_config(cfg, kind: str):
    from peft import LoraConfig, TaskType

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.lora_targets),
                      task_type=TaskType.SEQ_2_SEQ_LM if kind == "seq2seq" else TaskType.CAUSAL_LM)


def build_model(model_path: str, kind: str, cfg, dtype, trust_remote_code: bool):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    auto = AutoModelForSeq2SeqLM if kind == "seq2seq" else AutoModelForCausalLM
    model = auto.from_pretrained(model_path, dtype=dtype, trust_remote_code=trust_remote_code)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    if cfg.lora:
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(cfg, kind))
    return model


def trained_state(module, lora: bool) -> dict[str, Any]:
    """The module's state dict; with LoRA only what training changes (the adapters, and any
    buffers): the frozen base weights are the base model's, and export takes them from it."""
    if not lora:
        return module.state_dict()
    # keep_vars: a tied weight (lm_head = embed_tokens) appears under both names, frozen under both
    return {k: v.detach() for k, v in module.state_dict(keep_vars=True).items() if not is_frozen(v)}


def _adapters_only(engine) -> None:
    """DeepSpeed's save_checkpoint(exclude_frozen_parameters=True) leaves frozen weights out
    by their parameter names; a tied weight also has a second name that it keeps (SmolLM2's
    lm_head = embed_tokens: 113 MB per checkpoint): leave every frozen entry out."""
    original = engine.module_state_dict

    def module_state_dict(*args, exclude_frozen_parameters: bool = False, **kwargs):
        sd = original(*args, exclude_frozen_parameters=exclude_frozen_parameters, **kwargs)
        if exclude_frozen_parameters:
            for k, v in engine.module.state_dict(keep_vars=True).items():
                if is_frozen(v):
                    sd.pop(k, None)
        return sd

    engine.module_state_dict = module_state_dict


def is_frozen(v) -> bool:
    """A state dict entry (keep_vars=True) that is a parameter training does not change."""
    import torch

    return isinstance(v, torch.nn.Parameter) and not v.requires_grad


def train_loop(config: dict[str, Any]) -> None:
    started = time.perf_counter()
    import ray.train
    import torch
    from transformers import AutoTokenizer

    from raysys.console import ProgressFile
    from raysys.costs import train_flops
    from raysys.io import read_json, write_json
    from raysys.models import count_parameters
    from raysys.training.data import chunks, collate, length_grouped, shard
    from raysys.training.dsconfig import deepspeed_config

    cfg, model_path, kind = config["cfg"], config["model"], config["kind"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    on_gpu = torch.cuda.is_available()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg.seed)
    if config.get("torch_threads"):
        torch.set_num_threads(config["torch_threads"])
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=config["trust_remote_code"])
    use_ds = cfg.backend == "deepspeed"
    ds_config = deepspeed_config(cfg, on_gpu) if use_ds else None
    dtype = torch.bfloat16 if (on_gpu and cfg.bf16) else torch.float32
    if use_ds:
        import deepspeed

        if not on_gpu:
            # DeepSpeed's CPU backend would JIT-compile a shared-memory allreduce op (about a
            # minute of C++ build per fresh machine); gloo does the same job for CPU runs.
            deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo")  # joins Ray Train's process group
    hf_ds = None
    if use_ds and cfg.zero_stage == 3:
        from transformers.integrations import HfDeepSpeedConfig

        hf_ds = HfDeepSpeedConfig(ds_config)  # noqa: F841  (must stay alive while the model loads)
    model = build_model(model_path, kind, cfg, torch.float32 if use_ds else dtype, config["trust_remote_code"])
    n_parameters = count_parameters(model)  # all of them, before wrappers (the FLOPs rule's N)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    total_steps = optimizer_steps(cfg, config["rows_per_worker"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total_steps))
    if use_ds:
        engine, optimizer, _, scheduler = deepspeed.initialize(model=model, optimizer=optimizer,
                                                               lr_scheduler=scheduler, config=ds_config)
        module = engine
        if cfg.lora:
            _adapters_only(engine)
    else:
        model.to(device)
        module = ray.train.torch.prepare_model(model) if world > 1 else model

    start_epoch, step, history = 0, 0, []
    ckpt = ray.train.get_checkpoint()
    if ckpt:
        with ckpt.as_directory() as d:
            state = read_json(Path(d) / STATE)
            if use_ds:
                engine.load_checkpoint(str(Path(d) / "ds"), tag="ckpt", load_module_strict=not cfg.lora)
            else:
                target = module.module if hasattr(module, "module") else module
                target.load_state_dict(torch.load(Path(d) / "ddp" / "model.pt", map_location=device),
                                       strict=not cfg.lora)
                optimizer.load_state_dict(torch.load(Path(d) / "ddp" / "optimizer.pt", map_location=device))
                scheduler.load_state_dict(torch.load(Path(d) / "ddp" / "scheduler.pt"))
        start_epoch, step, history = state["epoch"] + 1, state["step"], state["history"]

    # bf16 autocast: on GPU through the dtype above (or DeepSpeed's bf16); on CPU when asked
    # (cfg.cpu_bf16): matmuls in bf16, weights, gradients and optimizer states stay float32
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if (cfg.cpu_bf16 and not on_gpu) \
        else contextlib.nullcontext
    setup_seconds = time.perf_counter() - started  # imports, model load, wrappers, resumption

    shards = {name: shard(ray.get(ref), rank, world) for name, ref in config["rows"].items()}

    def batches(name: str):
        rows = shards[name]
        group = cfg.length_grouping if name == "train" else 1
        # every worker has as many rows (data.shard), so all run as many micro batches, the
        # last one of an epoch possibly smaller: no row of a shard is left out
        for run in chunks(rows, cfg.micro_batch_size * group):
            prompts, targets = [r["prompt"] for r in run], [r["target"] for r in run]
            if group == 1:
                micro_batches = [collate(tokenizer, kind, prompts, targets, cfg)]
            else:
                micro_batches = length_grouped(tokenizer, kind, prompts, targets, cfg)
            for t in micro_batches:
                yield {k: torch.as_tensor(v, device=device) for k, v in t.items()}

    progress = ProgressFile(config["progress_file"]) if config.get("progress_file") and rank == 0 else None
    run_tokens = 0  # this rank's tokens trained by this invocation (the progress bar's tokens/s)
    for epoch in range(start_epoch, cfg.epochs):
        module.train()
        t0, losses, tokens, rows, micro = time.perf_counter(), [], 0, 0, 0
        padded, first_batch, first_step, steady_from, steady_tokens = 0, math.nan, math.nan, 0.0, 0
        for batch in batches("train"):
            if not losses:  # the first collate
                first_batch = time.perf_counter() - t0
            with autocast():
                out = module(**batch)
            if use_ds:
                engine.backward(out.loss)
                engine.step()
            else:
                (out.loss / cfg.accumulation).backward()
                micro += 1
                if micro % cfg.accumulation == 0:
                    torch.nn.utils.clip_grad_norm_(params, 1.0)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
            losses.append(out.loss.item())
            n = int(batch["attention_mask"].sum()) + (int((batch["labels"] != -100).sum()) if kind == "seq2seq" else 0)
            tokens += n
            rows += int(batch["input_ids"].shape[0])
            run_tokens += n
            if progress:
                progress.write(step=engine.global_steps if use_ds else step + micro // cfg.accumulation,
                               tokens=run_tokens)
            padded += batch["input_ids"].numel() + (batch["labels"].numel() if kind == "seq2seq" else 0)
            if len(losses) == 1:  # the first micro batch allocates everything: steady state starts after it
                steady_from = time.perf_counter()
                first_step = steady_from - t0 - first_batch
            else:
                steady_tokens += n
        if not use_ds and micro % cfg.accumulation:  # the epoch's incomplete last accumulation
            for p in params:  # the mean over its micro batches, as a full accumulation's
                if p.grad is not None:
                    p.grad.mul_(cfg.accumulation / (micro % cfg.accumulation))
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        step = engine.global_steps if use_ds else step + -(-micro // cfg.accumulation)
        trained = torch.tensor([tokens, rows], dtype=torch.float64)  # every worker's, exactly
        if world > 1:
            torch.distributed.all_reduce(trained)
        if progress:
            progress.write(force=True, step=step, tokens=run_tokens)
        end = time.perf_counter()
        seconds = end - t0
        metrics = {"epoch": epoch, "step": step, "started_at_epoch": start_epoch,
                   "train_loss": float(sum(losses) / max(len(losses), 1)),
                   "first_loss": losses[0] if losses else math.nan, "last_loss": losses[-1] if losses else math.nan,
                   # tokens/s over the whole epoch (data start-up and the first step included), and
                   # in steady state: after the first micro batch (None with a single micro batch)
                   "tokens_per_s_worker": tokens / max(seconds, 1e-9), "epoch_seconds": seconds,
                   "steady_tokens_per_s_worker": steady_tokens / (end - steady_from) if steady_tokens else None,
                   "tokens": tokens, "padded_tokens": padded, "micro_batches": len(losses),
                   # the epoch's examples and tokens over every worker (summed across ranks)
                   "trained_examples": int(trained[1]), "trained_tokens": int(trained[0]),
                   "parameters": n_parameters, "flops": train_flops(int(trained[0]), n_parameters),
                   "first_batch_seconds": first_batch, "first_step_seconds": first_step,
                   "setup_seconds": setup_seconds if epoch == start_epoch else 0.0}
        if "validation" in shards:
            module.eval()
            total, count = 0.0, 0
            with torch.no_grad():
                for batch in batches("validation"):
                    n = int((batch["labels"] != -100).sum())
                    with autocast():
                        total += module(**batch).loss.item() * n
                    count += n
            stats = torch.tensor([total, count], dtype=torch.float64)
            if world > 1:
                torch.distributed.all_reduce(stats)
            metrics["val_loss"] = float(stats[0] / max(stats[1], 1))
        with tempfile.TemporaryDirectory(prefix="raysys-ckpt-") as tmp:
            saving = time.perf_counter()
            if use_ds:
                engine.save_checkpoint(os.path.join(tmp, "ds"), tag="ckpt", exclude_frozen_parameters=cfg.lora)
            elif rank == 0:
                os.makedirs(os.path.join(tmp, "ddp"))
                target = module.module if hasattr(module, "module") else module
                torch.save(trained_state(target, cfg.lora), os.path.join(tmp, "ddp", "model.pt"))
                torch.save(optimizer.state_dict(), os.path.join(tmp, "ddp", "optimizer.pt"))
                torch.save(scheduler.state_dict(), os.path.join(tmp, "ddp", "scheduler.pt"))
            metrics["checkpoint_seconds"] = time.perf_counter() - saving  # this rank's save (the report copies it)
            metrics["checkpoint_mb"] = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file()) / 1e6
            history = history + [metrics]
            if rank == 0:
                write_json(Path(tmp, STATE), {"epoch": epoch, "step": step, "metrics": metrics, "history": history})
            has_files = any(Path(tmp).iterdir())
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp) if has_files else None)
