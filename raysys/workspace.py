"""A run's inputs inside its work dir, made once and reused by reruns: the pool as
canonical Parquet (a synthetic pool from its config, or any pool raysys reads, converted)
and the base model folder (the given one, or the built-in tiny model written there).
The active loop and the experiments share these."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from raysys.config import ModelConfig, SynthConfig, TinyConfig


def work_pool(work: Path, pool: str, synth: SynthConfig, say: Callable[[str], None] = print) -> Path:
    """work/pool.parquet: `pool` converted (once), or the synthetic pool of `synth` when
    `pool` is "" (rewritten only when the config changed)."""
    from raysys.pools import load_pool, write_parquet_tasks
    from raysys.synth import write_synthetic_pool

    out = work / "pool.parquet"
    if not pool:
        if write_synthetic_pool(synth, out):
            say(f"synthetic pool written to {out}")
    elif not out.is_file():
        write_parquet_tasks(list(load_pool(pool).tasks), out)
    return out


def work_model(work: Path, model: ModelConfig, tiny: TinyConfig, say: Callable[[str], None] = print) -> str:
    """model.path, or work/tiny-model (the built-in tiny model of `tiny`, written once)."""
    from raysys.models import init_tiny

    path = model.path or str(work / "tiny-model")
    if not model.path and not (Path(path) / "config.json").is_file():
        init_tiny(path, tiny)
        say(f"built-in tiny model written to {path}")
    return path
