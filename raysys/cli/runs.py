"""The verbs that run a whole experiment (`raysys demo`, `raysys loop`, `raysys experiment
diversity|novelty|similarity|strategies`): each reads its config (file, overrides, --work-dir),
sends library output to the log in its work dir, runs, and prints its summary and the
paths of its outputs. raysys.cli builds the parser around them."""
from __future__ import annotations

import argparse
import sys

from raysys.cli.flags import start_log_in as _log
from raysys.errors import RaysysError


def demo(args: argparse.Namespace) -> int:
    from raysys.config import DemoConfig
    from raysys.config.mapping import load_config
    from raysys.experiments.demo import run_demo

    cfg = load_config(DemoConfig, args.config, args.overrides)
    _log(args, cfg.work_dir)
    run_demo(cfg)
    return 0


def loop(args: argparse.Namespace) -> int:
    from raysys.config import LoopConfig
    from raysys.loop.driver import run_loop, saved_config
    from raysys.loop.results import render

    if args.resume:
        if not args.work_dir:
            raise RaysysError("--resume needs --work-dir (the folder of the loop to continue)")
        if args.config or args.overrides:
            raise RaysysError("--resume continues with the settings saved in the work dir; give no config or overrides")
        cfg = saved_config(args.work_dir)
        _log(args, cfg.work_dir)
    else:
        cfg = _experiment_setup(LoopConfig, args)
    out = run_loop(cfg, seeds_now=args.seeds_now)
    print(render(out["summary"], out["paired"], out["costs"]))
    print("\n".join(f"{k}: {out[k]}" for k in ("table", "csv", "json", "curves", "uncertainty", "taskmap") if k in out))
    return 0


def _experiment_setup(cls, args: argparse.Namespace):
    """The config of an experiment verb (its file, overrides and --work-dir); its log goes to its work dir."""
    from raysys.config.mapping import load_config

    cfg = load_config(cls, args.config, args.overrides + ([f"work_dir={args.work_dir}"] if args.work_dir else []))
    _log(args, cfg.work_dir)
    return cfg


def _experiment(args: argparse.Namespace, cls, run, outputs: tuple[str, ...]) -> int:
    """An experiment verb: its config, the run (stage lines on stderr), its text and output paths."""
    out = run(_experiment_setup(cls, args), say=lambda m: print(m, file=sys.stderr))
    print(out["text"])
    print("\n".join(f"{k}: {out[k]}" for k in outputs))
    return 0


def experiment_diversity(args: argparse.Namespace) -> int:
    from raysys.config.experiments import DiversityConfig
    from raysys.experiments.diversity_run import run_diversity

    return _experiment(args, DiversityConfig, run_diversity, ("table", "cells", "heatmap"))


def experiment_novelty(args: argparse.Namespace) -> int:
    from raysys.config.experiments import NoveltyConfig
    from raysys.experiments.novelty_run import run_novelty

    return _experiment(args, NoveltyConfig, run_novelty, ("csv", "tasks", "figure", "json"))


def experiment_similarity(args: argparse.Namespace) -> int:
    from raysys.config.experiments import SimilarityConfig
    from raysys.experiments.similarity_run import run_similarity

    return _experiment(args, SimilarityConfig, run_similarity, ("csv", "figure", "json"))


def experiment_strategies(args: argparse.Namespace) -> int:
    from raysys.config.experiments import StrategiesConfig
    from raysys.experiments.comparison_run import run_strategies

    return _experiment(args, StrategiesConfig, run_strategies, ("csv", "figure", "json", "markdown"))
