"""The one actor pool of raysys: the only module that calls `map_batches`.

A pool's tasks (canonical Parquet, read by the driver: every batch passes through it on its
way to an actor anyway) become a Ray Dataset (`from_arrow`); tasks already done are
filtered out (`map_batches`); the batches go to a pool of actors (`TaskBatch`: one
GPU each on GPU clusters, a CPU share each otherwise, spread over the nodes). The workers a
pool can run are named in `WORKERS` (a dict of classes sharing the `Worker` protocol):
scoring, a racing round, evaluation. Each actor writes every finished batch atomically as
part files (raysys.runs.parts) in the run's folder: those files are the record of what is
done. The driver only counts progress. A rerun after Ctrl-C, a killed driver or a dead
actor reads the finished task ids from the parts and processes the rest only; Ray restarts
a dead actor and retries its batch.

Within `raysys.cluster.keep_actors()` (every CLI command, each trial of the loop) the pool
outlives the call: the driver keeps it for the next call of the same shape (a racing
round, another evaluation, the next round's scoring), its actors keeping the model they
loaded, so that a call pays no process start, imports or model load again. Training
releases it first (`release_pools`: its CPUs and GPUs go back to Ray Train), and so does a
failed call and the end of keep_actors(); outside it, a call's pool ends with the call.

`generate_rows` is the same pool over free prompt rows (greedy answers, kept in order),
for pairwise judging.

A worker that fails on a batch ends the run with one line naming the worker, the batch's
first task and the error; the traceback goes to the log (raysys.console).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, NoReturn, Protocol, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raysys.cluster import cpu_share, keeping_actors, on_release, ray_init
from raysys.console import Progress, stage
from raysys.errors import RaysysError
from raysys.evaluation.evaluator import Evaluator
from raysys.models import prompt_template
from raysys.pools.subset import as_parquet, has_conversations
from raysys.runs.parts import Parts
from raysys.schema import Task
from raysys.scoring.race_rounds import RoundScorer
from raysys.scoring.scorer import TaskScorer


class Worker(Protocol):
    """Built by a pool actor for a job (with the model it already holds: `loaded`);
    processes batches of tasks."""

    def __init__(self, model: str, cfg: Any, *, trust_remote_code: bool = False, loaded: Any = None) -> None: ...

    def process(self, tasks: Sequence[Task], details: bool = False) -> tuple[list[dict], list[dict]]:
        """(one row per task, detail rows) for a batch."""


WORKERS: dict[str, type[Worker]] = {
    "score": TaskScorer,  # raysys.scoring.pipeline.score_pool
    "race": RoundScorer,  # a racing round (raysys.scoring.pipeline)
    "evaluate": Evaluator,  # raysys.evaluation.evaluate.evaluate_pool
}


class WorkerFailed(RaysysError):
    """A worker raised on a batch: one line for the terminal (the traceback is logged)."""


@dataclass(frozen=True)
class Job:
    """What a pool's actors do with the batches of one call: `WORKERS[worker]` on `model`
    writing part files to `parts_dir`, or (worker "generate") greedy answers to prompt rows."""

    worker: str
    model: str
    cfg: Any
    parts_dir: str = ""
    details: bool = False
    trust_remote_code: bool = False
    detail_schema: pa.Schema | None = None


class TaskBatch:
    """One actor of the pool. It lives as long as its pool (across calls: racing rounds,
    the evaluations of one model, the stages of a loop's round until training needs the
    CPUs), keeps the last model it loaded (reloaded only when the folder or the dtype
    changes) and the last worker it built (rebuilt when the job's worker, model or config
    differs)."""

    def __init__(self, torch_threads: int = 0):
        if torch_threads:  # CPU actors share the machine's cores instead of each taking all
            import torch

            torch.set_num_threads(torch_threads)
        self.model_key: tuple = ()
        self.lm: Any = None
        self.job: Job | None = None
        self.worker: Any = None
        self.counts = {"models loaded": 0, "workers built": 0, "batches": 0}

    def _loaded(self, job: Job) -> Any:
        from raysys.models.runner import load_for_worker, model_stamp

        dtype = getattr(job.cfg, "dtype", "auto")  # the weights' dtype (ScoringConfig, EvalConfig)
        key = (job.model, job.trust_remote_code, dtype, model_stamp(job.model))
        if key != self.model_key:
            self.lm = self.worker = self.job = None  # the old model's memory goes first
            self.lm = load_for_worker(job.model, trust_remote_code=job.trust_remote_code, dtype=dtype)
            self.model_key = key
            self.counts["models loaded"] += 1
        return self.lm

    def _worker(self, job: Job) -> Any:
        try:
            loaded = self._loaded(job)  # every batch: a folder rewritten under the same job is loaded anew
        except Exception as e:
            self._failed_start(job, e)
        if job != self.job or self.worker is None:
            try:
                if job.worker == "generate":
                    from raysys.models.runner import ModelRunner

                    self.worker = ModelRunner(job.model, job.cfg.generation, loaded=loaded)
                else:
                    self.worker = WORKERS[job.worker](job.model, job.cfg, trust_remote_code=job.trust_remote_code,
                                                      loaded=loaded)
            except Exception as e:
                self._failed_start(job, e)
            self.job = job
            self.counts["workers built"] += 1
        return self.worker

    @staticmethod
    def _failed_start(job: Job, e: Exception) -> NoReturn:
        logging.getLogger("raysys").exception("the %s worker could not start on %s", job.worker, job.model)
        why = str(e) if isinstance(e, RaysysError) else f"{type(e).__name__}: {e}"
        raise WorkerFailed(f"the {job.worker} worker could not start on {job.model}: {why}") from None

    def stats(self) -> dict[str, int]:
        """Models loaded, workers built and batches processed by this actor so far."""
        return dict(self.counts)

    def run(self, job: Job, batch: pa.Table) -> Any:
        """A batch of tasks: their rows as part files, the task ids returned; or for
        "generate", the prompt rows with their greedy `answer` column."""
        from raysys.schema import from_row

        worker = self._worker(job)
        self.counts["batches"] += 1
        if job.worker == "generate":
            answers = worker.generate(batch.column("prompt").to_pylist())
            return batch.append_column("answer", pa.array(answers, type=pa.string()))
        tasks = [from_row(r) for r in batch.to_pylist()]
        try:
            rows, detail_rows = worker.process(tasks, details=job.details)
        except Exception as e:
            logging.getLogger("raysys").exception("the %s worker failed on a batch", job.worker)
            first = tasks[0].task_id if tasks else "?"
            why = str(e) if isinstance(e, RaysysError) else f"{type(e).__name__}: {e}"
            raise WorkerFailed(f"the {job.worker} worker failed on task {first}: {why}") from None
        Parts(Path(job.parts_dir)).write(rows, detail_rows if job.details else None, job.detail_schema)
        return [r["task_id"] for r in rows]


_POOLS: dict[tuple, list] = {}  # this driver's live pool: (job id, actors, resources, threads) -> actors


def _pool(actors: int, resources: dict[str, float], torch_threads: int) -> list:
    """The driver's pool of `actors` actors with these resources: the live one when it has
    this shape, else a new one (the old one released first: one pool at a time)."""
    import ray

    key = (ray.get_runtime_context().get_job_id(), actors, tuple(sorted(resources.items())), torch_threads)
    if key not in _POOLS:
        release_pools()
        actor = ray.remote(TaskBatch).options(max_restarts=-1, max_task_retries=-1, scheduling_strategy="SPREAD",
                                              **resources)
        _POOLS[key] = [actor.remote(torch_threads) for _ in range(actors)]
    return _POOLS[key]


def release_pools() -> None:
    """End the driver's pool (its CPUs and GPUs go back to the cluster): before training,
    which needs them, and after a failed call."""
    import ray

    pools = list(_POOLS.items())
    _POOLS.clear()
    if not ray.is_initialized():
        return
    job = ray.get_runtime_context().get_job_id()
    for key, handles in pools:
        if key[0] == job:  # a pool of an earlier ray.init in this process ended with it
            for h in handles:
                ray.kill(h, no_restart=True)


on_release(release_pools)


def _run(pool: list, job: Job, batches: Iterable[pa.Table], done: Callable[[Any], None]) -> None:
    """Each batch to a free actor of `pool` (two in flight per actor); `done` gets each
    result as it comes. A failure ends the pool and raises (the WorkerFailed inside); so
    does the call's end outside keep_actors()."""
    import ray

    job_ref, batches = ray.put(job), iter(batches)
    free = [a for _ in range(2) for a in pool]  # popped from the end: one per actor first
    flying: dict = {}

    def submit() -> None:
        while free:
            batch = next(batches, None)
            if batch is None:
                return
            actor = free.pop()
            flying[actor.run.remote(job_ref, batch)] = actor

    try:
        submit()
        while flying:
            ready, _ = ray.wait(list(flying), num_returns=1)
            free.append(flying.pop(ready[0]))
            done(ray.get(ready[0]))
            submit()
    except Exception as e:
        release_pools()  # its actors may still hold this call's batches
        raise _unwrap(e) from None
    if not keeping_actors():  # outside keep_actors(), a call's pool ends with the call
        release_pools()


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
        cause = getattr(seen, "cause", None) or seen.__cause__
        if isinstance(seen, WorkerFailed) and not isinstance(cause, WorkerFailed):
            return seen  # the worker's own, not Ray's wrapper of it (whose text is a traceback)
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

    if worker not in WORKERS:
        raise RaysysError(f"unknown worker {worker!r}; one of {', '.join(WORKERS)}")
    parts_dir.mkdir(parents=True, exist_ok=True)
    pool_path = as_parquet(pool, parts_dir / "pool.parquet")
    if has_conversations(pool_path):  # the actors render them with the model's chat template: has it one?
        prompt_template(model, "tk", trust_remote_code=trust_remote_code, conversation=True)
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
        # read here, not by Ray Data's read tasks: their worker processes cost a call about
        # 2.5 CPU-seconds (2 cores, a 16-task pool; 0.05 from a table: benchmarks/bench_call.py),
        # and each batch comes back through the driver to go to an actor
        ds = ray.data.from_arrow(pq.read_table(pool_path))
        if done:
            done_arr = pa.array(sorted(done))
            ds = ds.map_batches(lambda t: t.filter(pc.invert(pc.is_in(t["task_id"], value_set=done_arr))),
                                batch_format="pyarrow", num_cpus=0.25)
        bar = Progress(verb, n_tasks, "tasks", done=n_resumed) if progress else None
        counted = [0]

        def finished(ids: list[str]) -> None:
            counted[0] += len(ids)
            if bar:
                bar.update(n_resumed + counted[0])

        job = Job(worker, model, cfg, str(parts_dir), details, trust_remote_code, detail_schema)
        try:
            _run(_pool(actors, resources, torch_threads), job,
                 ds.iter_batches(batch_size=cfg.tasks_per_batch, batch_format="pyarrow"), finished)
        finally:
            if bar:
                bar.close()
        now = counted[0]
    return Mapped(pool_path, order, n_tasks, n_resumed, now)


def generate_rows(rows: list[dict[str, Any]], model: str, cfg: Any, *, actors: int = 1,
                  gpus_per_actor: float | None = None, trust_remote_code: bool = False,
                  num_cpus: int | None = None) -> list[dict[str, Any]]:
    """Each row (with a `prompt`) plus the model's greedy `answer`, generated on an actor
    pool (cfg: any config with `generation` and `tasks_per_batch` (rows per actor
    call)); the result keeps the rows' order."""
    if not rows:
        return []
    ray_init(num_cpus)
    resources, torch_threads = actor_resources(actors, gpus_per_actor)
    indexed = [{**r, "_row": i} for i, r in enumerate(rows)]
    step = cfg.tasks_per_batch
    tables = (pa.Table.from_pylist(indexed[i:i + step]) for i in range(0, len(indexed), step))
    answered: list[dict[str, Any]] = []
    _run(_pool(actors, resources, torch_threads), Job("generate", model, cfg, trust_remote_code=trust_remote_code),
         tables, lambda t: answered.extend(t.to_pylist()))
    return [{k: v for k, v in r.items() if k != "_row"} for r in sorted(answered, key=lambda r: r["_row"])]
