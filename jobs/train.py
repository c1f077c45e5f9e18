"""Ray job entrypoint: fine-tune on selected tasks (`raysys train`), e.g.
    ray job submit --working-dir . -- python jobs/train.py --config jobs/configs/train_alpaca_llama7b.yaml \
        --pool /shared/alpaca.json --tasks /shared/selected.json --model /shared/llama-7b --out /shared/tuned"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the working dir's raysys
from raysys.cli.main import main  # noqa: E402

sys.exit(main(["train", *sys.argv[1:]]))
