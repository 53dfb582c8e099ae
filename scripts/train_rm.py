"""Train with the rm recipe runner; the same as `calrl train-rm`, for `accelerate launch`.

    accelerate launch --config_file configs/accelerate/NAME.yaml scripts/train_rm.py --config RECIPE.yaml [section.key=value ...]
"""

import sys

from calrl.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["train-rm", *sys.argv[1:]]))
