"""The ``calrl`` command: one sub-command per module in ``calrl.cli``; errors become one line."""

from __future__ import annotations

import argparse
import importlib
import sys

from calrl.cli.options import OneLineArgumentParser
from calrl.errors import CalrlError

# sub-command name -> module in calrl.cli exposing add_parser(subparsers) and run(args) -> int
COMMANDS: dict[str, str] = {
    "eval": "calrl.cli.eval_cmd",
    "compare": "calrl.cli.compare_cmd",
    "recalibrate": "calrl.cli.recalibrate_cmd",
    "train-rm": "calrl.cli.train_cmd",
    "train-ppo": "calrl.cli.train_cmd",
    "train-grpo": "calrl.cli.train_cmd",
    "train-rloo": "calrl.cli.train_cmd",
    "demo": "calrl.cli.demo_cmd",
}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="calrl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    registered: set[str] = set()
    for module_name in COMMANDS.values():
        if module_name in registered:
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # this command is not built yet
                continue
            raise
        module.add_parser(sub)
        registered.add(module_name)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CalrlError as exc:
        print(f"calrl {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"calrl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
