"""`raysys score`: every task of a pool scored on the actor pool (raysys.actors), resumably.

Each actor writes every finished batch to `<out>.parts/<run>/` as part files
(raysys.runs.parts); at the end the driver merges them into `out` (one row per task,
first part wins if a batch was ever retried after it was written) and writes it
atomically with its metadata (raysys.scoring.scores_file). A rerun of the same command
after Ctrl-C, a killed driver or a dead actor scores the rest only.

`<run>` is a hash of the scoring config, the model, the pool path and its files' sizes and
modification times (raysys.runs.keys.run_id), so a rerun with other settings or an edited
pool never mixes with old parts. With `racing` set, rounds of the race
(raysys.scoring.race_rounds) run on the same actor pool, one parts folder per round.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from raysys.actors import Mapped, map_pool
from raysys.config import ScoringConfig
from raysys.console import stage
from raysys.io import write_parquet
from raysys.models import check_model_path, prompt_template
from raysys.pools.load import detect_format
from raysys.pools.subset import as_parquet, subset_pool
from raysys.runs.keys import pool_stats, run_id
from raysys.runs.parts import Parts
from raysys.scoring.answers import read_answers
from raysys.scoring.race_rounds import RaceRound, race
from raysys.scoring.scores_file import DETAIL_SCHEMA, scores_metadata


@dataclass(frozen=True)
class ScoreRun:
    out: str
    n_tasks: int
    n_scored_now: int
    n_resumed: int
    seconds: float
    details: str | None


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
    more = {}
    if cfg.answers_from:  # the answers to score: readable, and part of the run's identity
        read_answers(cfg.answers_from)
        more["answers_file"] = pool_stats(cfg.answers_from)
    run = run_id(cfg, model, pool, details is not None, **more)
    parts_dir = Path(f"{out}.parts") / run
    flags = dict(actors=actors, gpus_per_actor=gpus_per_actor, trust_remote_code=trust_remote_code,
                 num_cpus=num_cpus, progress=progress, cpus=cpus)
    if cfg.racing:
        mapped, table, detail_table = _race_pool(pool, parts_dir, model, cfg, flags)
    else:
        mapped = map_pool("score", pool, parts_dir, model, cfg, details=details is not None,
                          detail_schema=DETAIL_SCHEMA, **flags)
        table, chosen = Parts(parts_dir).merge(mapped.order)
        detail_table = Parts(parts_dir).merged_details(chosen, DETAIL_SCHEMA) if details else None
    table = table.append_column("model", pa.array([model] * table.num_rows))
    table = table.append_column("config_hash", pa.array([run] * table.num_rows))
    write_parquet(out, table.replace_schema_metadata(scores_metadata(run, model, cfg)))
    if details:
        write_parquet(details, detail_table)
    return ScoreRun(out=out, n_tasks=mapped.n_tasks, n_scored_now=mapped.n_now, n_resumed=mapped.n_resumed,
                    seconds=time.perf_counter() - start, details=details)


def _race_pool(pool: str, run_dir: Path, model: str, cfg: ScoringConfig,
               flags: dict[str, Any]) -> tuple[Mapped, pa.Table, pa.Table]:
    """Racing on the actor pool (raysys.scoring.race_rounds): round r's parts in
    `run_dir/round-r`, over a subset pool of its open tasks; round 0's answers in
    `run_dir/answers.parquet`. Every decision is a function of the parts, so a rerun
    redoes none of the finished work. Returns round 0's Mapped (task counts)."""
    answers = run_dir / "answers.parquet"
    first: list[Mapped] = []

    def run_round(r: int, columns: tuple[int, ...], ids: list[str], given) -> tuple[list[dict], list[dict]]:
        folder = run_dir / f"round-{r}"
        sub = pool if r == 0 else subset_pool(first[0].pool, ids, folder / "pool.parquet")
        verb = f"racing round {r + 1} (perturbations {max(columns[0], 1)}-{columns[-1]}): scoring"
        mapped = map_pool("race", sub, folder, model, RaceRound(cfg, columns, str(answers) if r else ""),
                          details=True, detail_schema=DETAIL_SCHEMA, verb=verb, **flags)
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
    path = as_parquet(pool, folder / "pool.parquet")
    return pq.read_table(path, columns=["task_id"]).column("task_id").to_pylist()
