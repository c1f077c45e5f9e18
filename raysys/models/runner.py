"""A loaded model that writes greedy answers: the part of scoring and evaluation that runs
generation. It fits prompts to the model's length (fewer demonstrations first, then the
last tokens) and generates in batches sorted by prompt length (left-padded for causal
LMs, right-padded for the encoder of seq2seq models). Knows nothing of Ray or of scores.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Sequence

import torch

from raysys.config import GenerationConfig, PromptConfig
from raysys.models import LoadedModel, count_parameters, load_model, prompt_ids
from raysys.prompts import FittedPrompt, Template, template_for


def _device(device: str | None) -> str:
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def weight_dtype(dtype: str, device: str) -> str:
    """The dtype a worker loads the weights in: `dtype` as configured, "auto" being bfloat16
    on a GPU and float32 on a CPU."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if device.startswith("cuda") else "float32"


def in_dtype(model, dtype: str):
    """`model` itself when `dtype` is "" or its weights' dtype already, else a copy of it with
    its weights in `dtype` (the likelihood forwards of a run that decodes in another dtype:
    ScoringConfig.forward_dtype)."""
    if not dtype or getattr(torch, dtype) == model.dtype:
        return model
    import copy

    return copy.deepcopy(model).to(getattr(torch, dtype))


def load_for_worker(model_path: str, *, device: str | None = None, trust_remote_code: bool = False,
                    dtype: str = "auto") -> LoadedModel:
    """The model as a scoring or evaluation worker runs it: on the GPU when there is one,
    its weights in `dtype` (weight_dtype). Log-probabilities are taken in float32 whatever
    the weights' dtype (raysys.scoring.likelihood)."""
    device = _device(device)
    return load_model(model_path, trust_remote_code=trust_remote_code, dtype=weight_dtype(dtype, device),
                      device=device)


def model_stamp(model_path: str) -> tuple:
    """What tells a model folder's content apart (its files' names, sizes and times): a
    model kept in memory is the folder's as long as its stamp holds. A hub name: ()."""
    import os

    path = os.path.expanduser(model_path)
    if not os.path.isdir(path):
        return ()
    return tuple(sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(path) if e.is_file()))


