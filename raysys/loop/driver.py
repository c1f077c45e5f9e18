"""The active loop on Ray Tune (Ray plumbing; the rounds are in core.py).

`run_loop` prepares the work dir (the pool and test pool as canonical Parquet, the
built-in tiny model when no model is given, the config in loop.json), checks that the
cluster can host the trials before launching anything, runs round 0 once per seed (the
shared base), then one Tune trial per (strategy, seed) that reports every round with a
checkpoint of its loop state, and finally writes the results table and plots.

Resume: the experiment lives in <work_dir>/tune. Rerunning with the same config (or
`raysys loop --resume --work-dir DIR`, which reads DIR/loop.json) restores it with
Tuner.restore: finished trials stay finished, the others continue after their last
reported round, and a round that was under way reuses its finished parts.
"""
from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from raysys.config import LoopConfig
from raysys.config.mapping import from_mapping
from raysys.console import relay, to_log
from raysys.errors import RaysysError
from raysys.io import read_json, write_json
from raysys.loop.plan import TrialPlan, Universe, draw_sets, plan_trials
from raysys.loop.rounds import RECORD, STATE, LoopState, base_round, latest_state, run_trial, seed_dir, start_state
from raysys.models import check_model_path
from raysys.stages import RayStages, Stages, StageSettings

CONFIG = "loop.json"


@dataclass(frozen=True)
class Prepared:
    work: Path
    pool: str  # canonical Parquet
    test_pool: str
    model: str
    universe: Universe


def saved_config(work_dir: str) -> LoopConfig:
    path = Path(work_dir) / CONFIG
    if not path.is_file():
        raise RaysysError(f"no loop to resume in {work_dir} ({CONFIG} not found)")
    return from_mapping(LoopConfig, read_json(path), str(path))


def prepare(cfg: LoopConfig, say: Callable[[str], None] = print) -> Prepared:
    from raysys.pools.load import load_pool
    from raysys.pools.subset import pool_copy
    from raysys.runs.workdir import claim_work_dir, work_model, work_pool
    from raysys.selection.arms import arm
    from raysys.selection.strategies import check_strategies

    check_strategies(*(arm(a)[0] for a in cfg.strategies), targets=cfg.targets)
    work = claim_work_dir(cfg, Path(CONFIG).stem, hint="use another work_dir, or `raysys loop --resume "
                          f"--work-dir {Path(cfg.work_dir).resolve()}` to continue it")
    pool = work_pool(work, cfg.pool, cfg.synth, say)
    tasks = load_pool(pool).tasks
    test_pool, test_tasks = pool, tasks
    if cfg.test_pool:
        test_pool = Path(pool_copy(cfg.test_pool, work / "test.parquet"))
        test_tasks = load_pool(test_pool).tasks
    test_ids = [t.task_id for t in test_tasks if not cfg.test_splits or t.metadata.get("split") in cfg.test_splits]
    pool_ids = [t.task_id for t in tasks if not cfg.pool_splits or t.metadata.get("split") in cfg.pool_splits]
    if cfg.test_pool and not test_ids:
        raise RaysysError(f"{cfg.test_pool}: no task in the splits {list(cfg.test_splits)}; set test_splits=[] to "
                          f"test on all of its {len(test_tasks)} tasks")
    if not test_ids:
        say(f"no test tasks (no task of the pool is in the splits {list(cfg.test_splits)}): the loop evaluates "
            "on the validation tasks only")
    if cfg.test_tasks:
        test_ids = test_ids[: cfg.test_tasks]
    model = work_model(work, cfg.model, cfg.tiny, say)
    universe = Universe(tuple(pool_ids), tuple(test_ids))
    if cfg.select.budget_unit != "tasks":  # the schedule counts training examples or tokens
        from raysys.selection.run import training_costs

        check_model_path(model)
        trainable = set(universe.trainable())
        per_task = training_costs([t for t in tasks if t.task_id in trainable], model, cfg.train,
                                  cfg.model.trust_remote_code)
        universe = replace(universe, costs={t: c[f"train_{cfg.select.budget_unit}"] for t, c in per_task.items()})
    return Prepared(work, str(pool), str(test_pool), model, universe)


def _limit_ray_data(plan: TrialPlan) -> None:
    """Keep Ray Data inside this trial's share of the cluster."""
    from ray.data import DataContext, ExecutionResources

    ctx = DataContext.get_current()
    ctx.execution_options.resource_limits = ExecutionResources(cpu=plan.cpus_per_trial,
                                                               gpu=plan.gpus_per_trial or None)


def _trial(config: dict[str, Any], **kwargs: Any) -> None:
    """One Tune trial, its stages on one actor pool (raysys.cluster.keep_actors)."""
    from raysys.cluster import keep_actors

    with keep_actors():
        _run_trial(config, **kwargs)


def _run_trial(config: dict[str, Any], *, cfg: LoopConfig, stages: Stages, prep: Prepared, plan: TrialPlan) -> None:
    """One Tune trial: a strategy on a seed, from its checkpoint or its seed's round 0."""
    from ray import tune

    from raysys.cluster import ray_init

    ray_init()  # quiet Ray Data in this process too
    _limit_ray_data(plan)
    strategy, seed = config["strategy"], config["seed"]
    state, fresh = None, False
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = LoopState.from_json(read_json(Path(d) / STATE))
    on_disk = latest_state(prep.work, strategy, seed, cfg.rounds)
    if on_disk and (state is None or on_disk.round > state.round):
        state = on_disk
    if state is None:
        state, fresh = start_state(strategy, read_json(seed_dir(prep.work, seed) / RECORD)), True

    def report(record: dict[str, Any], state: LoopState) -> None:
        metrics = {k: v for k, v in record.items() if isinstance(v, (int, float, str)) and k != "model"}
        with tempfile.TemporaryDirectory(prefix="raysys-loop-") as d:
            write_json(Path(d) / STATE, state.to_json())
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

    sets = draw_sets(prep.universe, seed, cfg)
    run_trial(cfg, state, prep.model, sets, prep.universe, stages, prep.work, report, fresh,
              say=relay)


