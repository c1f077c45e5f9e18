"""Ray job entrypoint: an experiment (`raysys experiment diversity|novelty|similarity|strategies`), e.g.
    ray job submit --working-dir . -- python jobs/experiment.py diversity --config jobs/configs/diversity_paper.yaml
Runs the working dir's raysys, so a cluster needs its dependencies, not raysys itself."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from raysys.cli.main import main

sys.exit(main(["experiment", *sys.argv[1:]]))
