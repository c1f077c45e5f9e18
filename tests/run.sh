#!/usr/bin/env bash
# Set up the environment if needed, then run the test suite (default: fast tests only;
# pass pytest arguments through, e.g. `bash tests/run.sh -m slow`, or `-n 0` for one
# process). The tests run in RAYSYS_TEST_WORKERS processes (pytest-xdist, default 2, a
# test file per process, the longest files first: tests/conftest.py LONGEST_FIRST). The
# suite is bound by its CPU work; a third process only added to it (docs/testing.md).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/jobs/setup_env.sh"
cd "$root"
exec python -m pytest -n "${RAYSYS_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@"
