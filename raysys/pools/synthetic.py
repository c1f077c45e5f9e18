"""Writing a synthetic pool to Parquet, resumably: a file made from the same config is
kept as it is (its config hash is stored in the file's metadata)."""
from __future__ import annotations

import json
from pathlib import Path

from raysys.config import SynthConfig
from raysys.config.mapping import config_hash, to_dict
from raysys.pools.canonical import file_metadata, write_parquet_tasks
from raysys.pools.markov import generate

HASH_KEY = "raysys_config_hash"


def write_synthetic_pool(cfg: SynthConfig, out: str | Path) -> bool:
    """Generate and write the pool of `cfg` to `out`; False when `out` was already made
    from this very config (nothing redone)."""
    digest = config_hash(cfg)
    if Path(out).exists() and file_metadata(out).get(HASH_KEY) == digest:
        return False
    meta = {HASH_KEY: digest, "raysys_synth_config": json.dumps(to_dict(cfg), sort_keys=True)}
    write_parquet_tasks(generate(cfg), out, metadata=meta)
    return True
