"""What issue 16's experiments cost: per experiment and stage, the stage runs, the tokens
they processed, the wall time, and the FLOPs those tokens mean for the model, read from
the committed results (docs/results/active_loop.csv, novelty.csv, similarity.csv, each
written by its raysys command). Writes docs/results/cost.csv and prints the table; its
`experiment_stage_seconds` is the whole experiment's stage time (repeated on each of the
experiment's rows: the loop and novelty record one time per run, not per stage), and the
rate printed per experiment is its FLOPs over that time (stages only: similarity's encoder
alignment is not a stage).

    python benchmarks/findings_cost.py [--results docs/results] [--model smollm2-135m-instruct]

Tokens come from the stages' own counts (raysys.costs). A stage run written before raysys
counted tokens has none: its tokens are estimated as the mean of the counted runs of the
same stage (and strategy, for the loop's scoring, whose size differs by strategy), and
the `counted` column says how many runs were counted. FLOPs: 2 x parameters per token
read in a forward pass (scoring, evaluation), 6 x parameters per trained token (forward
and backward; with LoRA the frozen weights get no weight gradients, so this is an upper
bound of about 1.5x); attention's own FLOPs are left out (sequences here are short).
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from raysys.costs import FORWARD_FLOPS_PER_PARAMETER as FORWARD  # noqa: E402  (the one home of the rule)
from raysys.costs import TRAIN_FLOPS_PER_PARAMETER as TRAIN  # noqa: E402

STAGES = {"score_tokens": ("scoring", FORWARD), "train_tokens": ("training", TRAIN),
          "eval_tokens": ("evaluation", FORWARD)}


def parameters(model: str) -> int:
    """The model's parameter count, from its imported folder (no weights loaded)."""
    sys.path.insert(0, str(ROOT))
    from raysys.models.gguf import model_folder
    from raysys.training.memory import count_parameters_from_config

    return count_parameters_from_config(model_folder(model)[0])[0]


def stage_rows(experiment: str, runs: pd.DataFrame, column: str, group: str | None = None) -> list[dict]:
    """One row per stage: runs, counted runs, tokens (missing runs estimated from the
    counted ones of the same `group` value)."""
    stage, per = STAGES[column]
    tokens, counted = 0.0, 0
    for _, part in (runs.groupby(group) if group else [(None, runs)]):
        known = part[column].dropna()
        counted += len(known)
        fill = known.mean() if len(known) else math.nan
        tokens += known.sum() + fill * (len(part) - len(known))
    return [{"experiment": experiment, "stage": stage, "runs": len(runs), "counted": counted,
             "tokens": int(round(tokens)), "flops_per_token_per_parameter": per}]


def loop_rows(path: Path) -> tuple[list[dict], float]:
    d = pd.read_csv(path)
    unique = pd.concat([d[d["round"] == 0].drop_duplicates("seed"), d[d["round"] > 0]])  # round 0 is shared
    rows = []
    scored = unique[unique["round"] > 0]
    rows += stage_rows("active_loop", scored, "score_tokens", "strategy")
    rows += stage_rows("active_loop", unique, "train_tokens")
    rows += stage_rows("active_loop", unique, "eval_tokens")
    return rows, float(unique["seconds"].sum())


def novelty_rows(path: Path) -> tuple[list[dict], float]:
    d = pd.read_csv(path)
    scoring = stage_rows("novelty", d, "score_tokens")
    scoring[0]["runs"] = scoring[0]["counted"] = 2 * len(d)  # M0 and M1 per draw
    return scoring + stage_rows("novelty", d, "train_tokens"), float(d["seconds"].sum())


def similarity_rows(path: Path) -> tuple[list[dict], float]:
    d = pd.read_csv(path)
    trained = d[d["strategy"] != "base"]
    seconds = d[["select_seconds", "train_seconds", "eval_seconds"]].fillna(0).to_numpy().sum()
    return stage_rows("similarity", trained, "train_tokens") + stage_rows("similarity", d, "eval_tokens"), seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=str(ROOT / "docs" / "results"))
    ap.add_argument("--model", default="smollm2-135m-instruct")
    args = ap.parse_args(argv)
    results = Path(args.results)
    n = parameters(args.model)
    rows, walls = [], {}
    for name, read in (("active_loop", loop_rows), ("novelty", novelty_rows), ("similarity", similarity_rows)):
        if (results / f"{name}.csv").is_file():
            r, walls[name] = read(results / f"{name}.csv")
            rows += r
    table = pd.DataFrame(rows)
    table["flops"] = table["tokens"] * table.pop("flops_per_token_per_parameter") * n
    # the experiment's stages together (every stage of every run), on each of its rows: the
    # loop and novelty record one time per run, not one per stage
    table["experiment_stage_seconds"] = table["experiment"].map(walls)
    table.to_csv(results / "cost.csv", index=False)
    print(f"model parameters: {n:,}")
    print(table.to_string(index=False, formatters={"flops": "{:.2e}".format}))
    for name, sec in walls.items():
        t = table[table["experiment"] == name]
        print(f"{name}: {sec / 60:.1f} min of stages, {t['tokens'].sum():,} tokens, {t['flops'].sum():.2e} FLOPs "
              f"({t['flops'].sum() / sec / 1e9:.0f} GFLOP/s over the stages' wall time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
