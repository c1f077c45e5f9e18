"""The evaluation worker: one model on a batch of held-out tasks. No Ray: the actor pool
(raysys.actors, worker "evaluate") builds it once per actor, and the loop's in-process
stages call it directly.

Per sampled instance (up to `instances` per task, raysys.scoring.items), under the run's
prompt template, fitted to the model as scoring fits it:
- **NLL of the reference** (`likelihood`): minus the mean token log-likelihood of the
  instance's first reference answer, end of sequence included, by the exact scoring engine
  (raysys.scoring.likelihood; no decode). Nats per token, lower is better.
- **Label accuracy** (classification tasks with 2..max_labels distinct answers,
  items.label_set): the label with the highest total log-likelihood (end of sequence
  included, the label set's first spelling; ties to the first label) against the
  instance's references, as lm-evaluation-harness scores multiple choice (its `acc`). 0-100.
- **Greedy answers** on the first `answer_instances` of them: Rouge-L and exact match
  (raysys.evaluation.metrics), answers written as `raysys score` writes the model's own.
Each task's row holds every metric's mean over the instances it was measured on, with
those counts (n_instances, n_answered, n_labeled), the tokens its evaluation processed
(`tokens`: each distinct prompt-target pair's prompt and target tokens, prompts cut as the
engine cuts them, plus each answered prompt and its generated tokens, end of sequence
included) and their FLOPs (`flops`, raysys.costs).
"""
from __future__ import annotations

from collections import Counter
from functools import partial
from typing import Sequence

import pyarrow as pa

from raysys.config import EvalConfig
from raysys.costs import forward_flops
from raysys.evaluation.metrics import exact_match, rouge_l
from raysys.schema import Task

DETAIL_SCHEMA = pa.schema([("task_id", pa.string()), ("instance_id", pa.string()), ("prompt", pa.string()),
                           ("prediction", pa.string()), ("references", pa.list_(pa.string())),
                           ("rougeL", pa.float64()), ("exact_match", pa.float64()), ("nll", pa.float64()),
                           ("target_tokens", pa.int64()), ("label_prediction", pa.string()),
                           ("label_correct", pa.float64())])


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _mean(values: list) -> float | None:
    return sum(values) / len(values) if values else None


