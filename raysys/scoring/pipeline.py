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
parts. Run keys, part files and CPU shares are raysys.runs's.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raysys.config import ScoringConfig, to_dict
from raysys.console import Progress, stage
from raysys.errors import InvalidFile, RaysysError
from raysys.io import write_parquet
from raysys.models import check_model_path, prompt_template
from raysys.pools import detect_format
from raysys.rayinit import ray_init
from raysys.runs import Parts, as_parquet, cpu_share, model_ref, pool_stats, run_key

RUN_KEY = "raysys_scoring_run"


@dataclass(frozen=True)
class ScoreRun:
    out: str
    n_tasks: int
    n_scored_now: int
    n_resumed: int
    seconds: float
    details: str | None


def scoring_setup(path: str | Path) -> tuple[str, ScoringConfig]:
    """The model and ScoringConfig a scores file was made with (the metadata score_pool writes)."""
    from raysys.configio import from_mapping

    meta = pq.read_schema(path).metadata or {}
    if b"raysys_model" not in meta or b"raysys_scoring_config" not in meta:
        raise InvalidFile(Path(path), "no raysys scoring metadata (model, config): not written by raysys score")
    return meta[b"raysys_model"].decode(), from_mapping(ScoringConfig, json.loads(meta[b"raysys_scoring_config"]),
                                                        f"{path} (scoring config)")


def run_id(cfg: Any, model: str, pool: str, details: bool, **more: Any) -> str:
    """Hash of everything that changes the numbers (and whether details are kept); `more`:
    what else a caller's run depends on (evaluation: the task ids)."""
    return run_key({"cfg": to_dict(cfg), "model": model_ref(model), "pool": str(Path(pool).resolve()),
                    "pool_files": pool_stats(pool), "details": details, **more})


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
        self.parts, self.details = Parts(Path(parts_dir)), details
        self.detail_schema = detail_schema or DETAIL_SCHEMA

    def __call__(self, batch: pa.Table) -> dict[str, Any]:
        from raysys.schema import from_row

        tasks = [from_row(r) for r in batch.to_pylist()]
        rows, detail_rows = self.worker.process(tasks, details=self.details)
        self.parts.write(rows, detail_rows if self.details else None, self.detail_schema)
        return {"task_id": [r["task_id"] for r in rows]}


DETAIL_SCHEMA = pa.schema([("task_id", pa.string()), ("instance_id", pa.string()), ("perturbation", pa.int32()),
                           ("prompt", pa.string()), ("target", pa.string()), ("p", pa.float64())])


def _pool_parquet(pool: str, run_dir: Path) -> tuple[str, int]:
    """A canonical Parquet path for the pool and its task count; other formats are
    converted once into the run's folder (the run id changes when the pool does)."""
    path = as_parquet(pool, run_dir / "pool.parquet")
    return path, pq.ParquetFile(path).metadata.num_rows


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
    per_actor, threads = cpu_share(actors, cpus, f"{actors} scorer actor(s)")
    return {"num_cpus": per_actor}, threads


@dataclass(frozen=True)
class Mapped:
    pool: str  # the pool as canonical Parquet
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
    done = Parts(parts_dir).done()
    order = pq.read_table(pool_path, columns=["task_id"]).column("task_id").to_pylist()
    n_resumed = len(set(order) & done)
    remaining = n_tasks - n_resumed
    if progress:
        stage(f"{verb} {remaining} of {n_tasks} tasks ({n_tasks - remaining} already done) with {actors} actor(s)")
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
        bar = Progress(verb, n_tasks, "tasks", done=n_resumed) if progress else None
        for batch in mapped.iter_batches(batch_size=None, batch_format="pyarrow"):
            now += batch.num_rows
            if bar:
                bar.update(n_resumed + now)
        if bar:
            bar.close()
    return Mapped(pool_path, order, n_tasks, n_resumed, now)


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
    prompt_template(model, cfg.prompt.template, cfg.prompt.chat_body, trust_remote_code)  # a chat template: usable?
    detect_format(pool)  # a missing or unreadable pool fails before anything is created
    run = run_id(cfg, model, pool, details is not None)
    parts_dir = Path(f"{out}.parts") / run
    flags = dict(actors=actors, gpus_per_actor=gpus_per_actor, trust_remote_code=trust_remote_code,
                 num_cpus=num_cpus, progress=progress, cpus=cpus)
    if cfg.racing:
        mapped, table, detail_table = _race_pool(pool, parts_dir, model, cfg, flags)
    else:
        mapped = map_pool(pool, parts_dir, model, cfg, details=details is not None, **flags)
        table, chosen = Parts(parts_dir).merge(mapped.order)
        detail_table = Parts(parts_dir).merged_details(chosen, DETAIL_SCHEMA) if details else None
    table = table.append_column("model", pa.array([model] * table.num_rows))
    table = table.append_column("config_hash", pa.array([run] * table.num_rows))
    # scoring_setup reads these back
    meta = {RUN_KEY: run, "raysys_scoring_config": json.dumps(to_dict(cfg), sort_keys=True), "raysys_model": model}
    write_parquet(out, table.replace_schema_metadata(meta))
    if details:
        write_parquet(details, detail_table)
    return ScoreRun(out=out, n_tasks=mapped.n_tasks, n_scored_now=mapped.n_now, n_resumed=mapped.n_resumed,
                    seconds=time.perf_counter() - start, details=details)


