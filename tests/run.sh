#!/usr/bin/env bash
# Set up the environment if needed, then run the test suite (default: fast tests only;
# pass pytest arguments through, e.g. `bash tests/run.sh -m slow`, or `-n 0` for one
# process). The tests run in RAYSYS_TEST_WORKERS processes (pytest-xdist, default 3, a
# test file per process): most of a test's time is spent waiting on Ray and
# processes starting, so three share two cores.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/jobs/setup_env.sh"
cd "$root"
exec python -m pytest -n "${RAYSYS_TEST_WORKERS:-3}" --dist loadfile "$@"
