"""The demo's summary (summary.json) and the table it prints: pure functions of the
stages' outputs (raysys.experiments.demo runs the stages)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import pyarrow.parquet as pq

from raysys.config import DemoConfig
from raysys.config.mapping import to_dict

BASE = "base model"


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else None


def train_facts(model_dir: str) -> dict[str, Any]:
    """What a training run did, from its export's raysys_train.json (the same whether this
    invocation trained or found the run finished): examples, losses, steady-state tokens/s
    summed over the workers."""
    from raysys.costs import train_tokens
    from raysys.io import read_json
    from raysys.training.export import REPORT

    facts = read_json(Path(model_dir) / REPORT)
    epochs = facts["epochs"]
    steady = _mean(e.get("steady_tokens_per_s_worker") for e in epochs)
    return {"model": model_dir, "examples": facts["examples"], "epochs": len(epochs),
            "trained_tokens": train_tokens(model_dir, facts["config"]["workers"]),
            "train_loss_first_epoch": epochs[0]["train_loss"], "train_loss_last_epoch": epochs[-1]["train_loss"],
            "tokens_per_s": None if steady is None else steady * facts["config"]["workers"]}


def summary(cfg: DemoConfig, model: str, n_params: int, tasks, scores: str, tmap: Mapping[str, Any],
            selections: Mapping[str, dict], trained: Mapping[str, str], evals: Mapping[str, dict],
            seconds: float) -> dict[str, Any]:
    """summary.json: the model, the tasks, the Task Map, and per strategy the selection
    (`selections`: its selected.json: the tasks, the training examples and tokens), its
    training and the held-out metrics, with its held-out NLL/token minus random's; the
    noise floor is random-2's minus random's. The top-level before/after figures are the
    first strategy's (prompt uncertainty in the default)."""
    cols = pq.read_table(scores, columns=["task_id", "prompt_uncertainty"]).to_pydict()
    u = dict(zip(cols["task_id"], cols["prompt_uncertainty"]))
    first = cfg.strategies[0]
    before, after = evals[BASE]["all"], evals[first]["all"]
    return {
        "model": cfg.model, "model_path": model, "n_parameters": n_params,
        "template": f"{cfg.prompt.template}/{cfg.prompt.chat_body}",
        "pool_tasks": sum(tasks.sources.values()), "pool_sources": dict(tasks.sources),
        "candidates_scored": len(tasks.candidates), "heldout_tasks": sum(len(v) for v in tasks.groups.values()),
        "heldout_groups": {k: len(v) for k, v in tasks.groups.items()},
        "taskmap": {r["category"]: r["tasks"] for r in tmap["counts"]},
        "pool_mean_prompt_uncertainty": _mean(u.values()),
        "heldout_rougeL_before": before["rougeL"], "heldout_rougeL_after": after["rougeL"],
        "heldout_exact_match_before": before["exact_match"], "heldout_exact_match_after": after["exact_match"],
        "after_is": first,
        "heldout_before": evals[BASE],
        "heldout_nll_before": before["nll"],
        "strategies": {s: {"selected": selections[s]["task_ids"],
                           "selected_mean_prompt_uncertainty": _mean(u.get(t) for t in selections[s]["task_ids"]),
                           "selected_train_examples": selections[s].get("selected_train_examples"),
                           "selected_train_tokens": selections[s].get("selected_train_tokens"),
                           "nll_minus_random": _minus(evals, s, "random"),
                           "training": train_facts(trained[s]), "heldout": evals[s]} for s in cfg.strategies},
        "noise_floor": _minus(evals, "random-2", "random"),
        "seconds": round(seconds, 1),
        "config": to_dict(cfg),
    }


def _minus(evals: Mapping[str, dict], a: str, b: str) -> float | None:
    """Held-out NLL/token of `a`'s model minus `b`'s (None when either is missing)."""
    x, y = (evals.get(k, {}).get("all", {}).get("nll") for k in (a, b))
    return None if x is None or y is None else x - y


