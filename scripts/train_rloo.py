"""Train with the rloo recipe runner; the same as `calrl train-rloo`, for `accelerate launch`.

    accelerate launch --config_file configs/accelerate/NAME.yaml scripts/train_rloo.py --config RECIPE.yaml [section.key=value ...]
"""

import sys

from calrl.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["train-rloo", *sys.argv[1:]]))
