"""The one Ray Data actor pool of raysys: the only module that calls `map_batches`.

A pool's tasks (canonical Parquet) become a Ray Dataset read block by block; tasks already
done are filtered out; a pool of actors (one GPU each on GPU clusters, a CPU share each
otherwise) builds its worker once and processes batches of tasks. The workers a pool can
run are named in `WORKERS` (a dict of classes sharing the `Worker` protocol): scoring,
a racing round, evaluation. Each actor writes every finished batch atomically as part
files (raysys.runs.parts) in the run's folder: those files are the record of what is done.
The driver only counts progress. A rerun after Ctrl-C, a killed driver or a dead actor
reads the finished task ids from the parts and processes the rest only; Ray restarts a
dead actor and retries its batch (Ray Data's defaults for actor pools).

`generate_rows` is the same pool over free prompt rows (greedy answers, kept in order),
for pairwise judging.

A worker that fails on a batch ends the run with one line naming the worker, the batch's
first task and the error; the traceback goes to the log (raysys.console).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raysys.cluster import cpu_share, ray_init
from raysys.console import Progress, stage
from raysys.errors import RaysysError
from raysys.evaluation.evaluator import Evaluator
from raysys.pools.subset import as_parquet
from raysys.runs.parts import Parts
from raysys.schema import Task
from raysys.scoring.race_rounds import RoundScorer
from raysys.scoring.scorer import TaskScorer


class Worker(Protocol):
    """Built once per actor (loads its model); processes batches of tasks."""

    def __init__(self, model: str, cfg: Any, *, trust_remote_code: bool = False) -> None: ...

    def process(self, tasks: Sequence[Task], details: bool = False) -> tuple[list[dict], list[dict]]:
        """(one row per task, detail rows) for a batch."""


WORKERS: dict[str, type[Worker]] = {
    "score": TaskScorer,  # raysys.scoring.pipeline.score_pool
    "race": RoundScorer,  # a racing round (raysys.scoring.pipeline)
    "evaluate": Evaluator,  # raysys.evaluation.evaluate.evaluate_pool
}


class WorkerFailed(RaysysError):
    """A worker raised on a batch: one line for the terminal (the traceback is logged)."""


def _set_threads(torch_threads: int) -> None:
    import torch

    if torch_threads:  # CPU actors share the machine's cores instead of each taking all
        torch.set_num_threads(torch_threads)


class TaskBatch:
    """Ray Data UDF: builds `WORKERS[worker]` once per actor, processes a pyarrow batch of
    tasks, writes the batch's rows as part files, and returns the batch's task ids."""

    def __init__(self, worker: str, model: str, cfg: Any, parts_dir: str, details: bool, trust_remote_code: bool,
                 torch_threads: int = 0, detail_schema: pa.Schema | None = None):
        _set_threads(torch_threads)
        self.name = worker
        try:
            self.worker = WORKERS[worker](model, cfg, trust_remote_code=trust_remote_code)
        except Exception as e:
            logging.getLogger("raysys").exception("the %s worker could not start on %s", worker, model)
            why = str(e) if isinstance(e, RaysysError) else f"{type(e).__name__}: {e}"
            raise WorkerFailed(f"the {worker} worker could not start on {model}: {why}") from None
        self.parts, self.details, self.detail_schema = Parts(Path(parts_dir)), details, detail_schema

    def __call__(self, batch: pa.Table) -> dict[str, Any]:
        from raysys.schema import from_row

        tasks = [from_row(r) for r in batch.to_pylist()]
        try:
            rows, detail_rows = self.worker.process(tasks, details=self.details)
        except Exception as e:
            logging.getLogger("raysys").exception("the %s worker failed on a batch", self.name)
            first = tasks[0].task_id if tasks else "?"
            why = str(e) if isinstance(e, RaysysError) else f"{type(e).__name__}: {e}"
            raise WorkerFailed(f"the {self.name} worker failed on task {first}: {why}") from None
        self.parts.write(rows, detail_rows if self.details else None, self.detail_schema)
        return {"task_id": [r["task_id"] for r in rows]}


def actor_resources(actors: int, gpus_per_actor: float | None, cpus: float | None = None,
                    ) -> tuple[dict[str, float], int]:
    """Ray resources per actor and torch threads per actor; fails fast when the cluster (or
    `cpus`, this call's share of it) cannot host the actors (instead of hanging on a
    resource request). `gpus_per_actor` None: one GPU each when the cluster has GPUs."""
    import ray

    have = ray.cluster_resources()
    if gpus_per_actor is None:
        gpus_per_actor = 1.0 if have.get("GPU", 0) else 0.0
    cpus = have.get("CPU", 0) if cpus is None else cpus
    if gpus_per_actor:
        need = actors * gpus_per_actor
        if have.get("GPU", 0) < need:
            raise RaysysError(f"{actors} actor(s) x {gpus_per_actor:g} GPU need {need:g} GPUs; "
                              f"the cluster has {have.get('GPU', 0):g}")
        return {"num_gpus": gpus_per_actor, "num_cpus": min(1.0, max(cpus - 1, 0.25) / actors)}, 0
    per_actor, threads = cpu_share(actors, cpus, f"{actors} actor(s)")
    return {"num_cpus": per_actor}, threads


def _unwrap(e: Exception) -> Exception:
    """The WorkerFailed inside a Ray error, if any (Ray wraps an actor's exception)."""
    seen = e
    for _ in range(8):
        if isinstance(seen, WorkerFailed):
            return seen
        cause = getattr(seen, "cause", None) or seen.__cause__
        if cause is None:
            break
        seen = cause
    text = str(e)
    if "WorkerFailed: " in text:
        return WorkerFailed(text.rsplit("WorkerFailed: ", 1)[1].strip().splitlines()[0])
    return e


@dataclass(frozen=True)
class Mapped:
    pool: str  # the pool as canonical Parquet
    order: list[str]  # the pool's task ids, in pool order
    n_tasks: int
    n_resumed: int
    n_now: int


def map_pool(worker: str, pool: str, parts_dir: Path, model: str, cfg: Any, *, actors: int = 1,
             gpus_per_actor: float | None = None, details: bool = False, trust_remote_code: bool = False,
             num_cpus: int | None = None, progress: bool = True, detail_schema: pa.Schema | None = None,
             verb: str = "scoring", cpus: float | None = None) -> Mapped:
    """Run `WORKERS[worker]` over every task of `pool` not yet in `parts_dir` on an actor
    pool; each batch lands as part files there. `cfg` needs `tasks_per_batch`; `cpus` is
    this call's share of the cluster (default: all)."""
    import ray.data
    from ray.data import ActorPoolStrategy

    if worker not in WORKERS:
        raise RaysysError(f"unknown worker {worker!r}; one of {', '.join(WORKERS)}")
    parts_dir.mkdir(parents=True, exist_ok=True)
    pool_path = as_parquet(pool, parts_dir / "pool.parquet")
    n_tasks = pq.ParquetFile(pool_path).metadata.num_rows
    done = Parts(parts_dir).done()
    order = pq.read_table(pool_path, columns=["task_id"]).column("task_id").to_pylist()
    n_resumed = len(set(order) & done)
    remaining = n_tasks - n_resumed
    if progress:
        stage(f"{verb} {remaining} of {n_tasks} tasks ({n_tasks - remaining} already done) with {actors} actor(s)")
    now = 0
    if remaining:
        ray_init(num_cpus)
        resources, torch_threads = actor_resources(actors, gpus_per_actor, cpus)
        ds = ray.data.read_parquet(pool_path, num_cpus=0.25)
        if done:
            done_arr = pa.array(sorted(done))
            ds = ds.map_batches(lambda t: t.filter(pc.invert(pc.is_in(t["task_id"], value_set=done_arr))),
                                batch_format="pyarrow", num_cpus=0.25)
        # blocks of one actor batch each, so that every actor gets work even from a single-file pool
        ds = ds.repartition(target_num_rows_per_block=cfg.tasks_per_batch)
        mapped = ds.map_batches(
            TaskBatch,
            fn_constructor_kwargs={"worker": worker, "model": model, "cfg": cfg, "parts_dir": str(parts_dir),
                                   "details": details, "trust_remote_code": trust_remote_code,
                                   "torch_threads": torch_threads, "detail_schema": detail_schema},
            compute=ActorPoolStrategy(size=actors),
            batch_size=cfg.tasks_per_batch,
            batch_format="pyarrow",
            **resources,
        )
        bar = Progress(verb, n_tasks, "tasks", done=n_resumed) if progress else None
        try:
            for batch in mapped.iter_batches(batch_size=None, batch_format="pyarrow"):
                now += batch.num_rows
                if bar:
                    bar.update(n_resumed + now)
        except Exception as e:
            raise _unwrap(e) from None
        finally:
            if bar:
                bar.close()
    return Mapped(pool_path, order, n_tasks, n_resumed, now)


class GenerateBatch:
    """Ray Data UDF: greedy answers of one model to a batch of prompt rows (`prompt`)."""

    def __init__(self, model: str, cfg: Any, trust_remote_code: bool, torch_threads: int = 0):
        from raysys.models.runner import ModelRunner

        _set_threads(torch_threads)
        self.runner = ModelRunner(model, cfg.generation, trust_remote_code=trust_remote_code)

    def __call__(self, batch: pa.Table) -> pa.Table:
        answers = self.runner.generate(batch.column("prompt").to_pylist())
        return batch.append_column("answer", pa.array(answers, type=pa.string()))


def generate_rows(rows: list[dict[str, Any]], model: str, cfg: Any, *, actors: int = 1,
                  gpus_per_actor: float | None = None, trust_remote_code: bool = False,
                  num_cpus: int | None = None) -> list[dict[str, Any]]:
    """Each row (with a `prompt`) plus the model's greedy `answer`, generated on an actor
    pool (cfg: any config with `generation` and `tasks_per_batch` (rows per actor
    call)); the result keeps the rows' order."""
    import ray.data
    from ray.data import ActorPoolStrategy

    if not rows:
        return []
    ray_init(num_cpus)
    resources, torch_threads = actor_resources(actors, gpus_per_actor)
    indexed = [{**r, "_row": i} for i, r in enumerate(rows)]
    ds = ray.data.from_items(indexed).repartition(target_num_rows_per_block=cfg.tasks_per_batch)
    out = ds.map_batches(GenerateBatch, fn_constructor_kwargs={"model": model, "cfg": cfg,
                                                               "trust_remote_code": trust_remote_code,
                                                               "torch_threads": torch_threads},
                         compute=ActorPoolStrategy(size=actors), batch_size=cfg.tasks_per_batch,
                         batch_format="pyarrow", **resources)
    try:
        result = sorted(out.take_all(), key=lambda r: r["_row"])
    except Exception as e:
        raise _unwrap(e) from None
    return [{k: v for k, v in r.items() if k != "_row"} for r in result]
