#!/usr/bin/env bash
# Set up the environment if needed, then run the test suite (default: fast tests only;
# pass pytest arguments through, e.g. `bash tests/run.sh -m slow`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/jobs/setup_env.sh"
cd "$root"
exec python -m pytest "$@"
