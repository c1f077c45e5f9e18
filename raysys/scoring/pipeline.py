"""Scoring a whole pool on Ray Data actors: the only place that calls `map_batches`.

The pool (canonical Parquet) becomes a Ray Dataset read block by block; tasks already
scored are filtered out; a pool of scorer actors (one GPU each on GPU clusters, one CPU
each otherwise) loads the model once and scores batches of tasks. Each actor writes every
finished batch atomically to `<out>.parts/<run>/scores-<uuid>.parquet` (and
`details-<uuid>.parquet` first, when asked): those part files are the record of what is
done. The driver only counts progress; at the end it merges the parts into `out` (one row
per task, first part wins if a batch was ever retried after it was written) and writes it
atomically. A rerun of the same command after Ctrl-C, a killed driver or a dead actor reads
the finished task ids from the parts and scores the rest only. Ray restarts a dead actor
and retries its batch (Ray Data's defaults for actor pools).

`<run>` is a hash of the scoring config, the model, the pool path and its files' sizes and
modification times, so a rerun with other settings or an edited pool never mixes with old
parts.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raysys.config import ScoringConfig, to_dict
from raysys.errors import RaysysError
from raysys.io import atomic_path, write_parquet
from raysys.models import check_model_path
from raysys.pools import detect_format
from raysys.rayinit import ray_init

RUN_KEY = "raysys_scoring_run"


@dataclass(frozen=True)
class ScoreRun:
    out: str
    n_tasks: int
    n_scored_now: int
    n_resumed: int
    seconds: float
    details: str | None


def pool_fingerprint(pool: str) -> list:
    """(name, size, mtime) of the pool's file(s): an edited pool starts a new run."""
    path = Path(pool)
    files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
    return [(str(f.relative_to(path)) if path.is_dir() else f.name, f.stat().st_size, f.stat().st_mtime_ns)
            for f in files if f.exists()]


def run_id(cfg: ScoringConfig, model: str, pool: str, details: bool) -> str:
    """Hash of everything that changes the numbers (and whether details are kept)."""
    blob = {"cfg": to_dict(cfg), "model": os.path.abspath(model) if os.path.exists(model) else model,
            "pool": os.path.abspath(pool), "pool_files": pool_fingerprint(pool), "details": details}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


class ScoreBatch:
    """Ray Data UDF: builds its worker once per actor (by default the TaskScorer, which
    loads the model), processes a pyarrow batch of tasks, writes the batch's rows as part
    files, and returns the batch's task ids. `make` = "module:Class" of a worker with
    `process(tasks, details) -> (rows, detail_rows)` (the evaluator uses the same pool)."""

    def __init__(self, model: str, cfg: Any, parts_dir: str, details: bool, trust_remote_code: bool,
                 torch_threads: int = 0, make: str = "raysys.scoring.scorer:TaskScorer",
                 detail_schema: pa.Schema | None = None):
        import importlib

        import torch

        if torch_threads:  # CPU actors share the machine's cores instead of each taking all
            torch.set_num_threads(torch_threads)
        module, _, name = make.partition(":")
        self.worker = getattr(importlib.import_module(module), name)(model, cfg, trust_remote_code=trust_remote_code)
        self.parts_dir, self.details = Path(parts_dir), details
        self.detail_schema = detail_schema or _detail_schema()

    def __call__(self, batch: pa.Table) -> dict[str, Any]:
        from raysys.schema import from_row

        tasks = [from_row(r) for r in batch.to_pylist()]
        rows, detail_rows = self.worker.process(tasks, details=self.details)
        name = uuid.uuid4().hex
        if self.details:  # details first: a scores part is the commit record of its batch
            write_parquet(self.parts_dir / f"details-{name}.parquet",
                          pa.Table.from_pylist(detail_rows, schema=self.detail_schema))
        write_parquet(self.parts_dir / f"scores-{name}.parquet", pa.Table.from_pylist(rows))
        return {"task_id": [r["task_id"] for r in rows]}