def _race_pool(pool: str, run_dir: Path, model: str, cfg: ScoringConfig,
               flags: dict[str, Any]) -> tuple[Mapped, pa.Table, pa.Table]:
    """Racing on the actor pool (raysys.scoring.race): round r's parts in
    `run_dir/round-r`, over a subset pool of its open tasks; round 0's answers in
    `run_dir/answers.parquet`. Every decision is a function of the parts, so a rerun
    redoes none of the finished work. Returns round 0's Mapped (task counts)."""
    from raysys.runs import subset_pool
    from raysys.scoring.race import RaceRound, race

    answers = run_dir / "answers.parquet"
    first: list[Mapped] = []

    def run_round(r: int, columns: tuple[int, ...], ids: list[str], given) -> tuple[list[dict], list[dict]]:
        folder = run_dir / f"round-{r}"
        sub = pool if r == 0 else subset_pool(first[0].pool, ids, folder / "pool.parquet")
        verb = f"racing round {r + 1} (perturbations {max(columns[0], 1)}-{columns[-1]}): scoring"
        mapped = map_pool(sub, folder, model, RaceRound(cfg, columns, str(answers) if r else ""), details=True,
                          make="raysys.scoring.race:RoundScorer", verb=verb, **flags)
        table, chosen = Parts(folder).merge(ids)
        rows = Parts(folder).merged_details(chosen, DETAIL_SCHEMA).to_pylist()
        if r == 0:
            first.append(mapped)
            if not answers.is_file():
                write_parquet(answers, pa.Table.from_pylist(
                    [{k: d[k] for k in ("task_id", "instance_id", "perturbation", "target")} for d in rows
                     if d["perturbation"] == 0]))
        return table.to_pylist(), rows

    def on_round(r: int, m: int, n_open: int, n_decided: int) -> None:
        if flags.get("progress", True):
            stage(f"racing: {n_decided} task(s) decided after {m} perturbations, {n_open} open")

    order = _pool_order(pool, run_dir / "round-0")
    result = race(order, cfg, run_round, on_round)
    return first[0], pa.Table.from_pylist(result.rows), pa.Table.from_pylist(result.details, schema=DETAIL_SCHEMA)


def _pool_order(pool: str, folder: Path) -> list[str]:
    """The pool's task ids in pool order (its canonical Parquet copy is made in `folder`)."""
    folder.mkdir(parents=True, exist_ok=True)
    path, _ = _pool_parquet(pool, folder)
    return pq.read_table(path, columns=["task_id"]).column("task_id").to_pylist()


class GenerateBatch:
    """Ray Data UDF: greedy answers of one model to a batch of prompt rows (`prompt`)."""

    def __init__(self, model: str, cfg: Any, trust_remote_code: bool, torch_threads: int = 0):
        import torch

        from raysys.scoring.runner import ModelRunner

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.runner = ModelRunner(model, cfg.generation, trust_remote_code=trust_remote_code)

    def __call__(self, batch: pa.Table) -> pa.Table:
        answers = self.runner.generate(batch.column("prompt").to_pylist())
        return batch.append_column("answer", pa.array(answers, type=pa.string()))


def generate_rows(rows: list[dict[str, Any]], model: str, cfg: Any, *, actors: int = 1,
                  gpus_per_actor: float | None = None, trust_remote_code: bool = False,
                  num_cpus: int | None = None) -> list[dict[str, Any]]:
    """Each row (with a `prompt`) plus the model's greedy `answer`, generated on an actor
    pool (cfg: any config with `generation` and `tasks_per_batch` (rows per
    actor call)); the result keeps the rows' order."""
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
