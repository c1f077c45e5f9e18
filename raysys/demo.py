"""The README's demo on the embedded default (`DemoConfig`): what raysys does, end to end,
as far as it is built. Now: a synthetic rewriting pool, the built-in tiny model, a summary
of the pool and a few formatted prompts, prompt-uncertainty scoring of the whole pool on
local Ray actors with the most and least uncertain tasks, then a selection per strategy
(selected-<strategy>.json) and the Task Map (taskmap.png, taskmap.csv). Rerunning reuses
the pool, the model and the finished scores.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from raysys.config import DemoConfig, SelectConfig
from raysys.models import count_parameters, init_tiny, load_model
from raysys.pools import load_pool
from raysys.pools.summary import render, summarize
from raysys.prompts import format_prompt
from raysys.scoring.pipeline import score_pool
from raysys.scoring.summary import render_score_summary
from raysys.synth import write_synthetic_pool


def run_demo(cfg: DemoConfig, say: Callable[[str], None] = print) -> dict:
    work = Path(cfg.work_dir)
    pool_path = work / "pool.parquet"
    made = write_synthetic_pool(cfg.synth, pool_path)
    say(f"[1/5] synthetic pool {'written to' if made else 'up to date at'} {pool_path}")
    pool = load_pool(pool_path)
    summary = summarize(pool)
    say(render(summary))

    model_path = cfg.model.path or str(work / "tiny-model")
    if not cfg.model.path and not (Path(model_path) / "config.json").exists():
        init_tiny(model_path, cfg.tiny)
        say(f"[2/5] built the tiny model in {model_path}")
    else:
        say(f"[2/5] using the model in {model_path}")
    lm = load_model(model_path, trust_remote_code=cfg.model.trust_remote_code, dtype=cfg.model.dtype)
    say(f"      {lm.kind} model, {count_parameters(lm.model):,} parameters, vocabulary {len(lm.tokenizer)}")

    say(f"[3/5] {cfg.show_prompts} prompt(s) in the {cfg.prompt.template!r} template:")
    for task in pool.tasks[: cfg.show_prompts]:
        inst = task.instances[0]
        prompt = format_prompt(cfg.prompt.template, task.instruction, inst.input,
                               task.demonstrations, cfg.prompt.demonstrations)
        n_tokens = len(lm.tokenizer(prompt).input_ids)
        say(f"--- {task.task_id} ({n_tokens} tokens; reference output {inst.outputs[0]!r})")
        say(prompt)

    s = cfg.scoring
    say(f"[4/5] scoring {len(pool.tasks)} tasks (n={s.instances}, k={s.perturbations}, drop rate {s.drop_rate}) "
        f"on {cfg.actors} local Ray actor(s)")
    scores = work / "scores.parquet"
    run = score_pool(str(pool_path), model_path, str(scores), s, actors=cfg.actors,
                     trust_remote_code=cfg.model.trust_remote_code)
    say(render_score_summary(run, top=cfg.show_tasks))

    from raysys.selection.run import render_selection, run_select, run_taskmap

    say(f"[5/5] selecting {cfg.select_budget} tasks with {', '.join(cfg.strategies)}; drawing the Task Map")
    selections = {}
    for name in cfg.strategies:
        out = work / f"selected-{name}.json"
        sel = run_select(SelectConfig(strategy=name, budget=cfg.select_budget), str(out), scores=str(scores),
                         pool=str(pool_path))
        selections[name] = str(out)
        say(render_selection(sel, show=3) + f"\n      -> {out}")
    if len(cfg.strategies) >= 2:
        from raysys.selection import read_task_ids

        a, b = (set(read_task_ids(selections[n])) for n in cfg.strategies[:2])
        say(f"      {cfg.strategies[0]} and {cfg.strategies[1]} share {len(a & b)} of {cfg.select_budget} tasks")
    tm = run_taskmap(str(scores), str(work / "taskmap.png"), cfg.taskmap, table=str(work / "taskmap.csv"))
    say("      Task Map: " + ", ".join(f"{r['category']} {r['tasks']}" for r in tm["counts"])
        + f" -> {tm['map']}, {tm['table']}")
    return {"summary": summary, "pool": str(pool_path), "model": model_path, "scores": str(scores),
            "selections": selections, "taskmap": tm["map"]}
