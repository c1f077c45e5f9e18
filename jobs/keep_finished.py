"""The small files a long run's finished parts need to be resumed on another machine: a
loop's finished seeds (every strategy's every round) or a strategy comparison's finished
rows (each base or seed/arm folder with its record.json), without the models, training
checkpoints, score parts or Tune folders. Prints one path per line, e.g. to keep them in git
between sessions that do not share a disk:

    git add -f $(python jobs/keep_finished.py runs/loop_smollm2_tokens)

Kept per finished folder: every file but those under model/ (except its training report,
raysys_train.json, which the results' token counts read), model.train/, *.parts/ and tune*/;
and the work dir's saved settings (loop.json, strategies-config.json). A resumed run reads
a finished seed or row back from these and redoes nothing of it (raysys loop --seeds-now;
the strategy comparison's record.json).
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SETTINGS = ("loop.json", "strategies-config.json")
SKIP_DIRS = ("model.train", "tune")


def finished_folders(work: Path) -> list[Path]:
    """The folders of the finished parts of the run in `work` (see the module docstring)."""
    if (work / "loop.json").is_file():
        from raysys.loop.driver import finished_seeds, saved_config
        from raysys.loop.rounds import round_dir, seed_dir

        cfg = saved_config(str(work))
        return [d for s in finished_seeds(cfg, work) for d in [seed_dir(work, s)] + [
            round_dir(work, a, s, r) for a in cfg.strategies for r in range(1, cfg.rounds)]]
    if (work / "strategies-config.json").is_file():
        return sorted(p.parent for p in work.glob("*/record.json")) + sorted(
            p.parent for p in work.glob("seed-*/*/record.json"))
    raise SystemExit(f"{work}: neither a loop (loop.json) nor a strategy comparison (strategies-config.json)")


def kept(folder: Path) -> list[Path]:
    out = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).parts
        if not p.is_file() or any(x.endswith(".parts") or x.startswith(SKIP_DIRS) for x in rel[:-1]):
            continue
        if rel[0] == "model" and p.name != "raysys_train.json":
            continue
        out.append(p)
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python jobs/keep_finished.py WORK_DIR")
    work = Path(args[0])
    paths = [work / s for s in SETTINGS if (work / s).is_file()]
    for folder in finished_folders(work):
        paths += kept(folder)
    print("\n".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
