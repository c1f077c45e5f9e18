"""◆ Running the instruction-diversity grid on Ray Tune: one trial per cell, each training
the tiny model from scratch in its own process on its own CPUs (or GPU) and testing it on
the unseen rules. The learner is injected (`Learner`): the real one is `TinyLearner`;
tests pass stand-ins whose scores are known by construction.

Resume: a cell is finished once its result.json is written (atomically) in
<work_dir>/cells/<cell>/; a rerun reports finished cells at once and runs the others. The
table, the summary and the heatmap are rebuilt from those files, so they always cover
exactly the finished cells, and a failed cell is named, never dropped.
"""
from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from raysys.config import GenerationConfig
from raysys.config.experiments import DiversityConfig
from raysys.console import relay, to_log
from raysys.errors import RaysysError
from raysys.experiments.diversity import (
    Cell,
    cell_result,
    cells,
    equal_example_pairs,
    exact_matches,
    plot_heatmaps,
    prompt_rows,
    render,
    render_pairs,
    summarize,
    training_tasks,
    unseen_tasks,
)
from raysys.io import atomic_dir, read_json, write_json, write_rows_csv
from raysys.runs.workdir import claim_work_dir

RESULT = "result.json"


class Learner(Protocol):
    def fit(self, cfg: DiversityConfig, cell: Cell, rows: Sequence[dict], out_dir: Path,
            device: str) -> tuple[Any, dict]:
        """Train on rows ({prompt, target}); (model handle, {"losses": [...], "seconds": s})."""

    def answer(self, model: Any, cfg: DiversityConfig, prompts: Sequence[str], device: str) -> list[str]:
        """Greedy answers of the trained model."""


