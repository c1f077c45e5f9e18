"""Fine-tune a model on selected tasks with Ray Train: the only place that builds a
TorchTrainer (Ray plumbing; the math is in worker.py, data.py, dsconfig.py, plan.py).

`train_model` turns the pool's selected tasks into examples, checks the memory plan and
the cluster's resources before launching, runs `workers` Ray Train workers (one GPU each
on GPU clusters; CPUs locally), each on its equal shard of the examples (put in Ray's
object store once: no Ray Data pipeline and its actors per run), and exports the chosen
checkpoint (the last epoch's, or the lowest validation loss) as an HF model folder.

Resumption: the run's storage is `<out>.train/<name>` where `name` hashes the model, the
config, the selected and validation tasks and the pool; rerunning the same command after
an interruption lets Ray Train find the run's latest checkpoint, and training continues
from the next epoch. A finished export with the same name is returned as is.

With `progress`, a stage line and a live bar of optimizer steps (rate, tokens/s, time
left), drawn from the progress file rank 0 writes into the run's storage folder.
"""
from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from raysys.cluster import cpu_share
from raysys.config import TrainConfig
from raysys.config.mapping import to_dict
from raysys.console import Progress, stage, to_log, watch
from raysys.errors import RaysysError
from raysys.io import read_json
from raysys.models import check_model_path, model_kind, prompt_template, resolved
from raysys.runs.keys import model_ref, run_key, tasks_content
from raysys.schema import Task
from raysys.training.data import training_examples
from raysys.training.export import REPORT, export_model


@dataclass(frozen=True)
class TrainRun:
    out: str
    name: str
    examples: int
    epochs: list[dict[str, Any]]  # metrics reported per epoch (those of this invocation's run)
    chosen_epoch: int
    seconds: float
    resumed: bool  # the export was already complete


def run_name(model: str, cfg: TrainConfig, task_ids: Sequence[str], val_ids: Sequence[str],
             tasks: Sequence[Task]) -> str:
    """The model, the config, the task ids and the content of those tasks."""
    wanted = set(task_ids) | set(val_ids)
    return run_key({"model": model_ref(model), "cfg": to_dict(cfg), "tasks": list(task_ids), "val": list(val_ids),
                    "content": tasks_content(t for t in tasks if t.task_id in wanted)}, "train-")


def _scaling(cfg: TrainConfig, use_gpu: bool, cpus: float | None = None):
    """ScalingConfig after checking that the cluster (or `cpus`, this run's share of it)
    can host the workers (fail fast)."""
    import ray
    from ray.train import ScalingConfig

    have = ray.cluster_resources()
    if use_gpu:
        if have.get("GPU", 0) < cfg.workers:
            raise RaysysError(f"{cfg.workers} training worker(s) need {cfg.workers} GPUs; the cluster has "
                              f"{have.get('GPU', 0):g}")
        return ScalingConfig(num_workers=cfg.workers, use_gpu=True), 0
    per, threads = cpu_share(cfg.workers, have.get("CPU", 0) if cpus is None else cpus,
                             f"{cfg.workers} training worker(s)")
    return ScalingConfig(num_workers=cfg.workers, use_gpu=False, resources_per_worker={"CPU": per}), threads