class Evaluator:
    def __init__(self, model: str, cfg: EvalConfig, *, trust_remote_code: bool = False, loaded=None,
                 device: str | None = None):
        from raysys.models.runner import worker_setup  # torch: only where a model is loaded
        from raysys.scoring.likelihood import make_scorer

        self.cfg = cfg
        self.runner, self.parameters, self.template = worker_setup(
            model, cfg.generation, cfg.prompt, device=device, trust_remote_code=trust_remote_code, loaded=loaded,
            dtype=cfg.dtype)
        lm = self.runner.lm
        self.engine = make_scorer(lm.model, lm.tokenizer, lm.kind, max_prompt_tokens=self.runner.max_prompt)

    def process(self, tasks: Sequence[Task], details: bool = False):
        from raysys.scoring.items import TaskPrompts, label_set, sample_instances

        cfg = self.cfg
        work = []  # (task index, instance, fitted prompt, answered?), every task's instances in turn
        labels = [label_set(t, cfg.max_labels) if cfg.likelihood else [] for t in tasks]
        for ti, t in enumerate(tasks):
            prompts = TaskPrompts.original(t, self.template)
            for k, inst in enumerate(sample_instances(t, cfg.instances, cfg.seed)):
                fit = self.runner.fit_prompt(partial(prompts.text, 0, inst), cfg.prompt.demonstrations)
                work.append((ti, inst, fit, k < cfg.answer_instances))
        answered = [k for k, w in enumerate(work) if w[3]]
        answers, spent = self.runner.generate_counted([work[k][2].ids for k in answered])  # one pass for all tasks
        answer_of = dict(zip(answered, zip(answers, spent)))
        loglik = self._likelihoods(work, labels, len(tasks)) if cfg.likelihood else {}
        tokens = list(loglik.get("tokens", [0] * len(tasks)))
        per_task: list[dict[str, list]] = [{"rougeL": [], "exact_match": [], "nll": [], "label": []} for _ in tasks]
        detail_rows = []
        for k, (ti, inst, fit, _) in enumerate(work):
            row = {"task_id": tasks[ti].task_id, "instance_id": inst.id, "prompt": fit.text, "prediction": None,
                   "references": list(inst.outputs), "rougeL": None, "exact_match": None, "nll": None,
                   "target_tokens": None, "label_prediction": None, "label_correct": None}
            got = answer_of.get(k)
            if got is not None:
                pred, n = got
                tokens[ti] += n
                row.update(prediction=pred, rougeL=rouge_l(pred, inst.outputs), exact_match=exact_match(pred, inst.outputs))
                per_task[ti]["rougeL"].append(row["rougeL"])
                per_task[ti]["exact_match"].append(row["exact_match"])
            if cfg.likelihood:
                nll, n_target = loglik["reference"][k]
                row.update(nll=nll, target_tokens=n_target)
                per_task[ti]["nll"].append(nll)
                if labels[ti]:
                    label = loglik["label"][k]
                    correct = 100.0 if _norm(label) in {_norm(o) for o in inst.outputs} else 0.0
                    row.update(label_prediction=label, label_correct=correct)
                    per_task[ti]["label"].append(correct)
            if details:
                detail_rows.append(row)
        sampled = Counter(w[0] for w in work)
        rows = []
        for ti, t in enumerate(tasks):
            m = per_task[ti]
            rows.append({"task_id": t.task_id, "is_classification": t.is_classification,
                         "n_instances": sampled[ti], "n_answered": len(m["rougeL"]),
                         "rougeL": _mean(m["rougeL"]), "exact_match": _mean(m["exact_match"]),
                         "nll": _mean(m["nll"]), "n_labeled": len(m["label"]), "label_accuracy": _mean(m["label"]),
                         "tokens": tokens[ti], "flops": forward_flops(tokens[ti], self.parameters)})
        return rows, detail_rows

    def _likelihoods(self, work: list, labels: list[list[str]], n_tasks: int) -> dict:
        """One engine pass over every instance's reference and every label candidate:
        per work item its (NLL, target tokens) and its most likely label (None without
        labels), and per task the tokens read (each distinct prompt-target pair once)."""
        from raysys.models import prompt_ids
        from raysys.scoring.likelihood import target_ids

        items: dict[tuple[str, str], int] = {}  # distinct (prompt, target) -> item index
        group: list[int] = []
        owner: list[int] = []  # the task index of each distinct item

        def item(k: int, ti: int, prompt: str, target: str) -> int:
            if (prompt, target) not in items:
                items[(prompt, target)] = len(items)
                group.append(k)  # one instance's items share its prompt: one prefix pass
                owner.append(ti)
            return items[(prompt, target)]

        ref_item, label_items = [], []
        for k, (ti, inst, fit, _) in enumerate(work):
            ref_item.append(item(k, ti, fit.text, inst.outputs[0]))
            label_items.append([item(k, ti, fit.text, label) for label in labels[ti]])
        prompts = [p for p, _ in items]
        targets = [t for _, t in items]
        logp = self.engine.score(prompts, targets, group)
        tok = self.runner.lm.tokenizer
        n_target = [len(t) for t in target_ids(tok, targets)]
        n_prompt = [len(p) for p in prompt_ids(tok, prompts, self.runner.max_prompt)]
        tokens = [0] * n_tasks
        for i, ti in enumerate(owner):
            tokens[ti] += n_prompt[i] + n_target[i]
        best = []
        for k, cand in enumerate(label_items):
            if not cand:
                best.append(None)
                continue
            totals = [float(logp[i]) * n_target[i] for i in cand]
            best.append(labels[work[k][0]][max(range(len(cand)), key=lambda j: (totals[j], -j))])
        return {"reference": [(-float(logp[i]), n_target[i]) for i in ref_item], "label": best, "tokens": tokens}
