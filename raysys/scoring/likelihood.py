"""Batched log-likelihood of targets given prompts (torch only).

For a prompt and a target y:
    prompt ids = tokenizer(prompt).input_ids            (the tokenizer's special tokens)
    target ids = tokenizer(y, add_special_tokens=False).input_ids + [eos_token_id]
    mean_logprob = mean over target ids of log p(id | prompt, earlier target ids)
and p = exp(mean_logprob). Seq2seq models: encoder input = the prompt ids, decoder labels
= the target ids.

Doing less work for the same numbers:
- **Shared prefixes (causal LMs).** Items carry a group id; within a group the longest
  common prefix of the prompt *token ids* is encoded once and its key/value cache reused
  for every member's remaining prompt tokens and target, so the result equals encoding each
  prompt whole. Groups are processed in chunks; the prefix common to the whole chunk
  (a template header, "Definition: ...") is encoded once for all of them, and each group's
  longer prefix continues from it (right-padded, masked; positions are passed explicitly
  so each member sees exactly its own positions).
- **Target-only log-softmax.** Only positions that predict a target token are projected on
  the vocabulary (`logits_to_keep` with a boolean mask), never every prompt token.
- **Length bucketing.** Members are sorted by length before batching, and a batch is cut
  when its padding would exceed 10% of its real tokens.
- **Seq2seq.** Identical prompts in a batch are encoded once and their encoder states
  reused (e.g. the label candidates of a classification instance).

Profiling: `phase`, a function from a step's name to a context manager, is entered
around each step: "tokenize", "prefix" (the shared-prefix passes), "suffix" (the member
rows) and, inside it, "log_softmax" (seq2seq: "tokenize" and "log_softmax"). The default
does nothing; benchmarks/bench_scoring.py times the steps with it.

Shapes: B = rows in a batch, L = prefix length, S = suffix length, V = vocabulary.
"""
from __future__ import annotations

import inspect
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutput

from raysys.models import prompt_ids

IGNORE = -100
Phase = Callable[[str], AbstractContextManager]


def no_phase(name: str) -> AbstractContextManager:
    return nullcontext()


@dataclass(frozen=True)
class Budget:
    """Batch limits: padded tokens per forward and target positions per vocab projection."""

    tokens: int = 8192  # B * (L + S) per forward pass
    logit_elements: int = 1 << 25  # target positions * V kept in one projection (128 MiB in fp32)
    max_rows: int = 256


def target_ids(tokenizer, targets: Sequence[str]) -> list[list[int]]:
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos_token_id: targets end with EOS")
    ids = tokenizer(list(targets), add_special_tokens=False).input_ids if targets else []
    return [list(t) + [eos] for t in ids]


def common_prefix_len(seqs: Sequence[Sequence[int]]) -> int:
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for i in range(n):
        t = first[i]
        if any(s[i] != t for s in seqs):
            return i
    return n


def _supports_logits_to_keep(model) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def _mean_logprobs(logits: torch.Tensor, targets: torch.Tensor, counts: Sequence[int]) -> list[float]:
    """logits (N, V), targets (N,) -> mean log-prob per consecutive segment of `counts`."""
    lp = torch.log_softmax(logits.float(), dim=-1).gather(1, targets[:, None])[:, 0]
    sums = torch.zeros(len(counts), dtype=torch.float64, device=lp.device)
    seg = torch.repeat_interleave(torch.arange(len(counts), device=lp.device), torch.tensor(counts, device=lp.device))
    sums.index_add_(0, seg, lp.double())
    return (sums / torch.tensor(counts, dtype=torch.float64, device=lp.device)).tolist()


def _bind(scorer, model, tokenizer, budget: Budget, max_prompt_tokens: int | None, phase: Phase) -> None:
    """The settings both scorers keep: the model, its tokenizer and device, the budget."""
    scorer.model, scorer.tokenizer, scorer.budget, scorer.phase = model, tokenizer, budget, phase
    scorer.max_prompt_tokens = max_prompt_tokens
    scorer.device = next(model.parameters()).device
    scorer.vocab = model.get_output_embeddings().weight.shape[0]


def _tokenized(scorer, prompts: Sequence[str], targets: Sequence[str]) -> tuple[list[list[int]], list[list[int]]]:
    """A scorer's prompt ids (each cut to its last max_prompt_tokens) and target ids."""
    with scorer.phase("tokenize"):
        return (prompt_ids(scorer.tokenizer, prompts, scorer.max_prompt_tokens),
                target_ids(scorer.tokenizer, targets))


