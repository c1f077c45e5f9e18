"""The README's demo on the embedded default (`DemoConfig`): the active loop end to end on
this machine. A synthetic rewriting pool and the built-in tiny model (with a summary of
the pool and a few formatted prompts), then the loop on local Ray: each seed's random
round 0 trained once, then one Ray Tune trial per (strategy, seed) that scores the
remaining pool, selects, fine-tunes through Ray Train and evaluates on validation and
held-out unseen-rule tasks, round after round; finally the results table, the learning
curves, the uncertainty of the selected tasks and the Task Map. Rerunning resumes the
loop where it stopped, and a finished demo only prints its results again.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

from raysys.config import DemoConfig


def run_demo(cfg: DemoConfig, say: Callable[[str], None] = print, stages=None) -> dict:
    """The demo; `stages`: the loop's collaborators (default: the real ones on Ray)."""
    from raysys.loop.driver import prepare, run_loop
    from raysys.loop.results import render
    from raysys.models import count_parameters, load_model
    from raysys.pools import load_pool
    from raysys.pools.summary import render as render_pool
    from raysys.pools.summary import summarize
    from raysys.prompts import template_for

    loop = replace(cfg.loop, work_dir=cfg.work_dir)
    prep = prepare(loop, say)
    pool = load_pool(prep.pool)
    say(f"[1/4] the pool: {prep.pool}")
    say(render_pool(summarize(pool)))

    lm = load_model(prep.model, trust_remote_code=loop.model.trust_remote_code, dtype=loop.model.dtype)
    say(f"[2/4] the model: {prep.model}: {lm.kind}, {count_parameters(lm.model):,} parameters, "
        f"vocabulary {len(lm.tokenizer)}; {cfg.show_prompts} prompt(s) as scored:")
    s, pr = loop.scoring, loop.prompt
    template = template_for(pr.template, pr.chat_body, lm.tokenizer, prep.model)
    for task in pool.tasks[: cfg.show_prompts]:
        inst = task.instances[0]
        prompt = template.text(task.instruction, inst.input, task.demonstrations, pr.demonstrations)
        say(f"--- {task.task_id} ({len(lm.tokenizer(prompt).input_ids)} tokens; reference {inst.outputs[0]!r})")
        say(prompt)

    say(f"[3/4] the active loop: {', '.join(loop.strategies)} x seeds {list(loop.seeds)}, rounds "
        f"{' -> '.join(map(str, loop.schedule))} tasks; scoring n={s.instances}, k={s.perturbations}, "
        f"drop rate {s.drop_rate}; training {loop.train.epochs} epochs with "
        f"{'DeepSpeed ZeRO-%d' % loop.train.zero_stage if loop.train.backend == 'deepspeed' else 'DDP'} "
        f"on {loop.train.workers} Ray Train workers")
    out = run_loop(loop, stages, say=say)

    say("[4/4] results (mean ± std over seeds; round 0 is each seed's shared random start):")
    say(render(out["summary"]))
    for k in ("table", "csv", "curves", "uncertainty", "taskmap"):
        if k in out:
            say(f"      {k}: {out[k]}")
    if "taskmap_counts" in out:
        say("      Task Map: " + ", ".join(f"{r['category']} {r['tasks']}" for r in out["taskmap_counts"]))
    return out
