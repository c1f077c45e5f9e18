"""Ray job entrypoint: the active loop (`raysys loop`), e.g.
    ray job submit --working-dir . -- python jobs/loop.py --config jobs/configs/loop_niv2.yaml
Runs the working dir's raysys, so a cluster needs its dependencies, not raysys itself."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from raysys.cli.main import main  # noqa: E402

sys.exit(main(["loop", *sys.argv[1:]]))