class CausalScorer:
    """Mean target log-probabilities for a causal LM, with shared-prefix KV reuse."""

    def __init__(self, model, tokenizer, budget: Budget = Budget(), max_prompt_tokens: int | None = None,
                 phase: Phase = no_phase):
        _bind(self, model, tokenizer, budget, max_prompt_tokens, phase)
        self.keep_mask = _supports_logits_to_keep(model)
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    @torch.inference_mode()
    def score(self, prompts: Sequence[str], targets: Sequence[str], groups: Sequence[int] | None = None) -> np.ndarray:
        """Mean log-prob of each target given its prompt (float64 array, one per item).
        Items with the same group id may share a prefix; without groups none is shared."""
        n = len(prompts)
        if n == 0:
            return np.zeros(0)
        p_ids, t_ids = _tokenized(self, prompts, targets)
        for i, p in enumerate(p_ids):
            if not p:
                raise ValueError(f"prompt {i} tokenizes to nothing and the tokenizer adds no BOS")
        groups = list(range(n)) if groups is None else list(groups)
        members: dict[int, list[int]] = {}
        for i, g in enumerate(groups):
            members.setdefault(g, []).append(i)
        # prefix length per group: the common token prefix, leaving >= 1 prompt token per member
        plan = []
        for idx in members.values():
            lcp = common_prefix_len([p_ids[i] for i in idx]) if len(idx) > 1 else 0
            lcp = min(lcp, min(len(p_ids[i]) for i in idx) - 1)
            plan.append((lcp, idx))
        plan.sort(key=lambda x: p_ids[x[1][0]])  # neighbours share prefixes: longer chunk-wide prefix
        out = np.empty(n)
        for chunk in self._group_chunks(plan, p_ids, t_ids):
            self._run_chunk(chunk, p_ids, t_ids, out)
        return out

    def _group_chunks(self, plan, p_ids, t_ids):
        """Consecutive groups whose prefix pass (groups x longest prefix) and member rows
        (rows x (prefix + longest suffix)) each fit the token budget."""
        chunk, rows, lmax, smax = [], 0, 0, 0
        for lcp, idx in plan:
            s = max(len(p_ids[i]) - lcp + len(t_ids[i]) for i in idx)
            n_rows, n_l, n_s = rows + len(idx), max(lmax, lcp), max(smax, s)
            fits = (n_rows * (n_l + n_s) <= self.budget.tokens and (len(chunk) + 1) * n_l <= self.budget.tokens
                    and n_rows <= self.budget.max_rows)
            if chunk and not fits:
                yield chunk
                chunk, n_rows, n_l, n_s = [], len(idx), lcp, s
            chunk.append((lcp, idx))
            rows, lmax, smax = n_rows, n_l, n_s
        if chunk:
            yield chunk

    def _prefix_cache(self, chunk, p_ids):
        """The chunk's prefix caches, in two levels: the prefix common to *every* prompt of
        the chunk (e.g. a template header) is encoded once; each group's longer prefix
        continues from it (right-padded, masked). Returns (per-layer (keys, values) of shape
        (G, H, Lmax, D), prefix attention mask (G, Lmax), cache row of each group), or
        (None, None, {}) when nothing is shared."""
        from transformers import DynamicCache

        dev = self.device
        groups = [(lcp, idx) for lcp, idx in chunk if lcp > 0]
        if not groups:
            return None, None, {}
        c = common_prefix_len([p_ids[idx[0]][:lcp] for lcp, idx in groups])
        level1 = None
        if c > 0:  # one row for the prefix every group shares
            ids = torch.tensor([p_ids[groups[0][1][0]][:c]], device=dev)
            out = self.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True, logits_to_keep=1)
            level1 = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        lmax = max(lcp for lcp, _ in groups)
        g, width = len(groups), lmax - c
        ids = torch.full((g, width), self.pad, dtype=torch.long)
        mask = torch.zeros((g, lmax), dtype=torch.long)
        row_of = {}
        for r, (lcp, idx) in enumerate(groups):
            ids[r, : lcp - c] = torch.tensor(p_ids[idx[0]][c:lcp])
            mask[r, :lcp] = 1
            row_of[idx[0]] = r
        mask = mask.to(dev)
        if width == 0:
            layers = [(k.expand(g, -1, -1, -1), v.expand(g, -1, -1, -1)) for k, v in level1]
            return layers, mask, row_of
        kwargs = {}
        if level1 is not None:
            kwargs["past_key_values"] = DynamicCache(
                ddp_cache_data=[(k.expand(g, -1, -1, -1).contiguous(), v.expand(g, -1, -1, -1).contiguous())
                                for k, v in level1])
        pos = (c + torch.arange(width)).expand(g, width)
        out = self.model(input_ids=ids.to(dev), attention_mask=mask, position_ids=pos.to(dev), use_cache=True,
                         logits_to_keep=1, **kwargs)
        layers = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        return layers, mask, row_of

    def _run_chunk(self, chunk, p_ids, t_ids, out) -> None:
        from transformers import DynamicCache

        # every group shares at least the chunk-wide common prefix (a group of one included)
        c = common_prefix_len([p_ids[i] for _, idx in chunk for i in idx])
        c = min([c] + [len(p_ids[i]) - 1 for _, idx in chunk for i in idx])
        chunk = [(max(lcp, c), idx) for lcp, idx in chunk]
        with self.phase("prefix"):
            layers, pmask, row_of = self._prefix_cache(chunk, p_ids)
        rows = []  # (item, lcp, cache row or -1)
        for lcp, idx in chunk:
            for i in idx:
                rows.append((i, lcp, row_of.get(idx[0], -1) if lcp > 0 else -1))
        rows.sort(key=lambda r: len(p_ids[r[0]]) - r[1] + len(t_ids[r[0]]))  # bucket by suffix length
        lmax = pmask.shape[1] if pmask is not None else 0
        for batch in self._row_batches(rows, p_ids, t_ids, lmax):
            with self.phase("suffix"):
                self._run_rows(batch, p_ids, t_ids, layers, pmask, out, DynamicCache)

    def _row_batches(self, rows, p_ids, t_ids, lmax):
        """Rows (sorted by suffix length) in batches within the budget, cut early when
        padding would exceed 10% of the real suffix tokens: on a CPU batching buys little
        and padding costs time almost one for one."""
        batch, smax, n_tgt, real = [], 0, 0, 0
        for r in rows:
            i, lcp, _ = r
            s = len(p_ids[i]) - lcp + len(t_ids[i])
            new_s, new_t, new_real = max(smax, s), n_tgt + len(t_ids[i]), real + s
            fits = ((len(batch) + 1) * (lmax + new_s) <= self.budget.tokens and len(batch) < self.budget.max_rows
                    and new_t * self.vocab <= self.budget.logit_elements
                    and (len(batch) + 1) * new_s <= 1.1 * new_real)
            if batch and not fits:
                yield batch
                batch, new_s, new_t, new_real = [], s, len(t_ids[i]), s
            batch.append(r)
            smax, n_tgt, real = new_s, new_t, new_real
        if batch:
            yield batch

    def _run_rows(self, batch, p_ids, t_ids, layers, pmask, out, DynamicCache) -> None:
        b = len(batch)
        seqs = [p_ids[i][lcp:] + t_ids[i] for i, lcp, _ in batch]
        smax = max(len(s) for s in seqs)
        ids = torch.full((b, smax), self.pad, dtype=torch.long)
        smask = torch.zeros((b, smax), dtype=torch.long)
        keep = torch.zeros((b, smax), dtype=torch.bool)
        pos = torch.zeros((b, smax), dtype=torch.long)
        tgt: list[int] = []
        for r, ((i, lcp, _), seq) in enumerate(zip(batch, seqs)):
            ids[r, : len(seq)] = torch.tensor(seq)
            smask[r, : len(seq)] = 1
            sp = len(p_ids[i]) - lcp  # prompt tokens in this row's suffix (>= 1)
            keep[r, sp - 1 : sp - 1 + len(t_ids[i])] = True  # positions that predict target tokens
            pos[r] = lcp + torch.arange(smax)
            tgt.extend(t_ids[i])
        kwargs = {}
        if layers is not None:
            sel = torch.tensor([max(c, 0) for _, _, c in batch], device=self.device)
            kwargs["past_key_values"] = DynamicCache(ddp_cache_data=[(k[sel], v[sel]) for k, v in layers])
            prefix_mask = pmask[sel] * torch.tensor([c >= 0 for _, _, c in batch], device=self.device)[:, None]
            mask = torch.cat([prefix_mask, smask.to(self.device)], dim=1)
        else:
            mask = smask.to(self.device)
        if self.keep_mask:
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask, position_ids=pos.to(self.device),
                                use_cache=layers is not None, logits_to_keep=keep.to(self.device), **kwargs).logits
        else:  # models without logits_to_keep: project everything, keep the target positions
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask, position_ids=pos.to(self.device),
                                **kwargs).logits[keep.to(self.device)]
        with self.phase("log_softmax"):
            means = _mean_logprobs(logits, torch.tensor(tgt, device=self.device),
                                   [len(t_ids[i]) for i, _, _ in batch])
        for (i, _, _), m in zip(batch, means):
            out[i] = m


