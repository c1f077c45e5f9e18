"""A run's work dir. It holds one run (a loop or an experiment): its settings are saved
on the first run and a rerun with other settings is refused, naming the fields (work_dir
itself may differ: a moved folder). Its inputs are made once and reused by reruns: the pool as
canonical Parquet (a synthetic pool from its config, or any pool raysys reads, converted)
and the base model folder (the given one, or the built-in tiny model written there). The
active loop and the experiments share these."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from raysys.config import ModelConfig, SynthConfig, TinyConfig
from raysys.config.mapping import to_dict
from raysys.errors import RaysysError
from raysys.io import read_json, write_json
from raysys.pools.subset import pool_copy


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def claim_work_dir(cfg, name: str, hint: str = "use another work_dir, or remove that folder") -> Path:
    """The resolved work dir (created), after checking that its `name`.json holds no
    other settings; then `name`.json holds `cfg`. A setting added to raysys since that
    run, at its default, is no difference (the run is resumed as it was)."""
    work = Path(cfg.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    saved = work / f"{name}.json"
    new = _flat(to_dict(cfg))
    if saved.is_file():
        old = _flat(read_json(saved))
        default = _flat(to_dict(type(cfg)()))
        diff = sorted(k for k in set(old) | set(new) if k != "work_dir" and old.get(k) != new.get(k)
                      and not (k not in old and k in default and new.get(k) == default[k]))
        if diff:
            raise RaysysError(f"{work} holds a {name} run with other settings ({', '.join(diff[:8])} differ); "
                              + hint)
    write_json(saved, to_dict(cfg))
    return work


def work_pool(work: Path, pool: str, synth: SynthConfig, say: Callable[[str], None] = print) -> Path:
    """work/pool.parquet: `pool` converted (once), or the synthetic pool of `synth` when
    `pool` is "" (rewritten only when the config changed)."""
    from raysys.pools.synthetic import write_synthetic_pool

    out = work / "pool.parquet"
    if not pool:
        if write_synthetic_pool(synth, out):
            say(f"synthetic pool written to {out}")
    else:
        pool_copy(pool, out)  # a copy even of a Parquet pool: the work dir holds its own
    return out


def model_name(model: ModelConfig) -> str:
    """How results name the base model: its path as configured, or "tiny" for the built-in one."""
    return model.path or "tiny"


def work_model(work: Path, model: ModelConfig, tiny: TinyConfig, say: Callable[[str], None] = print) -> str:
    """model.path; its import in the model cache when it is an import source (a known name
    such as smollm2-135m-instruct, or a .gguf: raysys.models.gguf.folder_of, once); or
    work/tiny-model (the built-in tiny model of `tiny`, written once)."""
    from raysys.models import init_tiny
    from raysys.models.gguf import folder_of

    if model.path:
        return folder_of(model.path, say)
    path = str(work / "tiny-model")
    if not (Path(path) / "config.json").is_file():
        init_tiny(path, tiny)
        say(f"built-in tiny model written to {path}")
    return path
