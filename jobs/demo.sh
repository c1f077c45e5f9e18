#!/usr/bin/env bash
# Set up the environment if needed, then run the demo on the embedded default.
# Extra arguments go to `raysys demo` (e.g. synth.rules=500 work_dir=/tmp/demo).
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/setup_env.sh"
exec raysys demo "$@"
