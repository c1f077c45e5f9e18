"""Shared fixtures: the real data in ../shared/data and a built-in tiny model folder."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _shared_data() -> Path:
    return Path(os.environ.get("RAYSYS_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout; skipped locally when absent, an error in CI."""
    path = _shared_data()
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"shared data not found at {path} (set RAYSYS_SHARED_DATA)")
        pytest.skip(f"shared data not found at {path}")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from raysys.models import init_tiny

    return init_tiny(tmp_path_factory.mktemp("models") / "tiny")


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`raysys ARGS` as a real subprocess (exit code, stdout, stderr)."""
    return subprocess.run(
        [sys.executable, "-m", "raysys.cli", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, timeout=300,
    )
