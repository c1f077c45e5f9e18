"""Deterministic stand-ins for the loop's collaborators (score, select, train, evaluate).

A "model" is a folder holding id.txt; training writes a new folder whose id hashes the
model it started from and the tasks it saw, so every number below depends on exactly
what the loop fed in, and equal inputs give equal outputs in any run or work dir. Every
call is appended to a JSONL log (op, round folder) to count what was (re)done.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def _h(*parts) -> float:
    """A number in [0, 1) from the parts."""
    d = hashlib.sha256(json.dumps(parts).encode()).digest()
    return int.from_bytes(d[:8], "big") / 2**64


def model_id(model: str) -> str:
    """The fake model's id; a folder without id.txt (a real base model) is "base"."""
    path = Path(model) / "id.txt"
    return path.read_text() if path.is_file() else "base"


def make_base(path: Path) -> str:
    path.mkdir(parents=True, exist_ok=True)
    (path / "id.txt").write_text("base")
    return str(path)


def where(out_dir: Path) -> str:
    """The round folder of an output dir: strategy/seed-s/round-r or seed-s/round-0."""
    parts = Path(out_dir).parts
    i = max(j for j, p in enumerate(parts) if p.startswith("round-"))
    start = i - 1 if parts[i] == "round-0" else i - 2
    return "/".join(parts[start: i + 1])


@dataclass(frozen=True)
class FakeStages:
    log: str  # JSONL file of calls
    slow_round: int = -1  # trains of this round sleep `delay` seconds (to kill a run mid-round)
    delay: float = 0.0

    def _log(self, op: str, out_dir: Path, **kw) -> None:
        with open(self.log, "a") as f:
            f.write(json.dumps({"op": op, "at": where(out_dir), **kw}) + "\n")

    def score(self, model: str, task_ids: Sequence[str], out: Path, *, answers_from: str = "") -> str:
        self._log("score", Path(out).parent, n=len(task_ids))
        m = model_id(model)
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"task_id": list(task_ids),
                                 "prompt_uncertainty": [_h("u", m, t) for t in task_ids],
                                 "prediction_probability": [_h("p", m, t) for t in task_ids]}), out)
        return str(out)

    def select(self, strategy: str, budget: int, seed: int, task_ids: Sequence[str], scores: str | None,
               out_dir: Path, *, model: str = "") -> list[str]:
        self._log("select", out_dir, strategy=strategy, seed=seed, budget=budget)
        if scores is None:
            order = np.random.default_rng(seed).permutation(len(task_ids))
            picked = [task_ids[i] for i in order[:budget]]
        else:
            t = pq.read_table(scores).to_pydict()
            u = dict(zip(t["task_id"], t["prompt_uncertainty"]))
            picked = sorted(task_ids, key=lambda x: (-u[x], x))[:budget]
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "selected.json").write_text(json.dumps(picked))
        return picked

    def train(self, model: str, task_ids: Sequence[str], out: Path, *, val_ids: Sequence[str] = (),
              cfg=None) -> tuple[str, dict]:
        out_dir = Path(out).parent
        self._log("train", out_dir, model=model_id(model), n=len(task_ids))
        if self.slow_round >= 0 and where(out_dir).endswith(f"round-{self.slow_round}"):
            time.sleep(self.delay)
        new = hashlib.sha256(json.dumps([model_id(model), sorted(task_ids)]).encode()).hexdigest()[:12]
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "id.txt").write_text(new)
        return str(out), {"train_loss": 1.0 / (1 + len(task_ids)), "val_loss": _h("v", new, sorted(val_ids))}

    def evaluate(self, model: str, splits: dict, out_dir: Path) -> dict:
        self._log("evaluate", out_dir, splits=sorted(splits))
        m = model_id(model)
        out = {}
        for split, ids in splits.items():
            ids = list(ids)
            out[split] = {"nll": 3.0 - _h("n", m, ids), "rougeL": 100 * _h("r", m, ids),
                          "exact_match": 100 * _h("e", m, ids),
                          "rougeL_classification": None, "rougeL_generative": 100 * _h("g", m, ids),
                          "exact_match_classification": None, "exact_match_generative": 100 * _h("x", m, ids)}
        return out


def calls(log: str | Path) -> list[dict]:
    p = Path(log)
    return [json.loads(line) for line in p.read_text().splitlines()] if p.is_file() else []
