"""The loop's real collaborators: raysys's scoring, selection, training and evaluation,
each run on Ray within the trial's share of the cluster (`cpus`), each resumable on its
own (a round redone after a crash reuses its finished scores, checkpoints and models).

The pool and test pool are canonical Parquet files the driver wrote into the work dir;
a round's candidates are written next to its outputs as a Parquet subset (once: a rerun
finds the same file, so scoring resumes from its parts).

`actors: 0` scores and evaluates inside the trial's own process instead of on a Ray Data
actor pool: for small pools on one machine, where starting actors (a Python process
importing torch and loading the model, per stage call) costs more than the work.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from raysys.config import LoopConfig
from raysys.experiments.config import SimilarityConfig
from raysys.runs import pool_tasks, subset_pool
from raysys.workspace import score_tasks


@dataclass(frozen=True)
class RayStages:
    """Also the similarity experiment's select, train and evaluate stages
    (raysys.experiments.similarity_run), whose config has the fields they read: select,
    targets, train, evaluation, model and actors."""

    cfg: LoopConfig | SimilarityConfig
    pool: str  # canonical Parquet of the pool
    test_pool: str  # canonical Parquet holding the test tasks (may be `pool`)
    cpus: float | None = None  # this trial's share of the cluster's CPUs

    def score(self, model: str, task_ids: Sequence[str], out_dir: Path) -> str:
        return score_tasks(self.pool, task_ids, model, out_dir / "scores.parquet", self.cfg.scoring,
                           actors=self.cfg.actors, subset=out_dir / "tasks.parquet",
                           trust_remote_code=self.cfg.model.trust_remote_code, cpus=self.cpus)

    def select(self, strategy: str, budget: int, seed: int, task_ids: Sequence[str], scores: str | None,
               out_dir: Path) -> list[str]:
        from raysys.selection.run import run_select

        subset = subset_pool(self.pool, task_ids, out_dir / "candidates.parquet")
        cfg = replace(self.cfg.select, strategy=strategy, budget=budget, seed=seed)
        sel = run_select(cfg, str(out_dir / "selected.json"), scores=scores, pool=subset,
                         targets=self.cfg.targets or None)
        return list(sel.task_ids)

    def train(self, model: str, task_ids: Sequence[str], val_ids: Sequence[str], out_dir: Path) -> tuple[str, dict]:
        from raysys.training.trainer import train_model

        tasks = pool_tasks(self.pool)
        wanted = set(task_ids) | set(val_ids)
        run = train_model([t for tid, t in tasks.items() if tid in wanted], list(task_ids), model,
                          str(out_dir / "model"), self.cfg.train, val_ids=list(val_ids),
                          trust_remote_code=self.cfg.model.trust_remote_code, progress=False, cpus=self.cpus)
        chosen = next(e for e in run.epochs if e["epoch"] == run.chosen_epoch)
        return run.out, {"train_loss": chosen["train_loss"], "val_loss": chosen.get("val_loss")}

    def evaluate(self, model: str, splits: dict[str, Sequence[str]], out_dir: Path) -> dict[str, dict]:
        """One evaluation run per pool file (validation and test tasks together when the
        test tasks are in the pool: one actor start instead of two), split afterwards."""
        from raysys.evaluation.evaluate import evaluate_pool

        by_pool: dict[str, list[str]] = {}
        for split, ids in splits.items():
            by_pool.setdefault(self.test_pool if split == "test" else self.pool, []).extend(ids)
        per_task: dict[tuple[str, str], dict] = {}
        for i, (pool, ids) in enumerate(by_pool.items()):
            if not self.cfg.actors:
                per_task.update({(pool, r["task_id"]): r for r in self._evaluate_here(model, pool, ids, out_dir, i)})
                continue
            m = evaluate_pool(pool, model, str(out_dir / f"eval-{i}.json"), self.cfg.evaluation,
                              task_ids=list(dict.fromkeys(ids)), actors=self.cfg.actors,
                              trust_remote_code=self.cfg.model.trust_remote_code, progress=False, cpus=self.cpus)
            per_task.update({(pool, r["task_id"]): r for r in m["per_task"]})
        out = {}
        for split, ids in splits.items():
            pool = self.test_pool if split == "test" else self.pool
            out[split] = flat_metrics(split_metrics([per_task[(pool, t)] for t in ids]))
        return out


    def _evaluate_here(self, model: str, pool: str, ids: Sequence[str], out_dir: Path, i: int) -> list[dict]:
        from raysys.evaluation.evaluate import Evaluator
        from raysys.io import read_json, write_json

        out = out_dir / f"eval-{i}.json"
        if not out.is_file():
            tasks = pool_tasks(pool)
            ev = Evaluator(model, self.cfg.evaluation, trust_remote_code=self.cfg.model.trust_remote_code)
            rows, _ = ev.process([tasks[t] for t in dict.fromkeys(ids)])
            write_json(out, {"model": model, "per_task": rows})
        return read_json(out)["per_task"]


def split_metrics(rows: Sequence[dict]) -> dict:
    """metrics.json's aggregate over a subset of its per-task rows (per-task means x instances)."""
    from raysys.evaluation.metrics import aggregate

    return aggregate({**r, "rougeL_sum": r["rougeL"] * r["n_instances"],
                      "exact_match_sum": r["exact_match"] * r["n_instances"]} for r in rows)


def flat_metrics(m: dict) -> dict[str, float | None]:
    """rougeL / exact_match overall, and per classification and generative tasks."""
    out: dict[str, float | None] = {}
    for metric in ("rougeL", "exact_match"):
        for group in ("overall", "classification", "generative"):
            out[metric if group == "overall" else f"{metric}_{group}"] = m[metric][group]
    return out
