"""The strategy comparison's pure parts (`raysys experiment strategies`; the running is in
raysys.experiments.comparison_run): the arms, the held-out split, the candidate draws,
and the summary: per strategy the mean over seeds of each metric, and its paired
difference with random (the same seed) with a 95 % interval and the minimum detectable
effect (raysys.stats); random-2 - random is the noise floor.

Signs: NLL per token is lower-better, so a strategy that helps has a *negative* NLL
difference with random; label accuracy and Rouge-L are higher-better.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from raysys.config.experiments import contrast
from raysys.errors import ConfigError
from raysys.selection.arms import arm
from raysys.stats import finite, mean_std, paired

BASE = "base"  # the base model, evaluated once: its row repeats in every seed
REFERENCE = "random"
METRICS = ("nll", "label_accuracy", "rougeL", "exact_match")


def selection_seed(seed: int, name: str) -> int:
    """Two draws per seed never share a stream: 2 x seed for every arm, + 1 for random-2."""
    return 2 * seed + arm(name)[1]


def split_heldout(ids: Sequence[str], dev_fraction: float) -> tuple[list[str], list[str]]:
    """(development, test) task ids: a fixed shuffle (seed 0), the first round(fraction x n)
    development, at least one task each; each list in the order of `ids`."""
    if len(ids) < 2:
        raise ConfigError(f"the held-out set has {len(ids)} task(s): it needs at least 2 (development and test)")
    order = list(ids)
    random.Random(0).shuffle(order)
    n_dev = min(max(1, round(dev_fraction * len(ids))), len(ids) - 1)
    dev = set(order[:n_dev])
    return [t for t in ids if t in dev], [t for t in ids if t not in dev]


def draw(ids: Sequence[str], n: int, seed: int, what: str) -> list[str]:
    """n of `ids` at random (seeded), in the order of `ids`; all of them for n = 0."""
    if n == 0:
        return list(ids)
    if n > len(ids):
        raise ConfigError(f"{what} = {n} but only {len(ids)} task(s) are there to draw from")
    chosen = set(random.Random(f"{seed}:{what}").sample(list(ids), n))
    return [t for t in ids if t in chosen]


def summarize(rows: Sequence[dict[str, Any]], contrasts: Sequence[str] = ()) -> dict[str, Any]:
    """Per strategy: seeds and each metric's mean and sample std; per strategy other than
    random and base: the paired difference with random of each metric (raysys.stats.paired:
    mean, 95 % interval, detectable effect, seeds ahead); the floor is random-2's; per
    contrast "a - b", the paired difference of a with b the same way."""
    strategies = list(dict.fromkeys(r["strategy"] for r in rows))
    out: dict[str, Any] = {"strategies": {}, "paired": {},
                           "contrasts": {c: {k: paired(rows, k, *contrast(c)) for k in METRICS} for c in contrasts}}
    for s in strategies:
        mine = [r for r in rows if r["strategy"] == s]
        entry: dict[str, Any] = {"seeds": len(mine)}
        for k in (*METRICS, "n_tasks", "n_examples", "n_tokens", "train_tokens", "select_flops", "train_flops",
                  "select_seconds", "train_seconds"):
            entry[k], entry[f"{k}_std"] = mean_std(r.get(k) for r in mine)
        for k in ("select_seconds", "train_seconds"):  # medians: robust to a busy machine and resumed stages
            seconds = [float(r[k]) for r in mine if finite(r.get(k))]
            entry[f"{k}_median"] = float(np.median(seconds)) if seconds else None
        out["strategies"][s] = entry
    for s in strategies:
        if s not in (REFERENCE, BASE):
            out["paired"][f"{s} - {REFERENCE}"] = {k: paired(rows, k, s, REFERENCE) for k in METRICS}
    floor = out["paired"].get(f"random-2 - {REFERENCE}")
    out["floor"] = None if floor is None else {k: floor[k]["std"] for k in METRICS}
    return out


def render(summary: dict[str, Any]) -> str:
    """The paired differences with random, one line per strategy: NLL first."""
    def f(v, fmt="+.4f"):
        return "-" if v is None else format(v, fmt)

    head = (f"{'strategy - random':<30} {'seeds':>5} {'NLL/token diff':>15} {'95% CI':>21} {'detectable':>10} "
            f"{'ahead':>5}   {'label acc diff':>14}  {'Rouge-L diff':>12}")
    lines = [head]
    for name, d in {**summary["paired"], **summary.get("contrasts", {})}.items():
        n = d["nll"]
        ci = f"[{f(n['ci95_low'])}, {f(n['ci95_high'])}]"
        ahead = "-" if not n["pairs"] else f"{n['pairs'] - n['a_better']}/{n['pairs']}"  # lower NLL = ahead
        lines.append(f"{name:<30} {n['pairs']:>5} {f(n['mean']):>15} {ci:>21} {f(n['detectable'], '.4f'):>10} "
                     f"{ahead:>5}   {f(d['label_accuracy']['mean'], '+.2f'):>14}  {f(d['rougeL']['mean'], '+.2f'):>12}")
    lines.append("NLL: lower is better (a strategy that helps has a negative difference); 'ahead': seeds where the "
                 "strategy's NLL is below random's; 'detectable': the difference a paired t test at 5 % would find "
                 "with 80 % power at the observed SD")
    return "\n".join(lines)


def markdown(summary: dict[str, Any]) -> str:
    """The summary as a Markdown table (STEM.md; the README quotes it): per arm the seeds,
    the mean tasks and training tokens (the selection's, one epoch), the mean test NLL per
    token, its paired difference with random with the 95 % interval, the seeds where it is
    below random's, the difference detectable at 80 % power from its own SD, and what the
    selection cost (mean TFLOPs of scoring; median seconds, scoring included)."""
    def f(v, fmt):
        return "–" if v is None else format(v, fmt)

    lines = [("| arm | seeds | tasks | tokens | test NLL/token | − random (95 % CI) | below random | detectable "
              "| selection TFLOPs | selection s |"),
             "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
    for name, st in summary["strategies"].items():
        d = summary["paired"].get(f"{name} - {REFERENCE}", {}).get("nll")
        if d and d["pairs"]:
            diff = f"{f(d['mean'], '+.3f')} [{f(d['ci95_low'], '+.3f')}, {f(d['ci95_high'], '+.3f')}]"
            below, detectable = f"{d['pairs'] - d['a_better']}/{d['pairs']}", f(d["detectable"], ".3f")
        else:
            diff = below = detectable = "–"
        if name == BASE:
            tasks = tokens = tflops = seconds = "–"
        else:
            tasks, tokens = f(st["n_tasks"], ".0f"), f(st["n_tokens"], ",.0f")
            tflops = f(None if st["select_flops"] is None else st["select_flops"] / 1e12, ".1f")
            seconds = f(st["select_seconds_median"], ".0f")
        lines.append(f"| {name} | {st['seeds']} | {tasks} | {tokens} | {f(st['nll'], '.3f')} | {diff} | {below} | "
                     f"{detectable} | {tflops} | {seconds} |")
    if summary.get("contrasts"):
        lines += ["", "| contrast | seeds | NLL/token difference (95 % CI) | first below second | detectable |",
                  "| --- | ---: | --- | ---: | ---: |"]
        for name, c in summary["contrasts"].items():
            d = c["nll"]
            diff = f"{f(d['mean'], '+.3f')} [{f(d['ci95_low'], '+.3f')}, {f(d['ci95_high'], '+.3f')}]"
            lines.append(f"| {name} | {d['pairs']} | {diff} | {d['pairs'] - d['a_better']}/{d['pairs']} | "
                         f"{f(d['detectable'], '.3f')} |")
    return "\n".join(lines)
