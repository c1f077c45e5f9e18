"""The per-actor task scorer: loads a model once, scores batches of tasks.

For each task: sample n instances (deterministic in (seed, task_id)); build the k
perturbed instructions once (raysys.perturb); greedily decode the model's own answer y_i
from the original prompt; score y_i under the original prompt (p_i0) and under every
perturbed prompt (p_ij) with the batched engine (raysys.scoring.likelihood), plus, when
enabled, the task's labels (classification entropy) and y_i alone (IFD). Then aggregate
with raysys.scoring.metrics. Knows nothing of Ray.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from raysys.config import ScoringConfig
from raysys.models import LoadedModel, load_model
from raysys.perturb import perturb_prompt_parts, rng_for
from raysys.prompts import format_prompt
from raysys.schema import Instance, Task
from raysys.scoring import metrics
from raysys.scoring.likelihood import Budget, make_scorer, prompt_ids

SCORE_COLUMNS = ("task_id", "prompt_uncertainty", "prediction_probability", "perplexity", "classification_entropy",
                 "ifd", "n_instances", "n_instances_total", "n_perturbations", "n_labels", "n_truncated",
                 "is_classification", "mean_answer_chars")
DETAIL_COLUMNS = ("task_id", "instance_id", "perturbation", "prompt", "target", "p")


def sample_instances(task: Task, n: int, seed: int) -> list[Instance]:
    """n instances drawn without replacement (all when fewer), in file order."""
    if len(task.instances) <= n:
        return list(task.instances)
    rng: random.Random = rng_for(seed, task.task_id, 0)
    return [task.instances[i] for i in sorted(rng.sample(range(len(task.instances)), n))]


def label_set(task: Task, max_labels: int) -> list[str]:
    """The distinct reference outputs of a classification task (first spelling kept), or []
    when the task is not classification or has fewer than 2 or more than max_labels."""
    if task.is_classification is not True:
        return []
    seen: dict[str, str] = {}
    for inst in task.instances:
        for o in inst.outputs:
            seen.setdefault(" ".join(o.lower().split()), o.strip())
    labels = list(seen.values())
    return labels if 2 <= len(labels) <= max_labels else []


@dataclass
class _Items:
    prompts: list[str]
    targets: list[str]
    groups: list[int]

    def add(self, prompt: str, target: str, group: int) -> int:
        self.prompts.append(prompt)
        self.targets.append(target)
        self.groups.append(group)
        return len(self.prompts) - 1


class TaskScorer:
    def __init__(self, model_path: str, cfg: ScoringConfig, *, device: str | None = None,
                 trust_remote_code: bool = False, loaded: LoadedModel | None = None):
        self.cfg = cfg
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = "bfloat16" if self.device.startswith("cuda") else "float32"
        self.lm = loaded or load_model(model_path, trust_remote_code=trust_remote_code, dtype=dtype, device=self.device)
        limit = getattr(self.lm.model.config, "max_position_embeddings", None) or getattr(
            self.lm.tokenizer, "model_max_length", 4096)
        limit = min(limit, 1 << 20)
        self.max_prompt = cfg.max_prompt_tokens or max(16, limit - cfg.max_new_tokens - 1)
        self.engine = make_scorer(self.lm.model, self.lm.tokenizer, self.lm.kind,
                                  Budget(tokens=cfg.token_budget), self.max_prompt)
        alone = self.lm.tokenizer("").input_ids
        tok = self.lm.tokenizer
        self.alone_prompt = "" if alone else (tok.bos_token or tok.eos_token)  # "y alone" needs >= 1 token

    def _fit(self, make) -> tuple[int, str, list[int]]:
        """The most demonstrations n (<= cfg.demonstrations) whose prompt `make(n)` fits,
        with that prompt and its token ids (untruncated)."""
        n = self.cfg.demonstrations
        while True:
            text = make(n)
            ids = self.lm.tokenizer(text).input_ids
            if n == 0 or len(ids) <= self.max_prompt:
                return n, text, ids
            n -= 1

    # ------------------------------------------------------------ generation
    @torch.inference_mode()
    def generate(self, prompts: Sequence[str]) -> list[str]:
        """Greedy answers, batched by prompt length (left-padded for causal LMs)."""
        return self._generate_ids(prompt_ids(self.lm.tokenizer, prompts, self.max_prompt))

    def _generate_ids(self, ids: Sequence[Sequence[int]]) -> list[str]:
        tok, model = self.lm.tokenizer, self.lm.model
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        answers = [""] * len(ids)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        for s in range(0, len(order), self.cfg.generation_batch):
            batch = order[s: s + self.cfg.generation_batch]
            width = max(len(ids[i]) for i in batch)
            x = torch.full((len(batch), width), pad, dtype=torch.long)
            m = torch.zeros_like(x)
            for r, i in enumerate(batch):
                if self.lm.kind == "seq2seq":  # right padding for the encoder
                    x[r, : len(ids[i])], m[r, : len(ids[i])] = torch.tensor(ids[i]), 1
                else:
                    x[r, width - len(ids[i]):], m[r, width - len(ids[i]):] = torch.tensor(ids[i]), 1
            out = model.generate(input_ids=x.to(self.device), attention_mask=m.to(self.device), do_sample=False,
                                 max_new_tokens=self.cfg.max_new_tokens, pad_token_id=pad,
                                 eos_token_id=tok.eos_token_id)
            new = out[:, 1:] if self.lm.kind == "seq2seq" else out[:, width:]  # drop decoder start / prompt
            for r, i in enumerate(batch):
                row = new[r].tolist()
                if tok.eos_token_id in row:
                    row = row[: row.index(tok.eos_token_id)]
                answers[i] = tok.decode(row, skip_special_tokens=True)
        return answers

    # ------------------------------------------------------------ scoring
    def process(self, tasks: Sequence[Task], details: bool = False):
        """The pipeline's worker interface (raysys.scoring.pipeline.ScoreBatch)."""
        return self.score(tasks, details)

    def score(self, tasks: Sequence[Task], details: bool = False) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """One score row per task (SCORE_COLUMNS) and, if asked, one detail row per scored
        prompt (DETAIL_COLUMNS)."""
        cfg = self.cfg
        sampled = [sample_instances(t, cfg.instances, cfg.seed) for t in tasks]
        parts = [perturb_prompt_parts(t.task_id, t.instruction, t.demonstrations, cfg.perturbations,
                                      kind=cfg.perturbation, rate=cfg.drop_rate, seed=cfg.seed,
                                      demonstration_inputs=cfg.perturb_demonstrations, mask_token=cfg.mask_token)
                 for t in tasks]

        def prompt(ti: int, j: int, inst: Instance, n_demos: int) -> str:
            definition, demos = parts[ti][j]
            return format_prompt(cfg.template, definition, inst.input, demos, n_demos)

        # Fit long prompts as TK-Instruct does: show fewer demonstrations until the original
        # prompt fits; its perturbed prompts use the same number. A prompt too long even
        # without demonstrations is scored on its last tokens and counted as truncated.
        fitted = [[self._fit(lambda nd, ti=ti, inst=inst: prompt(ti, 0, inst, nd)) for inst in sampled[ti]]
                  for ti in range(len(tasks))]
        demos_for = [[n for n, _, _ in row] for row in fitted]
        orig_ids = [ids for row in fitted for _, _, ids in row]
        truncated = iter([len(ids) > self.max_prompt for ids in orig_ids])
        answers = iter(self._generate_ids([ids[-self.max_prompt:] for ids in orig_ids]))
        items = _Items([], [], [])
        index: list[dict[str, Any]] = []
        group = 0
        for ti, task in enumerate(tasks):
            ys = [next(answers) for _ in sampled[ti]]
            labels = label_set(task, cfg.max_labels) if cfg.entropy else []
            pert = np.empty((len(ys), cfg.perturbations + 1), dtype=np.int64)
            lab = np.empty((len(ys), len(labels)), dtype=np.int64)
            alone = np.empty(len(ys), dtype=np.int64)
            for j in range(cfg.perturbations + 1):
                for r, (inst, y) in enumerate(zip(sampled[ti], ys)):
                    pert[r, j] = items.add(prompt(ti, j, inst, demos_for[ti][r]), y, group)
                    if j == 0:
                        for c, label in enumerate(labels):  # same prompt: shares the j = 0 prefix
                            lab[r, c] = items.add(items.prompts[pert[r, 0]], label, group)
                group += 1
            for r, y in enumerate(ys):
                if cfg.ifd:
                    alone[r] = items.add(self.alone_prompt, y, group)
                    group += 1
            index.append({"ys": ys, "pert": pert, "lab": lab, "alone": alone, "labels": labels,
                          "truncated": sum(next(truncated) for _ in ys)})
        lp = self.engine.score(items.prompts, items.targets, items.groups)
        rows, detail_rows = [], []
        for ti, task in enumerate(tasks):
            ix = index[ti]
            logp = lp[ix["pert"]]  # (n, k + 1) mean log-probs
            p = np.exp(logp)
            rows.append({
                "task_id": task.task_id,
                "prompt_uncertainty": metrics.prompt_uncertainty(p[:, 0], p[:, 1:]),
                "prediction_probability": metrics.prediction_probability(p[:, 0]),
                "perplexity": metrics.perplexity(logp[:, 0]),
                "classification_entropy": metrics.label_entropy(lp[ix["lab"]]) if ix["labels"] else float("nan"),
                "ifd": metrics.ifd(logp[:, 0], lp[ix["alone"]]) if cfg.ifd else float("nan"),
                "n_instances": len(ix["ys"]),
                "n_instances_total": len(task.instances),
                "n_perturbations": cfg.perturbations,
                "n_labels": len(ix["labels"]),
                "n_truncated": ix["truncated"],
                "is_classification": task.is_classification,
                "mean_answer_chars": float(np.mean([len(y) for y in ix["ys"]])),
            })
            if details:
                for r, inst in enumerate(sampled[ti]):
                    for j in range(cfg.perturbations + 1):
                        k = ix["pert"][r, j]
                        detail_rows.append({"task_id": task.task_id, "instance_id": inst.id, "perturbation": j,
                                            "prompt": items.prompts[k], "target": items.targets[k],
                                            "p": float(p[r, j])})
        return rows, detail_rows
