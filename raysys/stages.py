"""The stages every run is made of (score, select, train, evaluate): the one `Stages`
protocol and its Ray implementation, used by the active loop, every experiment and the
demo. Paths in, paths and numbers out; each stage is resumable on its own (a stage redone
after a crash reuses its finished scores, checkpoints and models).

`RayStages` reads only a narrow `StageSettings` (the stages' configs, the actor count and
trust_remote_code), built from any run config by `StageSettings.of`. The pool and test
pool are canonical Parquet files the caller wrote; a call's tasks are written next to its
outputs as a Parquet subset (once: a rerun finds the same file, so scoring resumes from
its parts).

`actors: 0` scores and evaluates inside the calling process instead of on a Ray Data actor
pool: for small pools on one machine, where starting actors (a Python process importing
torch and loading the model, per stage call) costs more than the work.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, Sequence

from raysys.config import EvalConfig, ScoringConfig, SelectConfig, TrainConfig
from raysys.evaluation.metrics import aggregate, flat_metrics
from raysys.io import read_json, write_json, write_parquet
from raysys.pools.subset import pool_tasks, subset_pool


class Stages(Protocol):
    """What a run needs done; paths in, paths and numbers out."""

    def score(self, model: str, task_ids: Sequence[str], out: Path, *, answers_from: str = "") -> str:
        """The scores .parquet at `out` (task_id, prompt_uncertainty, ...) of `task_ids`;
        `answers_from`: a scores file whose answers `model` scores instead of its own."""

    def select(self, strategy: str, budget: int, seed: int, task_ids: Sequence[str], scores: str | None,
               out_dir: Path, *, model: str = "") -> list[str]:
        """`budget` (in the settings' select.budget_unit) of `task_ids` chosen by `strategy`,
        in selection order; `model`: the model the selection will train (its tokenizer
        counts training tokens for budgets of examples or tokens and the length strategy)."""

    def train(self, model: str, task_ids: Sequence[str], out: Path, *, val_ids: Sequence[str] = (),
              cfg: TrainConfig | None = None) -> tuple[str, dict]:
        """(the model trained on `task_ids` in folder `out`, {"train_loss", "val_loss"});
        `cfg` overrides the settings' training config (the novelty experiment's two doses)."""

    def evaluate(self, model: str, splits: dict[str, Sequence[str]], out_dir: Path) -> dict[str, dict]:
        """Per split (e.g. 'validation', 'test'): flat metrics of `model` on the split's task ids."""


@dataclass(frozen=True)
class StageSettings:
    """What the Ray stages read of a run's config, and nothing else."""

    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    actors: int = 0  # scorer / evaluator actors per call; 0 = in the calling process
    trust_remote_code: bool = False
    targets: str = ""  # target tasks of the similarity and rds strategies

    @classmethod
    def of(cls, cfg: Any, **changes: Any) -> "StageSettings":
        """The settings of a run config (a loop, an experiment, the demo): each field taken
        from the config when it has it; `changes` last."""
        got: dict[str, Any] = {}
        for name in ("scoring", "select", "train", "evaluation", "actors", "targets"):
            if hasattr(cfg, name):
                got[name] = getattr(cfg, name)
        model = getattr(cfg, "model", None)
        if hasattr(model, "trust_remote_code"):
            got["trust_remote_code"] = model.trust_remote_code
        return cls(**{**got, **changes})


def score_tasks(pool: str, task_ids: Sequence[str], model: str, out: Path, cfg: ScoringConfig, *, actors: int,
                subset: Path, trust_remote_code: bool = False, cpus: float | None = None, progress: bool = False) -> str:
    """Scores of the tasks in `out`: on `actors` Ray Data actors (the tasks written to
    `subset` first), or with actors 0 in this process, skipped once `out` exists."""
    if actors:
        from raysys.scoring.pipeline import score_pool

        score_pool(subset_pool(pool, task_ids, subset), model, str(out), cfg, actors=actors,
                   trust_remote_code=trust_remote_code, progress=progress, cpus=cpus)
    elif not out.is_file():  # written atomically once the whole stage is done
        import pyarrow as pa

        from raysys.scoring.scorer import TaskScorer
        from raysys.scoring.scores_file import scores_metadata

        tasks = pool_tasks(pool)
        rows, _ = TaskScorer(model, cfg, trust_remote_code=trust_remote_code).score([tasks[t] for t in task_ids])
        # the metadata `raysys score` writes (the rds strategy reads the model and config back)
        write_parquet(out, pa.Table.from_pylist(rows).replace_schema_metadata(scores_metadata("in-process", model, cfg)))
    return str(out)


