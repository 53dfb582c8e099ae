"""Train with the ppo recipe runner; the same as `calrl train-ppo`, for `accelerate launch`.

    accelerate launch --config_file configs/accelerate/NAME.yaml scripts/train_ppo.py --config RECIPE.yaml [section.key=value ...]
"""

import sys

from calrl.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["train-ppo", *sys.argv[1:]]))