def _detail_schema() -> pa.Schema:
    return pa.schema([("task_id", pa.string()), ("instance_id", pa.string()), ("perturbation", pa.int32()),
                      ("prompt", pa.string()), ("target", pa.string()), ("p", pa.float64())])


def _score_parts(parts_dir: Path) -> list[Path]:
    return sorted(parts_dir.glob("scores-*.parquet"))


def done_task_ids(parts_dir: Path) -> set[str]:
    done: set[str] = set()
    for part in _score_parts(parts_dir):
        done.update(pq.read_table(part, columns=["task_id"]).column("task_id").to_pylist())
    return done


def _pool_parquet(pool: str, run_dir: Path) -> tuple[str, int]:
    """A canonical Parquet path for the pool and its task count; other formats are
    converted once into the run's folder (the run id changes when the pool does)."""
    if pool.endswith(".parquet") and Path(pool).is_file():
        return pool, pq.ParquetFile(pool).metadata.num_rows
    from raysys.pools import load_pool, write_parquet_tasks

    converted = run_dir / "pool.parquet"
    if not converted.exists():
        write_parquet_tasks(list(load_pool(pool).tasks), converted)
    return str(converted), pq.ParquetFile(converted).metadata.num_rows


class _Progress:
    """One self-rewriting line on a terminal; a line every 10 s otherwise (logs, CI)."""

    def __init__(self, total: int, done: int):
        self.total, self.done, self.t0, self.last = total, done, time.perf_counter(), 0.0
        self.tty = sys.stderr.isatty()

    def update(self, now: int) -> None:
        t = time.perf_counter() - self.t0
        if not self.tty and t - self.last < 10:
            return
        self.last = t
        rate = now / max(t, 1e-9)
        left = (self.total - self.done - now) / rate if rate else float("inf")
        line = f"  {self.done + now}/{self.total} tasks scored, {rate:.1f} tasks/s, ~{left:.0f} s left"
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def _actor_resources(actors: int, gpus_per_actor: float, cpus: float | None = None) -> tuple[dict[str, float], int]:
    """Ray resources per scorer actor and torch threads per actor; fails fast when the
    cluster (or `cpus`, this call's share of it) cannot host the actors (instead of
    hanging on a resource request)."""
    import ray

    have = ray.cluster_resources()
    cpus = have.get("CPU", 0) if cpus is None else cpus
    if gpus_per_actor:
        need = actors * gpus_per_actor
        if have.get("GPU", 0) < need:
            raise RaysysError(f"{actors} scorer actor(s) x {gpus_per_actor:g} GPU need {need:g} GPUs; "
                              f"the cluster has {have.get('GPU', 0):g}")
        return {"num_gpus": gpus_per_actor, "num_cpus": min(1.0, max(cpus - 1, 0.25) / actors)}, 0
    # CPU actors: leave one CPU for Ray Data's file listing and read tasks (each asks for a
    # whole CPU), or the pipeline would wait on them forever.
    per_actor = min(1.0, (cpus - 1) / actors)
    if per_actor < 0.25:
        raise RaysysError(f"{actors} scorer actor(s) need at least {actors * 0.25 + 1:g} CPUs; "
                          f"the cluster has {cpus:g}")
    return {"num_cpus": per_actor}, max(1, int(cpus // actors))


@dataclass(frozen=True)
class Mapped:
    order: list[str]  # the pool's task ids, in pool order
    n_tasks: int
    n_resumed: int
    n_now: int


def map_pool(pool: str, parts_dir: Path, model: str, cfg: Any, *, actors: int = 1,
             gpus_per_actor: float | None = None, details: bool = False, trust_remote_code: bool = False,
             num_cpus: int | None = None, progress: bool = True, make: str = "raysys.scoring.scorer:TaskScorer",
             detail_schema: pa.Schema | None = None, verb: str = "scoring", cpus: float | None = None) -> Mapped:
    """Run `make`'s worker over every task of `pool` not yet in `parts_dir` on an actor
    pool (the one Ray Data map_batches of raysys); each batch lands as part files there.
    `cfg` needs `tasks_per_batch`; `cpus` is this call's share of the cluster (default: all)."""
    import ray
    import ray.data
    from ray.data import ActorPoolStrategy

    parts_dir.mkdir(parents=True, exist_ok=True)
    pool_path, n_tasks = _pool_parquet(pool, parts_dir)
    done = done_task_ids(parts_dir)
    order = pq.read_table(pool_path, columns=["task_id"]).column("task_id").to_pylist()
    n_resumed = len(set(order) & done)
    remaining = n_tasks - n_resumed
    if progress:
        print(f"{verb} {remaining} of {n_tasks} tasks ({n_tasks - remaining} already done) with {actors} actor(s)",
              file=sys.stderr)
    now = 0
    if remaining:
        ray_init(num_cpus)
        if gpus_per_actor is None:
            gpus_per_actor = 1.0 if ray.cluster_resources().get("GPU", 0) else 0.0
        resources, torch_threads = _actor_resources(actors, gpus_per_actor, cpus)
        ds = ray.data.read_parquet(pool_path, num_cpus=0.25)
        if done:
            done_arr = pa.array(sorted(done))
            ds = ds.map_batches(lambda t: t.filter(pc.invert(pc.is_in(t["task_id"], value_set=done_arr))),
                                batch_format="pyarrow", num_cpus=0.25)
        # blocks of one actor batch each, so that every actor gets work even from a single-file pool
        ds = ds.repartition(target_num_rows_per_block=cfg.tasks_per_batch)
        mapped = ds.map_batches(
            ScoreBatch,
            fn_constructor_kwargs={"model": model, "cfg": cfg, "parts_dir": str(parts_dir), "details": details,
                                   "trust_remote_code": trust_remote_code, "torch_threads": torch_threads,
                                   "make": make, "detail_schema": detail_schema},
            compute=ActorPoolStrategy(size=actors),
            batch_size=cfg.tasks_per_batch,
            batch_format="pyarrow",
            **resources,
        )
        bar = _Progress(n_tasks, n_resumed) if progress else None
        for batch in mapped.iter_batches(batch_size=None, batch_format="pyarrow"):
            now += batch.num_rows
            if bar:
                bar.update(now)
        if bar:
            bar.close()
    return Mapped(order, n_tasks, n_resumed, now)


def score_pool(
    pool: str,
    model: str,
    out: str,
    cfg: ScoringConfig = ScoringConfig(),
    *,
    actors: int = 1,
    gpus_per_actor: float | None = None,
    details: str | None = None,
    trust_remote_code: bool = False,
    num_cpus: int | None = None,
    progress: bool = True,
    cpus: float | None = None,
) -> ScoreRun:
    """Score every task of `pool` with `model` into `out` (Parquet); see the module docstring."""
    start = time.perf_counter()
    check_model_path(model)  # fail here, not inside every actor
    detect_format(pool)  # a missing or unreadable pool fails before anything is created
    run = run_id(cfg, model, pool, details is not None)
    parts_dir = Path(f"{out}.parts") / run
    mapped = map_pool(pool, parts_dir, model, cfg, actors=actors, gpus_per_actor=gpus_per_actor,
                      details=details is not None, trust_remote_code=trust_remote_code, num_cpus=num_cpus,
                      progress=progress, cpus=cpus)
    order, n_tasks, n_resumed, scored_now = mapped.order, mapped.n_tasks, mapped.n_resumed, mapped.n_now
    _merge(parts_dir, order, out, details, cfg, model, run)
    return ScoreRun(out=out, n_tasks=n_tasks, n_scored_now=scored_now, n_resumed=n_resumed,
                    seconds=time.perf_counter() - start, details=details)


def _merge(parts_dir: Path, order: list[str], out: str, details: str | None,
           cfg: ScoringConfig, model: str, run: str) -> None:
    """One row per task of `order` (the pool's task ids) from the score parts (first part
    wins), checked complete, in pool order."""
    rank = {tid: i for i, tid in enumerate(order)}
    chosen: dict[str, str] = {}  # task_id -> part uuid
    tables = []
    for part in _score_parts(parts_dir):
        t = pq.read_table(part)
        name = part.stem.removeprefix("scores-")
        keep = [tid not in chosen and tid in rank for tid in t.column("task_id").to_pylist()]
        for tid, k in zip(t.column("task_id").to_pylist(), keep):
            if k:
                chosen[tid] = name
        tables.append(t.filter(pa.array(keep)))
    missing = [tid for tid in order if tid not in chosen]
    if missing:
        raise RaysysError(f"{len(missing)} task(s) were not scored (e.g. {missing[0]}); rerun the same command "
                          f"to finish them (finished work is kept in {parts_dir})")
    table = pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})
    ids = table.column("task_id").to_pylist()
    table = table.take(pa.array(sorted(range(table.num_rows), key=lambda i: rank[ids[i]])))  # pool order
    table = table.append_column("model", pa.array([model] * table.num_rows))
    table = table.append_column("config_hash", pa.array([run] * table.num_rows))
    meta = {RUN_KEY: run, "raysys_scoring_config": json.dumps(to_dict(cfg), sort_keys=True), "raysys_model": model}
    write_parquet(out, table.replace_schema_metadata(meta))
    if details:
        parts = []
        for part in sorted(parts_dir.glob("details-*.parquet")):
            name = part.stem.removeprefix("details-")
            t = pq.read_table(part)
            keep = [chosen.get(tid) == name for tid in t.column("task_id").to_pylist()]
            parts.append(t.filter(pa.array(keep, type=pa.bool_())))
        merged = pa.concat_tables(parts) if parts else pa.Table.from_pylist([], schema=_detail_schema())
        with atomic_path(details) as tmp:
            pq.write_table(merged, tmp)