class ModelRunner:
    """`loaded` reuses a model already in memory (a pool actor's, tests, in-process
    experiments)."""

    def __init__(self, model_path: str, generation: GenerationConfig, *, device: str | None = None,
                 trust_remote_code: bool = False, loaded: LoadedModel | None = None, dtype: str = "auto"):
        self.generation = generation
        self.device = _device(device)
        self.lm = loaded or load_for_worker(model_path, device=self.device, trust_remote_code=trust_remote_code,
                                            dtype=dtype)
        limit = getattr(self.lm.model.config, "max_position_embeddings", None) or getattr(
            self.lm.tokenizer, "model_max_length", 4096)
        limit = min(limit, 1 << 20)  # tokenizers without a limit report a huge sentinel
        # room for the answer: a prompt and max_new_tokens together must fit the positions
        self.max_prompt = generation.max_prompt_tokens or max(16, limit - generation.max_new_tokens - 1)

    def fit_prompt(self, make: Callable[[int], str], demonstrations: int) -> FittedPrompt:
        """The prompt `make(n)` with the most demonstrations n <= `demonstrations` that fits
        max_prompt tokens (n = 0 when none does: then it is truncated)."""
        n = demonstrations
        while True:
            text = make(n)
            ids = self.lm.tokenizer(text).input_ids
            if n == 0 or len(ids) <= self.max_prompt:
                return FittedPrompt(n, text, tuple(ids), len(ids) > self.max_prompt)
            n -= 1

    @torch.inference_mode()
    def generate(self, prompts: Sequence[str]) -> list[str]:
        """Greedy answers to prompt texts."""
        return self.generate_ids(prompt_ids(self.lm.tokenizer, prompts, self.max_prompt))

    def generate_ids(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """Greedy answers to tokenized prompts; a prompt longer than max_prompt keeps its
        last tokens."""
        return self.generate_counted(ids)[0]

    def generate_counted(self, ids: Sequence[Sequence[int]]) -> tuple[list[str], list[int]]:
        """The greedy answers, and per prompt the tokens the model processed for it: the
        prompt's (after truncation to max_prompt) plus every token generated, the end of
        sequence included (padding excluded)."""
        answers, tokens, _ = self.generate_embedded(ids, embed=False)
        return answers, tokens

    def generate_embedded(self, ids: Sequence[Sequence[int]], embed: bool = True
                          ) -> tuple[list[str], list[int], torch.Tensor | None]:
        """generate_counted's answers and tokens, and each prompt's RDS+ embedding
        (raysys.models.pooling) from the prefill of its decode: (prompts, d) float32."""
        return self.generate_scored(ids, embed, scored=False)[:3]

    @torch.inference_mode()
    def generate_scored(self, ids: Sequence[Sequence[int]], embed: bool = True, scored: bool = True
                        ) -> tuple[list[str], list[int], torch.Tensor | None, list[tuple[list[int], float] | None]]:
        """generate_embedded's answers, tokens and embeddings, and with `scored` (causal LMs)
        per prompt its answer's own likelihood as the decode computed it: (the answer's
        token ids and EOS, the mean log-probability of those tokens), each a log-softmax of
        the decode's float32 logits (Recorder). To have EOS's log-probability after an
        answer cut at max_new_tokens, the decode runs one step more, whose token is
        dropped (the answers are those of a decode to max_new_tokens: greedy steps do
        not look ahead). None per prompt otherwise, or where the decode's choice was not
        the raw argmax (a logits processor of the model's generation config)."""
        from raysys.models.pooling import capture_body, position_weighted_mean

        ids = [list(p[-self.max_prompt:]) for p in ids]
        embeddings = None
        tokens = [len(p) for p in ids]
        tok, model, gen = self.lm.tokenizer, self.lm.model, self.generation
        scored = scored and self.lm.kind != "seq2seq"
        cap = gen.max_new_tokens
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # little padding per batch
        answers = [""] * len(ids)
        likelihoods: list[tuple[list[int], float] | None] = [None] * len(ids)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        for s in range(0, len(order), gen.batch):
            batch = order[s: s + gen.batch]
            width = max(len(ids[i]) for i in batch)
            x = torch.full((len(batch), width), pad, dtype=torch.long)
            m = torch.zeros_like(x)
            for r, i in enumerate(batch):
                if self.lm.kind == "seq2seq":  # right padding for the encoder
                    x[r, : len(ids[i])], m[r, : len(ids[i])] = torch.tensor(ids[i]), 1
                else:
                    x[r, width - len(ids[i]):], m[r, width - len(ids[i]):] = torch.tensor(ids[i]), 1
            recorder = Recorder(tok.eos_token_id) if scored else None
            with capture_body(model, self.lm.kind) if embed else contextlib.nullcontext([]) as seen:
                out = model.generate(input_ids=x.to(self.device), attention_mask=m.to(self.device), do_sample=False,
                                     max_new_tokens=cap + 1 if scored else cap, pad_token_id=pad,
                                     eos_token_id=tok.eos_token_id,
                                     logits_processor=[recorder] if scored else None)
            if embed:
                pooled = position_weighted_mean(seen[0], m.to(seen[0].device)).cpu()
                if embeddings is None:
                    embeddings = torch.zeros(len(ids), pooled.shape[1])
                embeddings[batch] = pooled
            new = out[:, 1:] if self.lm.kind == "seq2seq" else out[:, width:]  # drop decoder start / prompt
            for r, i in enumerate(batch):
                row = new[r].tolist()[:cap]
                ended = tok.eos_token_id in row
                if ended:
                    row = row[: row.index(tok.eos_token_id)]
                    tokens[i] += 1
                tokens[i] += len(row)
                answers[i] = tok.decode(row, skip_special_tokens=True)
                if recorder is not None:
                    likelihoods[i] = recorder.likelihood(r, row)
        return answers, tokens, embeddings, likelihoods

    @torch.inference_mode()
    def embed_prompts(self, ids: Sequence[Sequence[int]]) -> torch.Tensor:
        """RDS+ embeddings of tokenized prompts by a forward pass alone (no decode): the same
        vectors generate_embedded takes from the prefill. (prompts, d) float32."""
        from raysys.models.pooling import body, position_weighted_mean

        ids = [list(p[-self.max_prompt:]) for p in ids]
        pad = self.lm.tokenizer.pad_token_id if self.lm.tokenizer.pad_token_id is not None else 0
        out = []
        for s in range(0, len(ids), self.generation.batch):  # right padding: positions need no mask arithmetic
            chunk = ids[s: s + self.generation.batch]
            width = max(len(p) for p in chunk)
            x = torch.full((len(chunk), width), pad, dtype=torch.long)
            m = torch.zeros_like(x)
            for r, p in enumerate(chunk):
                x[r, : len(p)], m[r, : len(p)] = torch.tensor(p), 1
            h = body(self.lm.model, self.lm.kind)(input_ids=x.to(self.device), attention_mask=m.to(self.device))
            out.append(position_weighted_mean(h[0] if isinstance(h, tuple) else h.last_hidden_state,
                                              m.to(self.device)).cpu())
        return torch.cat(out) if out else torch.zeros(0, 0)


class Recorder:
    """A logits processor that changes nothing and keeps, per decode step and row, the raw
    logits' argmax and the float32 log-softmax at it and at EOS: the answer's likelihood
    without a second forward (ModelRunner.generate_scored)."""

    def __init__(self, eos: int) -> None:
        self.eos = eos
        self.steps: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.host: list[list[list]] | None = None  # the steps as lists, made on first read

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        s = scores.float()
        lse = torch.logsumexp(s, dim=-1)
        top, arg = s.max(dim=-1)
        self.steps.append((arg, top - lse, s[:, self.eos] - lse))  # on the device: no copy per step
        self.host = None
        return scores

    def likelihood(self, r: int, answer: Sequence[int]) -> tuple[list[int], float] | None:
        """Row r's answer tokens and EOS, with their mean log-probability; None when a step
        chose another token than the raw argmax, or the steps stop short."""
        if len(self.steps) <= len(answer):
            return None
        if self.host is None:  # every step's values on the host once, for all rows
            self.host = [torch.stack(v).cpu().tolist() for v in zip(*self.steps)]
        args, tops, eos = self.host
        if any(args[step][r] != t for step, t in enumerate(answer)):
            return None
        total = sum(tops[step][r] for step in range(len(answer))) + eos[len(answer)][r]
        return [*answer, self.eos], total / (len(answer) + 1)


def worker_setup(model: str, generation: GenerationConfig, prompt: PromptConfig, *, device: str | None = None,
                 trust_remote_code: bool = False, loaded: LoadedModel | None = None, dtype: str = "auto"
                 ) -> tuple[ModelRunner, int, Template]:
    """What every model-running worker (scoring, evaluation) starts with: the runner, the
    model's parameter count (for FLOPs) and its prompt template."""
    runner = ModelRunner(model, generation, device=device, trust_remote_code=trust_remote_code, loaded=loaded,
                         dtype=dtype)
    lm = runner.lm
    return runner, count_parameters(lm.model), template_for(prompt.template, prompt.chat_body, lm.tokenizer, lm.name)
