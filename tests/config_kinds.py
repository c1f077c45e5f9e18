"""Test helper: which config dataclass a shipped YAML file holds: jobs/configs/<kind>.yaml or
<kind>_<name>.yaml (the stages' configs and the experiments')."""
from __future__ import annotations

from pathlib import Path

from raysys.config import (
    AlignConfig,
    DemoConfig,
    EvalConfig,
    LoopConfig,
    ScoringConfig,
    SelectConfig,
    SynthConfig,
    TaskMapConfig,
    TinyConfig,
    TrainConfig,
)
from raysys.config.experiments import DiversityConfig, NoveltyConfig, SimilarityConfig, StrategiesConfig
from raysys.errors import ConfigError

KINDS: dict[str, type] = {"demo": DemoConfig, "synth": SynthConfig, "tiny": TinyConfig, "score": ScoringConfig,
                          "select": SelectConfig, "align": AlignConfig, "taskmap": TaskMapConfig,
                          "train": TrainConfig, "eval": EvalConfig, "loop": LoopConfig,
                          "diversity": DiversityConfig, "novelty": NoveltyConfig,
                          "similarity": SimilarityConfig, "strategies": StrategiesConfig}


def kind_of(path: str | Path) -> type:
    kind = Path(path).stem.split("_", 1)[0]
    if kind not in KINDS:
        raise ConfigError(f"{path}: file name must start with one of {sorted(KINDS)} (then _name.yaml)")
    return KINDS[kind]