class Seq2SeqScorer:
    """Mean target log-probabilities for an encoder-decoder model (T5 and kin)."""

    def __init__(self, model, tokenizer, budget: Budget = Budget(), max_prompt_tokens: int | None = None,
                 phase: Phase = no_phase):
        _bind(self, model, tokenizer, budget, max_prompt_tokens, phase)
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    @torch.inference_mode()
    def score(self, prompts: Sequence[str], targets: Sequence[str], groups: Sequence[int] | None = None) -> np.ndarray:
        n = len(prompts)
        if n == 0:
            return np.zeros(0)
        p_ids, t_ids = _tokenized(self, prompts, targets)
        order = sorted(range(n), key=lambda i: (len(p_ids[i]), len(t_ids[i])))
        out = np.empty(n)
        batch: list[int] = []
        for i in order:
            cand = batch + [i]
            width = max(len(p_ids[j]) for j in cand) + max(len(t_ids[j]) for j in cand)
            n_tgt = max(len(t_ids[j]) for j in cand) * len(cand)
            if batch and (len(cand) * width > self.budget.tokens or len(cand) > self.budget.max_rows
                          or n_tgt * self.vocab > self.budget.logit_elements):
                self._run(batch, p_ids, t_ids, out)
                cand = [i]
            batch = cand
        if batch:
            self._run(batch, p_ids, t_ids, out)
        return out

    def _run(self, batch, p_ids, t_ids, out) -> None:
        unique: dict[tuple[int, ...], int] = {}
        enc_row = [unique.setdefault(tuple(p_ids[i]), len(unique)) for i in batch]
        enc_seqs = list(unique)
        emax = max(len(s) for s in enc_seqs)
        enc = torch.full((len(enc_seqs), emax), self.pad, dtype=torch.long)
        emask = torch.zeros_like(enc)
        for r, s in enumerate(enc_seqs):
            enc[r, : len(s)] = torch.tensor(s)
            emask[r, : len(s)] = 1
        enc, emask = enc.to(self.device), emask.to(self.device)
        states = self.model.get_encoder()(input_ids=enc, attention_mask=emask).last_hidden_state
        sel = torch.tensor(enc_row, device=self.device)
        tmax = max(len(t_ids[i]) for i in batch)
        labels = torch.full((len(batch), tmax), IGNORE, dtype=torch.long)
        for r, i in enumerate(batch):
            labels[r, : len(t_ids[i])] = torch.tensor(t_ids[i])
        labels = labels.to(self.device)
        decoder_in = self.model.prepare_decoder_input_ids_from_labels(labels=labels)  # shift right
        logits = self.model(encoder_outputs=BaseModelOutput(last_hidden_state=states[sel]),
                            attention_mask=emask[sel], decoder_input_ids=decoder_in).logits
        keep = labels != IGNORE
        with self.phase("log_softmax"):
            means = _mean_logprobs(logits[keep], labels[keep], [len(t_ids[i]) for i in batch])
        for i, m in zip(batch, means):
            out[i] = m


