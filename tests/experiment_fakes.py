"""Stand-ins for the experiments' learners and stages whose answers are known by construction.

Diversity learners (prompts are the "plain" template over symbolic rules: "x -> y",
"Input: z", "Output: "):
- Memorizer answers a prompt it was trained on with its target, and any other prompt
  with its input unchanged: on unseen rules it scores exactly the no-op share (copy_em);
- Oracle applies the rule written in the prompt: exact match 1 everywhere.
Every fit is appended to a log file, to count what a rerun redid.

Novelty stages: a "model" is a folder holding model.json (its name and the tasks it was
trained on); scores are a pure function of (model, task): a task's uncertainty is
u0(task) under M0 and u0(task) x factor(role) after training, so the ratio is known.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path


def parse_plain(prompt: str) -> tuple[str, str, str]:
    rule, inp, _ = prompt.split("\n")
    x, y = rule.split(" -> ")
    return x, y, inp[len("Input: "):]


def _logged(log: str, cell) -> None:
    with open(log, "a") as f:
        f.write(json.dumps({"cell": cell.cell_id}) + "\n")


@dataclass(frozen=True)
class Memorizer:
    log: str

    def fit(self, cfg, cell, rows, out_dir, device):
        _logged(self.log, cell)
        return {r["prompt"]: r["target"] for r in rows}, {"losses": [1.0, 0.5], "seconds": 0.01}

    def answer(self, model, cfg, prompts, device):
        return [model.get(p, parse_plain(p)[2]) for p in prompts]


@dataclass(frozen=True)
class Oracle:
    log: str

    def fit(self, cfg, cell, rows, out_dir, device):
        _logged(self.log, cell)
        return None, {"losses": [0.0], "seconds": 0.01}

    def answer(self, model, cfg, prompts, device):
        out = []
        for p in prompts:
            x, y, z = parse_plain(p)
            out.append(z.replace(x, y, 1))
        return out


def u0(task_id: str) -> float:
    """A task's uncertainty under M0, in [0.1, 0.6)."""
    return 0.1 + 0.5 * int(hashlib.sha256(task_id.encode()).hexdigest()[:8], 16) / 2**32


@dataclass(frozen=True)
class FakeNoveltyStages:
    """M1 multiplies a related task's uncertainty by `related` and any other's by `unrelated`;
    scoring M0's answers (answers_from), by `same_related` and `same_unrelated`."""

    related_ids: tuple[str, ...]
    related: float = 0.5
    unrelated: float = 0.9
    same_related: float = 0.7
    same_unrelated: float = 0.95

    def train(self, model, task_ids, out, *, val_ids=(), cfg=None):
        out.mkdir(parents=True, exist_ok=True)
        (out / "model.json").write_text(json.dumps({"from": str(model), "tasks": list(task_ids)}))
        return str(out), {}

    def score(self, model, task_ids, out, *, answers_from=""):
        import pyarrow as pa
        import pyarrow.parquet as pq

        trained = Path(model, "model.json").is_file() and Path(model).name == "m1"
        related, unrelated = (self.same_related, self.same_unrelated) if answers_from else (self.related,
                                                                                           self.unrelated)
        assert not answers_from or Path(answers_from).name == "scores-m0.parquet"  # M0's answers
        rows = []
        for t in task_ids:
            factor = (related if t in self.related_ids else unrelated) if trained else 1.0
            rows.append({"task_id": t, "prompt_uncertainty": u0(t) * factor,
                         "prediction_probability": 0.5 + 0.5 * u0(t) * factor})
        pq.write_table(pa.Table.from_pylist(rows), out)
        return str(out)
