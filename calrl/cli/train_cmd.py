"""``calrl train-rm | train-ppo | train-grpo | train-rloo --config RECIPE.yaml [section.key=value ...]``.

Validates the recipe (every key, then the dataset's columns) before any model loads, trains, and saves
the model with a model card. The same entry points run under ``accelerate launch`` through
``scripts/train_*.py``. Exit codes: 0 done, 2 bad recipe or input (one line naming file:line and key),
3 training fault (a NaN or infinite reward, with the step and the sample).
"""

from __future__ import annotations

import argparse
import os

COMMAND_METHODS = {"train-rm": "rm", "train-ppo": "ppo", "train-grpo": "grpo", "train-rloo": "rloo"}
HELP = {
    "rm": "train a reward model (ordinary, or calibrated for PPO-M)",
    "ppo": "train a policy with PPO, PPO-M or PPO-C (the recipe decides)",
    "grpo": "train a policy with GRPO and scoring-rule rewards",
    "rloo": "train a policy with RLOO and scoring-rule rewards",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, metavar="FILE", help="YAML recipe (see configs/)")
    p.add_argument("--resume", metavar="PATH|latest", default=None,
                   help="resume from a checkpoint folder, or the newest checkpoint-* in the output folder")
    p.add_argument("--dry-run", action="store_true",
                   help="validate the recipe and the dataset's columns, load no model, and exit")
    p.add_argument("overrides", nargs="*", metavar="section.key=value",
                   help="override recipe keys, e.g. training.learning_rate=1e-6 wandb.run_name=try2")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    for command, method in COMMAND_METHODS.items():
        p = subparsers.add_parser(command, help=HELP[method], description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        add_arguments(p)
        p.set_defaults(func=run, method=method)


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from calrl.train.recipe import load_recipe

    recipe = load_recipe(args.config, args.overrides, method=args.method, resume=args.resume,
                         check_hardware=not args.dry_run)
    if args.dry_run:
        return _dry_run(recipe)
    from calrl.train.runner import run_recipe

    result = run_recipe(recipe)
    if int(os.environ.get("RANK", "0")) == 0:
        print(result.summary())
    return 0


def _dry_run(recipe) -> int:
    """Check the recipe and the data as the runner would, without loading models."""
    from calrl.train.data import load_heldout_items, load_training_data

    data = load_training_data(recipe)
    items = load_heldout_items(recipe) if recipe.method != "rm" else None
    print(f"{recipe.path}: ok ({recipe.method}, {len(data.train)} training rows"
          + (f", {len(data.eval)} held-out rows" if data.eval is not None else "")
          + (f", {len(items)} eval items" if items else "") + ")")
    return 0