class Deduplicated:
    """Scores each distinct (prompt, target) pair once: identical items get identical
    numbers (a perturbation that changed nothing gives exactly p_i0) and no repeated work."""

    def __init__(self, inner):
        self.inner = inner

    def score(self, prompts: Sequence[str], targets: Sequence[str], groups: Sequence[int] | None = None) -> np.ndarray:
        first: dict[tuple[str, str], int] = {}
        keep: list[int] = []  # index of the first occurrence of each distinct pair
        where: list[int] = []  # distinct-pair number of every item
        for i, key in enumerate(zip(prompts, targets)):
            u = first.get(key)
            if u is None:
                u = first[key] = len(keep)
                keep.append(i)
            where.append(u)
        uniq_p = [prompts[i] for i in keep]
        uniq_t = [targets[i] for i in keep]
        uniq_g = None if groups is None else [groups[i] for i in keep]
        return self.inner.score(uniq_p, uniq_t, uniq_g)[np.array(where, dtype=np.int64)]


def make_scorer(model, tokenizer, kind: str, budget: Budget = Budget(), max_prompt_tokens: int | None = None,
                phase: Phase = no_phase):
    cls = Seq2SeqScorer if kind == "seq2seq" else CausalScorer
    return Deduplicated(cls(model, tokenizer, budget, max_prompt_tokens, phase))
