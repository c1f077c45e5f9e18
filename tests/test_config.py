"""Configs: every shipped YAML loads; overrides, validation and hashing."""
from __future__ import annotations

from pathlib import Path

import pytest

from raysys.config import DemoConfig, SynthConfig, config_hash, kind_of, load_config, to_dict
from raysys.errors import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "jobs" / "configs").glob("*.yaml"))


def test_there_are_shipped_configs():
    assert len(CONFIGS) >= 3


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config(kind_of(path), path)
    assert to_dict(cfg)  # a valid, frozen dataclass


def test_demo_yaml_equals_the_embedded_default():
    assert load_config(DemoConfig, CONFIGS[0].parent / "demo.yaml") == DemoConfig()


def test_overrides_nested_and_typed():
    cfg = load_config(DemoConfig, None, ["loop.synth.rules=10", "loop.synth.families=[repeated:2, mirror:1]",
                                         "loop.synth.skew=1"])
    synth = cfg.loop.synth
    assert synth.rules == 10 and synth.families == ("repeated:2", "mirror:1") and synth.skew == 1.0
    assert synth.unseen_rules == DemoConfig().loop.synth.unseen_rules  # a partial section keeps its defaults
    assert cfg.loop.train == DemoConfig().loop.train
    with pytest.raises(Exception):
        synth.rules = 3  # frozen


@pytest.mark.parametrize("overrides, message", [
    (["loop.synth.rulez=3"], "unknown key"),
    (["loop.synth.rules=many"], "expected int"),
    (["loop.synth.x_len=3"], "expected a list"),
    (["nokey"], "not key=value"),
    (["loop.synth.skew=-2"], "skew"),
])
def test_bad_overrides(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(DemoConfig, None, overrides)


def test_bad_yaml_file(tmp_path):
    p = tmp_path / "synth_bad.yaml"
    p.write_text("rules: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(SynthConfig, p)
    with pytest.raises(ConfigError, match="no such config"):
        load_config(SynthConfig, tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="file name must start"):
        kind_of(tmp_path / "other.yaml")


def test_config_hash_is_stable_and_sensitive():
    assert config_hash(SynthConfig()) == config_hash(SynthConfig())
    assert config_hash(SynthConfig()) != config_hash(SynthConfig(seed=1))