class GenerateBatch:
    """Ray Data UDF: greedy answers of one model to a batch of prompt rows (`prompt`)."""

    def __init__(self, model: str, cfg: Any, trust_remote_code: bool, torch_threads: int = 0):
        import torch

        from raysys.scoring.scorer import TaskScorer

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.scorer = TaskScorer(model, cfg, trust_remote_code=trust_remote_code)

    def __call__(self, batch: pa.Table) -> pa.Table:
        answers = self.scorer.generate(batch.column("prompt").to_pylist())
        return batch.append_column("answer", pa.array(answers, type=pa.string()))


def generate_rows(rows: list[dict[str, Any]], model: str, cfg: Any, *, actors: int = 1,
                  gpus_per_actor: float | None = None, trust_remote_code: bool = False,
                  num_cpus: int | None = None) -> list[dict[str, Any]]:
    """Each row (with a `prompt`) plus the model's greedy `answer`, generated on an actor
    pool (cfg: a ScoringConfig: max_new_tokens, generation_batch, tasks_per_batch rows per
    actor call); the result keeps the rows' order."""
    import ray
    import ray.data
    from ray.data import ActorPoolStrategy

    if not rows:
        return []
    ray_init(num_cpus)
    if gpus_per_actor is None:
        gpus_per_actor = 1.0 if ray.cluster_resources().get("GPU", 0) else 0.0
    resources, torch_threads = _actor_resources(actors, gpus_per_actor)
    indexed = [{**r, "_row": i} for i, r in enumerate(rows)]
    ds = ray.data.from_items(indexed).repartition(target_num_rows_per_block=cfg.tasks_per_batch)
    out = ds.map_batches(GenerateBatch, fn_constructor_kwargs={"model": model, "cfg": cfg,
                                                               "trust_remote_code": trust_remote_code,
                                                               "torch_threads": torch_threads},
                         compute=ActorPoolStrategy(size=actors), batch_size=cfg.tasks_per_batch,
                         batch_format="pyarrow", **resources)
    result = sorted(out.take_all(), key=lambda r: r["_row"])
    return [{k: v for k, v in r.items() if k != "_row"} for r in result]