@dataclass(frozen=True)
class TinyLearner:
    """The built-in tiny model, initialised from the cell's seed, trained in-process
    (raysys.training.local) and saved to <cell>/model (an ordinary HF folder)."""

    def fit(self, cfg, cell, rows, out_dir, device):
        from transformers.utils import logging as hf_logging

        from raysys.models import LoadedModel, char_tokenizer, tiny_model
        from raysys.training.local import train_steps

        hf_logging.disable_progress_bar()
        tiny = replace(cfg.tiny, seed=cell.seed)
        model, tok = tiny_model(tiny), char_tokenizer(tiny.arch, tiny.max_positions)
        kind = "seq2seq" if tiny.arch == "t5" else "causal"
        stats = train_steps(model, tok, kind, rows, replace(cfg.train, seed=cell.seed), cfg.steps, device=device,
                            log=lambda m: print(f"{cell.cell_id}: {m}", flush=True), log_every=max(1, cfg.steps // 5))
        target = out_dir / "model"
        with atomic_dir(target) as tmp:
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
        return LoadedModel(model, tok, kind, str(target)), stats

    def answer(self, model, cfg, prompts, device):
        from raysys.models.runner import ModelRunner

        gen = GenerationConfig(max_new_tokens=cfg.max_new_tokens, batch=256)
        return ModelRunner(model.name, gen, loaded=model, device=device).generate(prompts)


def cell_dir(work: Path, cell: Cell) -> Path:
    return work / "cells" / cell.cell_id


def run_cell(cfg: DiversityConfig, cell: Cell, learner: Learner, work: Path, device: str = "cpu",
             say: Callable[[str], None] = print) -> dict:
    """Train and test one cell (or read its finished result)."""
    out = cell_dir(work, cell)
    if (out / RESULT).is_file():
        return read_json(out / RESULT)
    out.mkdir(parents=True, exist_ok=True)
    test = unseen_tasks(cfg, cell.family, cell.seed)
    train = training_tasks(cfg, cell, test)
    rows = prompt_rows(train, cfg.train.prompt.template)
    say(f"{cell.cell_id}: {len(train)} rules, {len(rows)} distinct examples, {cfg.steps} steps")
    model, stats = learner.fit(cfg, cell, rows, out, device)
    test_rows = prompt_rows(test, cfg.train.prompt.template)
    seen_rows = prompt_rows(train[: cfg.seen_checked], cfg.train.prompt.template, per_task=1)
    answers = learner.answer(model, cfg, [r["prompt"] for r in test_rows + seen_rows], device)
    test_em = exact_matches(test_rows, answers[: len(test_rows)])
    seen_em = exact_matches(seen_rows, answers[len(test_rows):])["all"] if seen_rows else None
    row = cell_result(cell, cfg, len(rows), stats["losses"], stats["seconds"], test_em, seen_em)
    write_json(out / RESULT, row)
    return row


def _trial(config: dict[str, Any], *, cfg: DiversityConfig, learner: Learner, work: str, gpus: float) -> None:
    import torch
    from ray import tune

    torch.set_num_threads(cfg.cpus_per_cell)
    cell = Cell(**config["cell"])
    row = run_cell(cfg, cell, learner, Path(work), "cuda" if gpus else "cpu", say=relay)
    tune.report({k: v for k, v in row.items() if isinstance(v, (int, float, str))})


def run_diversity(cfg: DiversityConfig, learner: Learner | None = None, *, num_cpus: int | None = None,
                  say: Callable[[str], None] = print) -> dict[str, Any]:
    """Every cell (finished ones are read back), then the table and the heatmap."""
    import ray
    from ray import tune

    from raysys.cluster import ray_init

    learner = learner or TinyLearner()
    work = claim_work_dir(cfg, "diversity")
    grid = cells(cfg)
    todo = [c for c in grid if not (cell_dir(work, c) / RESULT).is_file()]
    say(f"diversity: {len(grid)} cells ({len(grid) - len(todo)} finished before), {cfg.steps} steps x "
        f"{cfg.train.batch_size} examples each; work dir {work}")
    if todo:
        ray_init(num_cpus)
        res = ray.cluster_resources()
        gpus = (1.0 if res.get("GPU", 0) > 0 else 0.0) if cfg.gpus_per_cell < 0 else float(cfg.gpus_per_cell)
        if res.get("CPU", 0) < cfg.cpus_per_cell or res.get("GPU", 0) < gpus:
            raise RaysysError(f"a cell needs {cfg.cpus_per_cell} CPU(s) and {gpus:g} GPU(s); the cluster has "
                              f"{res.get('CPU', 0):g} CPUs and {res.get('GPU', 0):g} GPUs")
        trainable = tune.with_resources(
            tune.with_parameters(_trial, cfg=cfg, learner=learner, work=str(work), gpus=gpus),
            {"cpu": cfg.cpus_per_cell, "gpu": gpus})
        shutil.rmtree(work / "tune", ignore_errors=True)  # progress lives in cells/; Tune's state is per run
        tuner = tune.Tuner(
            trainable,
            param_space={"cell": tune.grid_search([asdict(c) for c in todo])},
            tune_config=tune.TuneConfig(trial_dirname_creator=lambda t: Cell(**t.config["cell"]).cell_id),
            run_config=tune.RunConfig(name="tune", storage_path=str(work), verbose=0))
        with to_log():  # Tune's own prints (its experiment box, where results go)
            failed = [r for r in tuner.fit() if r.error]
        if failed:
            lines = [f"  {Cell(**r.config['cell']).cell_id}: {str(r.error).strip().splitlines()[-1]}" for r in failed]
            raise RaysysError(f"{len(failed)} of {len(todo)} cell(s) failed:\n" + "\n".join(lines)
                              + "\nfinished cells are kept; rerun the same command to run the rest")
    return write_results(cfg, work, grid)


def write_results(cfg: DiversityConfig, work: Path, grid: Sequence[Cell]) -> dict[str, Any]:
    import pyarrow as pa

    from raysys.io import atomic_path, write_parquet, write_text

    rows = [read_json(cell_dir(work, c) / RESULT) for c in grid]
    table = pa.Table.from_pylist(rows)
    write_parquet(work / "cells.parquet", table)
    with atomic_path(work / "cells.csv") as tmp:  # one row per cell and seed
        table.to_pandas().to_csv(tmp, index=False)
    summary = summarize(rows)
    with atomic_path(work / "diversity.csv") as tmp:
        summary.to_csv(tmp, index=False)
    with atomic_path(work / "diversity.png") as tmp:
        plot_heatmaps(summary, tmp)
    pairs = equal_example_pairs(rows)
    write_rows_csv(work / "pairs.csv", pairs, PAIR_COLUMNS)
    text = render(summary) + ("\n\nat equal distinct examples, more rules minus fewer (unseen-rule exact match):\n"
                              + render_pairs(pairs) if pairs else "")
    write_text(work / "diversity.txt", text + "\n")
    print(f"diversity: {len(rows)} cells done", file=sys.stderr)
    return {"rows": rows, "summary": summary, "text": text, "table": str(work / "diversity.csv"),
            "cells": str(work / "cells.csv"), "heatmap": str(work / "diversity.png"), "pairs": pairs,
            "pairs_csv": str(work / "pairs.csv")}


PAIR_COLUMNS = ("family", "skew", "distinct_examples", "more_rules", "fewer_rules", "seeds", "difference", "std",
                "ci95_low", "ci95_high", "detectable", "more_rules_won", "copy_floor")