@dataclass(frozen=True)
class RayStages:
    """The stages on Ray: scoring and evaluation on the actor pool (or in this process
    with `actors: 0`), training on Ray Train, selection in this process."""

    settings: StageSettings
    pool: str  # canonical Parquet of the pool
    test_pool: str = ""  # canonical Parquet holding the test tasks; "" = `pool`
    cpus: float | None = None  # this caller's share of the cluster's CPUs (a Tune trial's)
    progress: bool = False  # progress bars and stage lines on the terminal (the demo's)

    def score(self, model: str, task_ids: Sequence[str], out: Path, *, answers_from: str = "") -> str:
        s = self.settings
        cfg = replace(s.scoring, answers_from=str(answers_from)) if answers_from else s.scoring
        return score_tasks(self.pool, task_ids, model, out, cfg, actors=s.actors,
                           subset=out.with_name(out.stem + "-tasks.parquet"), trust_remote_code=s.trust_remote_code,
                           cpus=self.cpus, progress=self.progress)

    def select(self, strategy: str, budget: int, seed: int, task_ids: Sequence[str], scores: str | None,
               out_dir: Path, *, model: str = "") -> list[str]:
        from raysys.selection.run import run_select

        subset = subset_pool(self.pool, task_ids, out_dir / "candidates.parquet")
        cfg = replace(self.settings.select, strategy=strategy, budget=budget, seed=seed)
        sel = run_select(cfg, str(out_dir / "selected.json"), scores=scores, pool=subset,
                         targets=self.settings.targets or None, model=model or None, train=self.settings.train,
                         trust_remote_code=self.settings.trust_remote_code)
        return list(sel.task_ids)

    def train(self, model: str, task_ids: Sequence[str], out: Path, *, val_ids: Sequence[str] = (),
              cfg: TrainConfig | None = None) -> tuple[str, dict]:
        from raysys.training.trainer import train_model

        tasks = pool_tasks(self.pool)
        wanted = set(task_ids) | set(val_ids)
        run = train_model([t for tid, t in tasks.items() if tid in wanted], list(task_ids), model, str(out),
                          cfg or self.settings.train, val_ids=list(val_ids),
                          trust_remote_code=self.settings.trust_remote_code, progress=self.progress, cpus=self.cpus)
        chosen = next(e for e in run.epochs if e["epoch"] == run.chosen_epoch)
        return run.out, {"train_loss": chosen["train_loss"], "val_loss": chosen.get("val_loss")}

    def evaluate(self, model: str, splits: dict[str, Sequence[str]], out_dir: Path) -> dict[str, dict]:
        """One evaluation run per pool file (validation and test tasks together when the
        test tasks are in the pool: one actor start instead of two), split afterwards."""
        per_task = self.per_task(model, splits, out_dir)
        return {split: flat_metrics(aggregate([per_task[(self._pool_of(split), t)] for t in ids]))
                for split, ids in splits.items()}

    def per_task(self, model: str, splits: dict[str, Sequence[str]], out_dir: Path) -> dict[tuple[str, str], dict]:
        """{(pool, task_id): the task's evaluation row} for every task of `splits`."""
        from raysys.evaluation.evaluate import evaluate_pool

        by_pool: dict[str, list[str]] = {}
        for split, ids in splits.items():
            by_pool.setdefault(self._pool_of(split), []).extend(ids)
        s = self.settings
        per_task: dict[tuple[str, str], dict] = {}
        for i, (pool, ids) in enumerate(by_pool.items()):
            out = out_dir / f"eval-{i}.json"
            if s.actors:
                rows = evaluate_pool(pool, model, str(out), s.evaluation, task_ids=list(dict.fromkeys(ids)),
                                     actors=s.actors, trust_remote_code=s.trust_remote_code, progress=self.progress,
                                     cpus=self.cpus)["per_task"]
            else:
                rows = self._evaluate_here(model, pool, ids, out)
            per_task.update({(pool, r["task_id"]): r for r in rows})
        return per_task

    def _pool_of(self, split: str) -> str:
        return (self.test_pool or self.pool) if split == "test" else self.pool

    def _evaluate_here(self, model: str, pool: str, ids: Sequence[str], out: Path) -> list[dict]:
        from raysys.evaluation.evaluator import Evaluator

        if not out.is_file():
            tasks = pool_tasks(pool)
            ev = Evaluator(model, self.settings.evaluation, trust_remote_code=self.settings.trust_remote_code)
            rows, _ = ev.process([tasks[t] for t in dict.fromkeys(ids)])
            write_json(out, {"model": model, "per_task": rows})
        return read_json(out)["per_task"]
