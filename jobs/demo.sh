#!/usr/bin/env bash
# Set up the environment if needed, then run the demo on the embedded default.
# Extra arguments go to `raysys demo` (e.g. budget=8000 seed=1 work_dir=/tmp/demo; README "Two commands").
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/setup_env.sh"
exec raysys demo "$@"
