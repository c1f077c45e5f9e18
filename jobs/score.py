"""Ray job entrypoint: score a pool (`raysys score`), e.g.
    ray job submit --working-dir . -- python jobs/score.py --config jobs/configs/score_niv2.yaml \
        --pool /shared/niv2 --model /shared/models/t5-large --out /shared/scores.parquet --actors 8"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the working dir's raysys
from raysys.cli.main import main  # noqa: E402

sys.exit(main(["score", *sys.argv[1:]]))