def run_loop(cfg: LoopConfig, stages: Stages | None = None, *, num_cpus: int | None = None,
             say: Callable[[str], None] = print, seeds_now: Sequence[int] | None = None) -> dict[str, Any]:
    """The whole loop (or the rest of it); see the module docstring. Returns the results
    (rows and output paths, raysys.loop.results). `seeds_now`: run only these of the
    config's seeds now (a piece of a long run: `raysys loop --seeds-now`); the results
    then cover every seed whose trials have all finished, in this run or an earlier one."""
    import ray
    from ray import tune

    from raysys.cluster import ray_init, release_actors
    from raysys.loop.results import write_results

    now = _seeds_now(cfg, seeds_now)
    full, cfg = cfg, replace(cfg, seeds=now)  # the work dir holds the whole protocol; this run, its piece
    prep = prepare(full, say)
    ray_init(num_cpus, training=True)
    plan = plan_trials(ray.cluster_resources(), cfg)
    if stages is None:
        check_model_path(prep.model)  # before any trial loads it
        stages = RayStages(StageSettings.of(cfg), prep.pool, prep.test_pool, plan.cpus_per_trial)
    say(f"loop: {len(cfg.strategies)} strategies x {len(cfg.seeds)} seeds = {plan.trials} trials, {plan.concurrent} "
        f"at once ({plan.cpus_per_trial:g} CPUs{f', {plan.gpus_per_trial} GPUs' if plan.gpus_per_trial else ''} "
        f"each); {cfg.rounds} rounds: {' -> '.join(f'{n:,}' for n in cfg.schedule)} {cfg.select.budget_unit}; "
        f"{len(prep.universe.test_ids)} test tasks; work dir {prep.work}")
    base_stages = replace(stages, cpus=None) if isinstance(stages, RayStages) else stages
    for seed in cfg.seeds:  # round 0 once per seed, shared by all its strategies
        base_round(cfg, prep.model, draw_sets(prep.universe, seed, cfg), prep.universe, base_stages, prep.work, say)

    # A trial holds a token of memory, no CPU: its stages ask for their own resources (Ray
    # Data's actors and tasks and Ray Train's workers are scheduled outside the trial's
    # placement group), sized from the trial's share of the cluster.
    trainable = tune.with_resources(tune.with_parameters(_trial, cfg=cfg, stages=stages, prep=prep, plan=plan),
                                    {"cpu": 0, "memory": 2**20})
    path = prep.work / ("tune" if cfg.seeds == full.seeds else "tune-seeds-" + "-".join(map(str, cfg.seeds)))
    if tune.Tuner.can_restore(str(path)):
        say(f"resuming the Tune experiment in {path}")
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"strategy": tune.grid_search(list(cfg.strategies)), "seed": tune.grid_search(list(cfg.seeds))},
            tune_config=tune.TuneConfig(max_concurrent_trials=plan.concurrent,
                                        trial_dirname_creator=lambda t: f"{t.config['strategy']}-seed{t.config['seed']}"),
            run_config=tune.RunConfig(name="tune", storage_path=str(prep.work), verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=cfg.max_failures)),
        )
    release_actors()  # the seeds' base rounds' actor pool: the trials need its CPUs
    with to_log():  # Tune's own prints (its experiment box, where results go)
        grid = tuner.fit()
    failed = [r for r in grid if r.error]
    if failed:
        lines = [f"  {r.config.get('strategy')} seed {r.config.get('seed')}: {str(r.error).strip().splitlines()[-1]}"
                 for r in failed]
        raise RaysysError(f"{len(failed)} of {len(grid)} trial(s) failed:\n" + "\n".join(lines)
                          + f"\nfinished rounds are kept; continue with: raysys loop --resume --work-dir {cfg.work_dir}")
    print(f"loop finished: {len(grid)} trials", file=sys.stderr)
    done = finished_seeds(full, prep.work)
    if len(done) < len(full.seeds):
        say(f"results over {len(done)} of the config's {len(full.seeds)} seeds (seeds {', '.join(map(str, done))}); "
            "run the others with --seeds-now")
    return write_results(full, prep.work, done)


def _seeds_now(cfg: LoopConfig, seeds_now: Sequence[int] | None) -> tuple[int, ...]:
    """The seeds to run now: all of the config's, or `seeds_now`, each one of them."""
    if seeds_now is None:
        return tuple(cfg.seeds)
    now = tuple(dict.fromkeys(int(s) for s in seeds_now))
    other = [s for s in now if s not in cfg.seeds]
    if not now or other:
        raise RaysysError(f"--seeds-now must name seeds of the config ({', '.join(map(str, cfg.seeds))})"
                          + (f"; {', '.join(map(str, other))} is not one" if other else ""))
    return now


def finished_seeds(cfg: LoopConfig, work: Path) -> tuple[int, ...]:
    """The config's seeds whose every strategy has recorded every round."""
    from raysys.loop.rounds import round_dir

    return tuple(s for s in cfg.seeds if (seed_dir(work, s) / RECORD).is_file() and all(
        (round_dir(work, a, s, r) / RECORD).is_file() for a in cfg.strategies for r in range(1, cfg.rounds)))
