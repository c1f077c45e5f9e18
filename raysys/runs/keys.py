"""Run keys, the one home of them: `run_key` hashes everything that changes a run's numbers
(a config, the model, the inputs) into a short name: a rerun with the same inputs finds
its earlier work, a changed one starts afresh. `model_ref` and `pool_stats` say what a
model and a pool are for that purpose (a local folder by its absolute path; a pool by its
files' names, sizes and modification times); `run_id` is the key of a stage run over a
pool. Knows nothing of models or Ray.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

from raysys.config.mapping import to_dict
from raysys.schema import Task


def model_ref(model: str) -> str:
    """A model as a run key sees it: a local folder by its absolute path, else its name."""
    return os.path.abspath(model) if os.path.exists(model) else model


def pool_stats(pool: str | os.PathLike) -> list:
    """(name, size, mtime) of the pool's file(s): an edited pool starts a new run."""
    path = Path(pool)
    files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
    return [(str(f.relative_to(path)) if path.is_dir() else f.name, f.stat().st_size, f.stat().st_mtime_ns)
            for f in files if f.exists()]


def run_key(blob: Any, prefix: str = "") -> str:
    """`prefix` + a 16-hex-digit hash of the JSON value `blob`."""
    return prefix + hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def tasks_content(tasks: Iterable[Task]) -> list:
    """What a run trained on tasks depends on, as a JSON value for `run_key`: each task's id,
    instruction, instances and demonstrations, and a conversation's turns (an edited task
    starts a new run)."""
    return [[t.task_id, t.instruction, [(i.id, i.input, list(i.outputs)) for i in t.instances],
             [(d.input, d.output) for d in t.demonstrations]]
            + ([[[(m.role, m.content) for m in i.context] for i in t.instances]] if t.conversation else [])
            for t in tasks]


def run_id(cfg: Any, model: str, pool: str, details: bool, **more: Any) -> str:
    """Hash of everything that changes a stage run's numbers (and whether details are
    kept); `more`: what else a caller's run depends on (evaluation: the task ids)."""
    return run_key({"cfg": to_dict(cfg), "model": model_ref(model), "pool": str(Path(pool).resolve()),
                    "pool_files": pool_stats(pool), "details": details, **more})