def _f(x, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def render(s: Mapping[str, Any]) -> str:
    """The results table: for the base model and each strategy, what it selected (tasks,
    training tokens, mean U) and trained (loss), the NLL/token of all held-out references
    and its difference with random's, then Rouge-L / exact match on all held-out tasks and
    per group; under it, the noise floor (random-2 minus random)."""
    groups = ["all"] + list(s["heldout_groups"])
    rows = [(BASE, None, s["heldout_before"])] + [(k, v, v["heldout"]) for k, v in s["strategies"].items()]
    width = max(len(r[0]) for r in rows) + 2
    lines = [f"      {'':<{width}}{'tasks':>5} {'tokens':>6} {'mean U':>7} {'loss':>11} {'NLL/tok':>7} {'-random':>7}  "
             + "  ".join(f"{_short(g):>15}" for g in groups),
             f"      {'':<{width}}{'':>5} {'':>6} {'':>7} {'first->last':>11} {'':>7} {'':>7}  "
             + "  ".join(f"{'Rouge-L / EM %':>15}" for _ in groups)]
    for name, st, m in rows:
        if st is None:
            head = f"{'':>5} {'':>6} {'':>7} {'':>11} {_f(m['all']['nll']):>7} {'':>7}"
        else:
            t = st["training"]
            head = (f"{len(st['selected']):>5} {_f(st['selected_train_tokens'], '.0f'):>6} "
                    f"{_f(st['selected_mean_prompt_uncertainty'], '.4f'):>7} "
                    f"{_f(t['train_loss_first_epoch'], '.2f') + '->' + _f(t['train_loss_last_epoch'], '.2f'):>11} "
                    f"{_f(m['all']['nll']):>7} {_f(st['nll_minus_random'], '+.3f'):>7}")
        cells = "  ".join(f"{_f(m[g]['rougeL'], '.1f') + ' / ' + _f(m[g]['exact_match'], '.1f'):>15}" for g in groups)
        lines.append(f"      {name:<{width}}{head}  {cells}")
    if s.get("noise_floor") is not None:
        lines.append(f"      noise floor: random-2 - random = {s['noise_floor']:+.3f} nats/token (two random draws of "
                     "one seed): a difference of that size is chance")
    lines.append("      groups: " + "; ".join(f"{_short(g)} = {g} ({n} tasks)" for g, n in s["heldout_groups"].items())
                 + f"; pool mean U {_f(s['pool_mean_prompt_uncertainty'], '.4f')}; {s['seconds']:.0f} s")
    return "\n".join(lines)


def _short(group: str) -> str:
    """A column title for a held-out group ('niv2 (test split)' -> 'niv2 test')."""
    if group == "all":
        return "all"
    name = Path(group.split(" (")[0]).stem
    tag = group.split(" (")[1].rstrip(")").split()[0] if " (" in group else ""
    return f"{name[:13]} {tag}".strip()


def plot_results(s: Mapping[str, Any], path: str | Path) -> None:
    """results.png: held-out NLL per token of the references and Rouge-L per group (bars),
    for the base model and each strategy's fine-tuned model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from raysys.io import atomic_path

    groups = ["all"] + list(s["heldout_groups"])
    models = [(BASE, s["heldout_before"])] + [(k, v["heldout"]) for k, v in s["strategies"].items()]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=False)
    x, w = np.arange(len(groups)), 0.8 / len(models)
    for ax, metric, title in ((axes[0], "nll", "NLL/token of the references (lower is better)"),
                              (axes[1], "rougeL", "Rouge-L (%)")):
        for i, (name, m) in enumerate(models):
            vals = [m[g][metric] if m[g][metric] is not None else 0.0 for g in groups]
            ax.bar(x + (i - (len(models) - 1) / 2) * w, vals, w, label=name)
        ax.set_xticks(x, [f"{_short(g)}\n({s['heldout_tasks'] if g == 'all' else s['heldout_groups'][g]} tasks)"
                          for g in groups], fontsize=8)
        ax.set_title(f"held-out {title}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    tokens = next(iter(s["strategies"].values())).get("selected_train_tokens")
    fig.suptitle(f"{s['model']}: before and after LoRA on each strategy's selection"
                 + (f" (~{tokens:,.0f} training tokens each)" if tokens else ""), fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
