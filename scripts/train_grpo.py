"""Train with the grpo recipe runner; the same as `calrl train-grpo`, for `accelerate launch`.

    accelerate launch --config_file configs/accelerate/NAME.yaml scripts/train_grpo.py --config RECIPE.yaml [section.key=value ...]
"""

import sys

from calrl.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["train-grpo", *sys.argv[1:]]))
