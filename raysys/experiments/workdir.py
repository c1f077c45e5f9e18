"""An experiment's work dir holds one experiment: its settings are saved on the first run
and a rerun with other settings is refused (naming the fields), since it would mix
results that cannot be compared. work_dir itself may differ (a moved folder)."""
from __future__ import annotations

from pathlib import Path

from raysys.config import to_dict
from raysys.errors import RaysysError
from raysys.io import read_json, write_json


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def claim_work_dir(cfg, name: str) -> Path:
    """The resolved work dir (created), after checking it holds no other settings."""
    work = Path(cfg.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    saved = work / f"{name}.json"
    new = _flat(to_dict(cfg))
    if saved.is_file():
        old = _flat(read_json(saved))
        diff = sorted(k for k in set(old) | set(new) if k != "work_dir" and old.get(k) != new.get(k))
        if diff:
            raise RaysysError(f"{work} holds a {name} experiment with other settings ({', '.join(diff[:8])}); "
                              "use another work_dir, or remove that folder")
    write_json(saved, to_dict(cfg))
    return work
