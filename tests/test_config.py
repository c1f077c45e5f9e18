"""Configs: every shipped YAML loads; overrides, validation and hashing."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from config_kinds import kind_of

from raysys.config import DemoConfig, LoopConfig, SynthConfig
from raysys.config.mapping import config_hash, load_config, to_dict
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


def test_the_tiny_loop_yaml_is_the_loops_embedded_default():
    cfg = load_config(LoopConfig, CONFIGS[0].parent / "loop_demo_tiny.yaml")
    assert replace(cfg, work_dir=LoopConfig().work_dir) == LoopConfig()


def test_overrides_nested_and_typed():
    cfg = load_config(LoopConfig, None, ["synth.rules=10", "synth.families=[repeated:2, mirror:1]", "synth.skew=1"])
    synth = cfg.synth
    assert synth.rules == 10 and synth.families == ("repeated:2", "mirror:1") and synth.skew == 1.0
    assert synth.unseen_rules == LoopConfig().synth.unseen_rules  # a partial section keeps its defaults
    assert cfg.train == LoopConfig().train
    demo = load_config(DemoConfig, None, ["train.epochs=1", "heldout=[a.jsonl]"])
    assert demo.train.epochs == 1 and demo.heldout == ("a.jsonl",) and demo.train.lora
    with pytest.raises(Exception):
        synth.rules = 3  # frozen


@pytest.mark.parametrize("overrides, message", [
    (["synth.rulez=3"], "unknown key"),
    (["synth.rules=many"], "expected int"),
    (["synth.x_len=3"], "expected a list"),
    (["nokey"], "not key=value"),
    (["synth.skew=-2"], "skew"),
])
def test_bad_overrides(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(LoopConfig, None, overrides)


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


def test_shared_settings_are_set_once_at_the_top():
    """The loop's prompt and generation settings reach scoring, training and evaluation;
    a stage that sets its own, different value is refused, naming the section."""
    from raysys.config import GenerationConfig, LoopConfig, PromptConfig, ScoringConfig
    from raysys.config.experiments import NoveltyConfig

    cfg = load_config(LoopConfig, None, ["prompt.template=alpaca", "generation.max_new_tokens=7"])
    want = PromptConfig("alpaca", 0)
    assert cfg.scoring.prompt == cfg.train.prompt == cfg.evaluation.prompt == want
    assert cfg.scoring.generation == cfg.evaluation.generation == GenerationConfig(max_new_tokens=7)
    assert load_config(LoopConfig, None, ["prompt.template=alpaca"]) == load_config(
        LoopConfig, None, ["prompt.template=alpaca", "scoring.prompt.template=alpaca",
                           "scoring.prompt.demonstrations=0"])  # the same value: fine
    with pytest.raises(ConfigError, match="scoring.prompt is set apart from prompt"):
        load_config(LoopConfig, None, ["scoring.prompt.template=alpaca"])
    with pytest.raises(ConfigError, match="evaluation.generation is set apart"):
        LoopConfig(evaluation=load_config(LoopConfig).evaluation.__class__(generation=GenerationConfig(5)))
    nov = NoveltyConfig(prompt=PromptConfig("tk", 2))
    assert nov.scoring.prompt == nov.train.prompt == nov.base_train.prompt == PromptConfig("tk", 2)
    with pytest.raises(ConfigError, match="base_train.prompt"):
        load_config(NoveltyConfig, None, ["base_train.prompt.demonstrations=1"])
    assert ScoringConfig().prompt == PromptConfig()  # a stage on its own keeps its own


def test_saved_config_round_trips():
    """A config written as JSON (a loop's work dir) reads back equal, shared settings included."""
    from raysys.config import LoopConfig
    from raysys.config.mapping import from_mapping

    cfg = load_config(LoopConfig, None, ["prompt.demonstrations=2", "select.taskmap.ambiguous_share=0.2"])
    assert from_mapping(LoopConfig, to_dict(cfg)) == cfg


def test_registries_are_the_owning_modules():
    """Template and perturbation names are checked against the modules that own them."""
    from raysys.config import PromptConfig, ScoringConfig
    from raysys.perturb import KINDS
    from raysys.prompts import BODIES, TEMPLATES, prompt_parts

    for name in TEMPLATES:
        PromptConfig(template=name)
    for name in BODIES:
        prompt_parts(name, "Do it.", "x")  # every text template formats (chat wraps one: tests/test_chat.py)
    assert set(TEMPLATES) == set(BODIES) | {"chat"}
    for kind in KINDS:
        ScoringConfig(perturbation=kind)
    with pytest.raises(ConfigError, match="template must be one of"):
        PromptConfig(template="chatml")
    with pytest.raises(ConfigError, match="perturbation must be one of"):
        ScoringConfig(perturbation="shuffle")


def test_nested_fields_get_flat_flags():
    """`--template` sets prompt.template, `--generation-batch` generation.batch; flags,
    --set and YAML go through the same validation."""
    from raysys.cli.flags import config_from_args
    from raysys.cli.main import build_parser

    args = build_parser().parse_args(["score", "--pool", "p", "--model", "m", "--out", "o", "--template", "alpaca",
                                      "--demonstrations", "0", "--max-new-tokens", "9", "--generation-batch", "4",
                                      "--set", "seed=3"])
    cfg = config_from_args(args)
    assert (cfg.prompt.template, cfg.prompt.demonstrations, cfg.seed) == ("alpaca", 0, 3)
    assert (cfg.generation.max_new_tokens, cfg.generation.batch) == (9, 4)
    args = build_parser().parse_args(["select", "--out", "o", "--ambiguous-share", "0.2"])
    assert config_from_args(args).taskmap.ambiguous_share == 0.2
    args = build_parser().parse_args(["eval", "--pool", "p", "--model", "m", "--out", "o", "--max-new-tokens", "0"])
    with pytest.raises(ConfigError, match="max_new_tokens must be >= 1"):
        config_from_args(args)


@pytest.mark.parametrize("text, message", [
    ("rules: [unclosed\n", "not valid YAML \\(expected ',' or '\\]', but got '<stream end>' at line 2 column 1\\)"),
    ("- 1\n- 2\n", "expected a mapping, got list"),
    ("skew: .inf\n", "skew: expected a finite number, got inf"),
    ("skew: .nan\n", "skew: expected a finite number, got nan"),
    ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    (b"rules: \xff\n", "not valid UTF-8"),
    (None, "is a folder, expected a YAML file"),
])
def test_a_bad_config_file_is_one_line_naming_it(tmp_path, text, message):
    p = tmp_path / "synth_bad.yaml"
    if text is None:
        p.mkdir()
    elif isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text)
    with pytest.raises(ConfigError, match=message) as e:
        load_config(SynthConfig, p)
    assert str(e.value).startswith(str(p)) and "\n" not in str(e.value)


def test_a_bad_override_value_is_one_line():
    for item, message in [("skew=[unclosed", "value is not valid YAML \\(.* at line 1 column 10\\)"),
                          ("skew=.inf", "expected a finite number")]:
        with pytest.raises(ConfigError, match=message) as e:
            load_config(SynthConfig, None, [item])
        assert "\n" not in str(e.value)
