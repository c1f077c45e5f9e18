"""The README's demo (`raysys demo`, `bash jobs/demo.sh`): a real pretrained model on real
tasks, one round of selection, on local Ray.

1. the model: `raysys model import` of `cfg.model` into the model cache (once), or a folder;
2. the tasks: a pool from the real data (NIV2 training tasks and Self-Instruct seed tasks),
   and held-out tasks never scored or trained (the sources' test-split tasks, the first
   tasks of the held-out sources, and `heldout_from_pool` tasks of the first pool source);
3. prompt uncertainty of a random sample of the pool (Ray Data scoring), and its Task Map;
4. per strategy: tasks selected to the same `budget` of training tokens (`budget_unit`),
   LoRA fine-tuning on them through Ray Train; `random-2` is a second random draw, whose
   difference with `random` is the noise floor;
5. the held-out tasks evaluated (NLL per token of their references, Rouge-L, exact match)
   with the base model and each fine-tuned model; summary.json and the table.

Every stage writes its own output in the work dir and skips or resumes from it, so a
rerun continues where an interrupted demo stopped and a finished one only prints its
results again (a rerun with other settings is refused: use another work_dir).
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raysys.config import DemoConfig
from raysys.errors import RaysysError

STAGES = 6
PROMPT_LINES = 14  # of each prompt shown


def default_data_dir() -> Path:
    """../shared/data beside the raysys checkout (this file: raysys/experiments/demo.py)."""
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def demo_model(cfg: DemoConfig, say: Callable[[str], None]) -> str:
    """A model folder: `cfg.model` itself when it is one, else its import in the model cache."""
    from raysys.models.gguf import model_folder

    if Path(cfg.model).is_dir():
        return str(Path(cfg.model).resolve())
    path, prov = model_folder(cfg.model, cfg.model_cache)
    if prov is not None and not prov.get("up_to_date"):
        say(f"      imported {prov.get('gguf_file', cfg.model)} into {path} in {prov.get('seconds', 0):.0f} s")
    return path


@dataclass(frozen=True)
class DemoTasks:
    pool: str  # canonical Parquet of the trainable pool
    heldout: str  # canonical Parquet of the held-out tasks
    candidates: tuple[str, ...]  # the pool tasks scored
    groups: dict[str, tuple[str, ...]]  # held-out group name -> its task ids
    sources: dict[str, int]  # pool source -> tasks it gave the pool


def _source(data: Path, rel: str):
    from raysys.pools.load import load_pool

    path = data / rel
    if not path.exists():
        raise RaysysError(f"the demo's data: {path} not found (data_dir is {data}; the real data lives in "
                          "../shared/data beside the raysys checkout; set data_dir=DIR)")
    return load_pool(path).tasks


def draw(ids: Sequence[str], n: int, seed: int, salt: int) -> list[str]:
    """`n` of `ids` drawn at random (all of them when n is 0 or too large), in their order."""
    if n == 0 or n >= len(ids):
        return list(ids)
    keep = set(np.random.default_rng([seed, salt]).choice(len(ids), size=n, replace=False).tolist())
    return [t for i, t in enumerate(ids) if i in keep]


def demo_tasks(cfg: DemoConfig, work: Path, data: Path) -> DemoTasks:
    """The pool and the held-out tasks (written once into the work dir), and the candidates."""
    from raysys.pools.canonical import write_parquet_tasks

    pool, heldout, groups, sources = [], [], {}, {}
    for k, rel in enumerate(cfg.pool):
        tasks = _source(data, rel)
        test = [t for t in tasks if t.metadata.get("split") == "test"]
        rest = [t for t in tasks if t.metadata.get("split") != "test"]
        if test:
            groups[f"{rel} (test split)"] = tuple(t.task_id for t in test)
        if k == 0 and cfg.heldout_from_pool:
            out = set(draw([t.task_id for t in rest], cfg.heldout_from_pool, cfg.seed, 1))
            groups[f"{rel} (held out)"] = tuple(t.task_id for t in rest if t.task_id in out)
            heldout += [t for t in rest if t.task_id in out]
            rest = [t for t in rest if t.task_id not in out]
        heldout += test
        pool += rest
        sources[rel] = len(rest)
    for rel in cfg.heldout:
        tasks = list(_source(data, rel))[: cfg.heldout_per_source or None]
        groups[rel] = tuple(t.task_id for t in tasks)
        heldout += tasks
    twice = [tid for tid, n in Counter(t.task_id for t in pool + heldout).items() if n > 1]
    if twice:
        raise RaysysError(f"{len(twice)} task id(s) occur in two of the demo's sources (e.g. {twice[0]!r}): "
                          f"{', '.join((*cfg.pool, *cfg.heldout))}")
    if cfg.budget_unit == "tasks" and len(pool) < cfg.budget:
        raise RaysysError(f"the demo's pool has {len(pool)} tasks, fewer than budget ({cfg.budget})")
    for path, tasks in ((work / "pool.parquet", pool), (work / "heldout.parquet", heldout)):
        if not path.is_file():  # written once: scoring and evaluation resume by the file
            write_parquet_tasks(tasks, path)
    candidates = draw([t.task_id for t in pool], cfg.candidates, cfg.seed, 2)
    return DemoTasks(str(work / "pool.parquet"), str(work / "heldout.parquet"), tuple(candidates), groups, sources)


def group_metrics(per_task: Sequence[dict], groups: dict[str, Sequence[str]]) -> dict[str, dict]:
    """Rouge-L and exact match over all held-out tasks and per group (per-task means
    weighted by instances, as the evaluation's own aggregate)."""
    from raysys.evaluation.metrics import aggregate, flat_metrics

    rows = {r["task_id"]: r for r in per_task}
    out = {"all": flat_metrics(aggregate(list(rows.values())))}
    for name, ids in groups.items():
        out[name] = flat_metrics(aggregate([rows[t] for t in ids]))
    return out


def _say(line: str) -> None:
    print(line, flush=True)  # in order with the stages' own lines on stderr


def run_demo(cfg: DemoConfig, say: Callable[[str], None] = _say) -> dict:
    """The demo; see the module docstring. Returns the summary (also in summary.json)."""
    from raysys.config import SelectConfig
    from raysys.console import announce
    from raysys.experiments.comparison import selection_seed
    from raysys.experiments.demo_report import BASE, plot_results, render, summary
    from raysys.io import read_json, write_json
    from raysys.pools.subset import subset_pool
    from raysys.runs.workdir import claim_work_dir
    from raysys.selection.arms import arm
    from raysys.selection.run import run_taskmap
    from raysys.selection.strategies import check_strategies
    from raysys.stages import RayStages, StageSettings
    from raysys.training.memory import count_parameters_from_config

    start = time.perf_counter()
    check_strategies(*(arm(a)[0] for a in cfg.strategies))
    work = claim_work_dir(cfg, "demo")
    announce()  # `log: PATH` first, when the CLI started a log
    data = Path(cfg.data_dir) if cfg.data_dir else default_data_dir()

    say(f"[1/{STAGES}] the model: {cfg.model}")
    model = demo_model(cfg, say)
    n_params, _ = count_parameters_from_config(model, False)
    say(f"      {model}: {n_params:,} parameters; template {cfg.prompt.template} ({cfg.prompt.chat_body} body)")

    tasks = demo_tasks(cfg, work, data)
    n_held = sum(len(v) for v in tasks.groups.values())
    say(f"[2/{STAGES}] the tasks: a pool of {sum(tasks.sources.values())} ("
        + ", ".join(f"{n} from {s}" for s, n in tasks.sources.items()) + f"); {n_held} held out ("
        + ", ".join(f"{len(v)} {k}" for k, v in tasks.groups.items()) + ")")
    candidates = subset_pool(tasks.pool, tasks.candidates, work / "candidates.parquet")
    _show_prompts(cfg, model, candidates, say)

    s = cfg.scoring
    say(f"[3/{STAGES}] prompt uncertainty of {len(tasks.candidates)} pool tasks (a random sample): n={s.instances} "
        f"instance(s), k={s.perturbations} perturbed instructions, answers <= {cfg.generation.max_new_tokens} tokens")
    stages = RayStages(StageSettings.of(cfg, actors=1, select=SelectConfig(taskmap=cfg.taskmap,
                                                                           budget_unit=cfg.budget_unit)),
                       tasks.pool, tasks.heldout, progress=True)
    scores = stages.score(model, tasks.candidates, work / "scores.parquet")
    tmap = run_taskmap(scores, str(work / "taskmap.png"), cfg.taskmap, table=str(work / "taskmap.csv"),
                       title=f"Task Map: real tasks under {Path(model).name}")
    say("      Task Map: " + ", ".join(f"{r['category']} {r['tasks']}" for r in tmap["counts"])
        + f" -> {tmap['map']}")

    t = cfg.train
    say(f"[4/{STAGES}] select {cfg.budget:,} training {cfg.budget_unit} per strategy and fine-tune each selection: "
        f"LoRA r={t.lora_r} on "
        f"{', '.join(t.lora_targets)}, {t.epochs} epoch(s), {t.workers} Ray Train worker(s)")
    trained = {}
    for strategy in cfg.strategies:
        picked = stages.select(arm(strategy)[0], cfg.budget, selection_seed(cfg.seed, strategy), tasks.candidates,
                               scores, work / "selected" / strategy, model=model)
        say(f"      {strategy}: {len(picked)} tasks: {', '.join(picked[:4])}{', ...' if len(picked) > 4 else ''}")
        trained[strategy], _ = stages.train(model, picked, work / "models" / strategy)

    say(f"[5/{STAGES}] evaluate {n_held} held-out tasks (up to {cfg.evaluation.instances} instances each) with the "
        f"base model and each fine-tuned one")
    evals = {}
    heldout = [t for ids in tasks.groups.values() for t in ids]
    for name, path in [(BASE, model)] + list(trained.items()):
        slug = "base" if name == BASE else name
        say(f"      {name}")
        rows = stages.per_task(path, {"test": heldout}, work / "eval" / slug)
        evals[name] = group_metrics(list(rows.values()), tasks.groups)

    selections = {k: read_json(work / "selected" / k / "selected.json") for k in cfg.strategies}
    out = summary(cfg, model, n_params, tasks, scores, tmap, selections, trained, evals, time.perf_counter() - start)
    write_json(work / "summary.json", out)
    plot_results(out, work / "results.png")
    say(f"[6/{STAGES}] results on the held-out tasks:")
    say(render(out))
    say(f"      wrote {work / 'summary.json'}, {work / 'results.png'}, {tmap['map']}")
    return out


def _show_prompts(cfg: DemoConfig, model: str, pool: str, say: Callable[[str], None]) -> None:
    """The first candidates' prompts exactly as scored (chat template included)."""
    if not cfg.show_prompts:
        return
    from transformers import AutoTokenizer

    from raysys.pools.subset import pool_tasks
    from raysys.prompts import template_for

    tok = AutoTokenizer.from_pretrained(model)
    template = template_for(cfg.prompt.template, cfg.prompt.chat_body, tok, model)
    for task in list(pool_tasks(pool).values())[: cfg.show_prompts]:
        inst = task.instances[0]
        prompt = template.prompt(task, inst, cfg.prompt.demonstrations)
        say(f"      --- a prompt as scored: {task.task_id}, {len(tok(prompt).input_ids)} tokens; reference "
            f"{inst.outputs[0][:60]!r}")
        lines = prompt.splitlines()
        for line in lines[:PROMPT_LINES]:
            say(f"      | {line[:110]}")
        if len(lines) > PROMPT_LINES:
            say(f"      | ... ({len(lines) - PROMPT_LINES} more lines)")
