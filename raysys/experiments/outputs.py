"""What an experiment leaves in its work dir, the same way for each: STEM.csv (one row
per run, the experiment's columns), STEM.png (its figure), STEM.json (the model, the
summary and every row), and the dict its CLI verb prints from."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from raysys.io import write_json, write_rows_csv


def write_outputs(work: Path, stem: str, name: str, rows: list[dict], columns: Sequence[str],
                  summary: dict[str, Any], text: str, draw: Callable[[Path], None]) -> dict[str, Any]:
    """The three files (written atomically) and {**summary, rows, text, csv, figure, json}."""
    paths = {"csv": work / f"{stem}.csv", "figure": work / f"{stem}.png", "json": work / f"{stem}.json"}
    write_rows_csv(paths["csv"], rows, columns)
    draw(paths["figure"])
    write_json(paths["json"], {"model": name, **summary, "rows": rows})
    return {**summary, "rows": rows, "text": text, **{k: str(v) for k, v in paths.items()}}
