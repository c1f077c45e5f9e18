"""The README's demo on the embedded default (`DemoConfig`): what raysys does, end to end,
as far as it is built. Now: a synthetic rewriting pool, the built-in tiny model, a summary
of the pool and a few formatted prompts, prompt-uncertainty scoring of the whole pool on
local Ray actors with the most and least uncertain tasks, then a selection per strategy
(selected-<strategy>.json) and the Task Map (taskmap.png, taskmap.csv), and finally
fine-tuning of the tiny model on the first strategy's tasks through Ray Train (tuned/)
with exact match and Rouge-L on held-out unseen-rule tasks before and after. Rerunning
reuses the pool, the model, the finished scores, evaluations and the trained model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from raysys.config import DemoConfig, SelectConfig
from raysys.io import write_json
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
    say(f"[1/6] synthetic pool {'written to' if made else 'up to date at'} {pool_path}")
    pool = load_pool(pool_path)
    summary = summarize(pool)
    say(render(summary))

    model_path = cfg.model.path or str(work / "tiny-model")
    if not cfg.model.path and not (Path(model_path) / "config.json").exists():
        init_tiny(model_path, cfg.tiny)
        say(f"[2/6] built the tiny model in {model_path}")
    else:
        say(f"[2/6] using the model in {model_path}")
    lm = load_model(model_path, trust_remote_code=cfg.model.trust_remote_code, dtype=cfg.model.dtype)
    say(f"      {lm.kind} model, {count_parameters(lm.model):,} parameters, vocabulary {len(lm.tokenizer)}")

    say(f"[3/6] {cfg.show_prompts} prompt(s) in the {cfg.prompt.template!r} template:")
    for task in pool.tasks[: cfg.show_prompts]:
        inst = task.instances[0]
        prompt = format_prompt(cfg.prompt.template, task.instruction, inst.input,
                               task.demonstrations, cfg.prompt.demonstrations)
        n_tokens = len(lm.tokenizer(prompt).input_ids)
        say(f"--- {task.task_id} ({n_tokens} tokens; reference output {inst.outputs[0]!r})")
        say(prompt)

    s = cfg.scoring
    say(f"[4/6] scoring {len(pool.tasks)} tasks (n={s.instances}, k={s.perturbations}, drop rate {s.drop_rate}) "
        f"on {cfg.actors} local Ray actor(s)")
    scores = work / "scores.parquet"
    run = score_pool(str(pool_path), model_path, str(scores), s, actors=cfg.actors,
                     trust_remote_code=cfg.model.trust_remote_code)
    say(render_score_summary(run, top=cfg.show_tasks))

    from raysys.selection.run import render_selection, run_select, run_taskmap

    say(f"[5/6] selecting {cfg.select_budget} tasks with {', '.join(cfg.strategies)}; drawing the Task Map")
    # the held-out tasks evaluated after fine-tuning are never selected for training
    heldout = [t.task_id for t in pool.tasks if t.metadata.get("split") == "unseen"][: cfg.heldout_tasks]
    write_json(work / "heldout.json", heldout)
    selections = {}
    for name in cfg.strategies:
        out = work / f"selected-{name}.json"
        sel = run_select(SelectConfig(strategy=name, budget=cfg.select_budget), str(out), scores=str(scores),
                         pool=str(pool_path), exclude=[str(work / "heldout.json")])
        selections[name] = str(out)
        say(render_selection(sel, show=3) + f"\n      -> {out}")
    if len(cfg.strategies) >= 2:
        from raysys.selection import read_task_ids

        a, b = (set(read_task_ids(selections[n])) for n in cfg.strategies[:2])
        say(f"      {cfg.strategies[0]} and {cfg.strategies[1]} share {len(a & b)} of {cfg.select_budget} tasks")
    tm = run_taskmap(str(scores), str(work / "taskmap.png"), cfg.taskmap, table=str(work / "taskmap.csv"))
    say("      Task Map: " + ", ".join(f"{r['category']} {r['tasks']}" for r in tm["counts"])
        + f" -> {tm['map']}, {tm['table']}")
    result = {"summary": summary, "pool": str(pool_path), "model": model_path, "scores": str(scores),
              "selections": selections, "taskmap": tm["map"]}
    if cfg.heldout_tasks and cfg.strategies:
        result.update(_train_and_evaluate(cfg, work, pool, model_path, selections[cfg.strategies[0]], say))
    return result


def _train_and_evaluate(cfg: DemoConfig, work: Path, pool, model_path: str, selection: str, say) -> dict:
    from raysys.evaluation.evaluate import evaluate_pool, render_metrics
    from raysys.selection import read_task_ids
    from raysys.training.trainer import train_model

    heldout = read_task_ids(work / "heldout.json")
    if not heldout:
        say("[6/6] no held-out unseen-rule tasks in the pool (synth.unseen_rules=0): training skipped")
        return {}
    t = cfg.train
    say(f"[6/6] fine-tuning on the {len(read_task_ids(selection))} tasks of {Path(selection).name} with Ray Train "
        f"({t.workers} workers, {'DeepSpeed ZeRO-%d' % t.zero_stage if t.backend == 'deepspeed' else 'DDP'}, "
        f"{t.epochs} epochs), then evaluating {len(heldout)} held-out unseen-rule tasks before and after")
    tuned = work / "tuned"
    run = train_model(list(pool.tasks), read_task_ids(selection), model_path, str(tuned), t,
                      trust_remote_code=cfg.model.trust_remote_code, progress=False)
    for e in run.epochs:
        say(f"      epoch {e['epoch']}: train loss {e['train_loss']:.4f}")
    out = {}
    for name, model in (("before", model_path), ("after", str(tuned))):
        m = evaluate_pool(str(work / "pool.parquet"), model, str(work / f"heldout-{name}.json"), cfg.evaluation,
                          task_ids=heldout, actors=cfg.actors, trust_remote_code=cfg.model.trust_remote_code,
                          progress=False)
        say(f"      held-out {name} fine-tuning:\n" + "\n".join("        " + line
                                                               for line in render_metrics(m).splitlines()))
        out[name] = m
    em, rl = (out["before"]["exact_match"]["overall"], out["after"]["exact_match"]["overall"]), \
        (out["before"]["rougeL"]["overall"], out["after"]["rougeL"]["overall"])
    say(f"      held-out exact match {em[0]:.1f} -> {em[1]:.1f}, Rouge-L {rl[0]:.1f} -> {rl[1]:.1f}")
    return {"tuned": str(tuned), "heldout_before": out["before"], "heldout_after": out["after"]}
