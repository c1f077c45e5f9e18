"""The scores file's contract beyond its columns: the metadata `raysys score` writes (the
run key, the model, the scoring config) and `scoring_setup`, which reads them back; and
the schema of the per-prompt details file (`--details`). No Ray, no model."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from raysys.config import ScoringConfig
from raysys.config.mapping import from_mapping, to_dict
from raysys.errors import InvalidFile

RUN_KEY = "raysys_scoring_run"
MODEL_KEY = "raysys_model"
CONFIG_KEY = "raysys_scoring_config"

DETAIL_SCHEMA = pa.schema([("task_id", pa.string()), ("instance_id", pa.string()), ("perturbation", pa.int32()),
                           ("prompt", pa.string()), ("target", pa.string()), ("p", pa.float64())])


def scores_metadata(run: str, model: str, cfg: ScoringConfig) -> dict[str, str]:
    """The Parquet metadata of a scores file (what scoring_setup reads back)."""
    return {RUN_KEY: run, CONFIG_KEY: json.dumps(to_dict(cfg), sort_keys=True), MODEL_KEY: model}


def scoring_setup(path: str | Path) -> tuple[str, ScoringConfig]:
    """The model and ScoringConfig a scores file was made with."""
    meta = pq.read_schema(path).metadata or {}
    if MODEL_KEY.encode() not in meta or CONFIG_KEY.encode() not in meta:
        raise InvalidFile(Path(path), "no raysys scoring metadata (model, config): not written by raysys score")
    return meta[MODEL_KEY.encode()].decode(), from_mapping(ScoringConfig, json.loads(meta[CONFIG_KEY.encode()]),
                                                           f"{path} (scoring config)")