def train_model(tasks: Sequence[Task], task_ids: Sequence[str], model: str, out: str, cfg: TrainConfig = TrainConfig(),
                *, val_ids: Sequence[str] = (), storage: str | None = None, gpu_memory_gib: float | None = None,
                trust_remote_code: bool = False, num_cpus: int | None = None, progress: bool = True,
                cpus: float | None = None) -> TrainRun:
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig
    from ray.train.torch import TorchTrainer

    from raysys.cluster import ray_init, release_actors
    from raysys.training.memory import check_plan, count_parameters_from_config, memory_plan
    from raysys.training.worker import PROGRESS, micro_batches, optimizer_steps, train_loop

    start = time.perf_counter()
    check_model_path(model)
    model = resolved(model)  # the workers run in the run's folder
    name = run_name(model, cfg, task_ids, val_ids, tasks)
    report = Path(out) / REPORT
    if report.is_file():
        facts = read_json(report)
        if facts.get("run") == name:
            return TrainRun(out, name, facts["examples"], facts["epochs"], facts["chosen_epoch"], 0.0, True)
    template = prompt_template(model, cfg.prompt.template, cfg.prompt.chat_body, trust_remote_code,
                               any(t.conversation for t in tasks))
    rows = training_examples(tasks, task_ids, cfg, template)
    val_rows = training_examples(tasks, val_ids, cfg, template) if val_ids else []
    if len(rows) < cfg.micro_batch_size * cfg.workers:
        raise RaysysError(f"{len(rows)} training example(s) from {len(task_ids)} task(s): fewer than one micro batch "
                          f"per worker ({cfg.micro_batch_size} x {cfg.workers})")
    rows_per_worker = len(rows) // cfg.workers  # equal shards (data.shard)
    micro_per_worker = micro_batches(cfg, rows_per_worker)
    if cfg.backend == "deepspeed" and micro_per_worker < cfg.accumulation:
        print(f"warning: {len(rows)} examples give each of {cfg.workers} worker(s) {micro_per_worker} micro batch(es) "
              f"an epoch, fewer than the {cfg.accumulation} that make one optimizer step (batch_size "
              f"{cfg.batch_size}): DeepSpeed steps across epochs; lower batch_size", file=sys.stderr)
    if len(rows) % cfg.workers:  # equal shards (data.shard)
        print(f"note: {len(rows)} examples over {cfg.workers} workers: {len(rows) % cfg.workers} left out of every "
              "epoch so that the workers read as many rows (the report's trained_examples counts what trained)",
              file=sys.stderr)
    if cfg.best_by == "validation" and not val_rows:
        raise RaysysError("best_by=validation needs validation tasks (--val-tasks)")
    kind = model_kind(model, trust_remote_code)
    ray_init(num_cpus, training=True)
    release_actors()  # the scoring and evaluation actors' CPUs and GPUs, for the training workers
    use_gpu = ray.cluster_resources().get("GPU", 0) > 0
    if use_gpu:
        n_params, config = count_parameters_from_config(model, trust_remote_code)
        check_plan(memory_plan(n_params, config, cfg, cfg.workers, gpu_memory_gib or 80.0, bf16=cfg.bf16), cfg)
    scaling, threads = _scaling(cfg, use_gpu, cpus)
    # the rows in the object store once; each worker takes its shard (data.shard)
    rows_refs = {"train": ray.put(rows), **({"validation": ray.put(val_rows)} if val_rows else {})}
    storage_path = str(Path(storage or f"{out}.train").resolve())
    score = {"checkpoint_score_attribute": "val_loss", "checkpoint_score_order": "min"} if val_rows else {}
    progress_file = Path(storage_path) / name / PROGRESS if progress else None
    if progress_file:
        progress_file.unlink(missing_ok=True)  # an interrupted run's
        how = f"DeepSpeed ZeRO-{cfg.zero_stage}" if cfg.backend == "deepspeed" else "DDP"
        stage(f"training {name}: {len(rows)} examples from {len(set(task_ids))} tasks, {cfg.epochs} epoch(s), "
              f"{cfg.workers} worker(s), {how}{' + LoRA' if cfg.lora else ''}; checkpoints in {storage_path}/{name}")
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"cfg": cfg, "model": model, "kind": kind, "trust_remote_code": trust_remote_code,
                           "rows": rows_refs, "rows_per_worker": rows_per_worker,
                           "torch_threads": threads, "progress_file": str(progress_file) if progress_file else None},
        scaling_config=scaling,
        run_config=RunConfig(name=name, storage_path=storage_path,
                             checkpoint_config=CheckpointConfig(num_to_keep=cfg.num_to_keep, **score),
                             failure_config=FailureConfig(max_failures=cfg.max_failures)),
    )
    drawn = (watch(progress_file, Progress("training", optimizer_steps(cfg, rows_per_worker), "steps"),
                   "step", {"tokens": "tokens/s per worker"}) if progress_file else contextlib.nullcontext())
    with drawn:
        result = trainer.fit()
    if result.error:
        raise result.error
    from raysys.training.worker import STATE

    with result.checkpoint.as_directory() as d:
        history = read_json(Path(d) / STATE)["history"]  # every epoch, resumed ones included
    if cfg.best_by == "validation":
        chosen, metrics = min(result.best_checkpoints, key=lambda cm: cm[1]["val_loss"])
    else:
        chosen, metrics = result.checkpoint, history[-1]
    facts = {"run": name, "base_model": model, "examples": len(rows), "validation_examples": len(val_rows),
             "tasks": list(dict.fromkeys(task_ids)), "config": to_dict(cfg), "epochs": history,
             "chosen_epoch": metrics["epoch"], "chosen_by": cfg.best_by}
    export_cfg = dataclasses.replace(cfg, gradient_checkpointing=False)
    with chosen.as_directory() as d:
        if sum(1 for n in ray.nodes() if n["Alive"]) == 1:  # one machine: a task would only add a process start
            with to_log():  # DeepSpeed's checkpoint conversion prints
                export_model(d, model, kind, export_cfg, out, facts, trust_remote_code)
        else:  # a cluster: on a node with a free CPU; "DEFAULT": outside any placement group this runs in
            remote = ray.remote(num_cpus=1, scheduling_strategy="DEFAULT")(export_model)
            ray.get(remote.remote(d, model, kind, export_cfg, out, facts, trust_remote_code))
    return TrainRun(out, name, len(rows), history, metrics["epoch"], time.perf_counter() - start, False)
