"""The ``calrl`` command: one sub-command per module in ``calrl.cli``; errors become one line.

Every command's help shows each option's default (:class:`HelpFormatter`). A command module may define
``split_flags(argv) -> (argv, flags)`` to take free-form ``--key value`` flags (``calrl train-*``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

from calrl.cli.options import OneLineArgumentParser
from calrl.errors import CalrlError, error_line
from calrl.progress import process_rank

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
    "data": "calrl.cli.data_cmd",
    "convert-rm": "calrl.cli.convert_cmd",
}


DESCRIPTION = """\
Calibration-aware post-training of LLMs on Hugging Face TRL: measure whether a model's stated
confidence matches how often it is right, gate releases on it, fix it after the fact, and train
with it in the loop."""
EPILOG = """\
commands in short:
  calrl eval --predictions answers.jsonl --out runs/eval      metrics, reliability diagram, report
  calrl eval --model MODEL --dataset gsm8k --out runs/eval    generate, then the same
  calrl compare --baseline runs/a --candidate runs/b --out runs/gate    release gate (exit 1 blocks)
  calrl train-ppo --config configs/ppo_c_threshold.yaml --learning_rate 1e-6
Run 'calrl COMMAND --help' for a command's options. Exit codes: 0 done, 1 gate blocked, 2 bad input,
3 training fault."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions kept as written (docstring markup such as ``x`` shown plain), defaults in every help."""

    def _format_text(self, text: str) -> str:
        return super()._format_text(text.replace("``", ""))

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("%(default)" in text or "(default" in text or default is None or default is False
                or default == argparse.SUPPRESS or not action.option_strings or default == []):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


class CalrlParser(OneLineArgumentParser):
    """The parser of ``calrl`` and of every sub-command (argparse builds sub-parsers of the parent's class):
    one-line usage errors and help that shows each option's default."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["formatter_class"] = HelpFormatter
        super().__init__(*args, **kwargs)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``calrl`` parser; with a known ``command``, only that command's module is imported (start-up
    time: ``calrl eval ...`` never imports the training commands), otherwise every command's."""
    parser = CalrlParser(prog="calrl", description=DESCRIPTION, epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    wanted = [COMMANDS[command]] if command in COMMANDS else COMMANDS.values()
    registered: set[str] = set()
    for module_name in wanted:
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
    try:  # Ctrl-C while the command modules import (seconds: torch) is an interruption too, not a traceback
        args = _parse(argv)
    except KeyboardInterrupt:
        print("calrl: interrupted", file=sys.stderr)
        return 130
    try:
        return int(args.func(args) or 0)
    except CalrlError as exc:
        return report(args.command, f"error: {exc}", exc.exit_code)
    except KeyboardInterrupt:
        return report(args.command, "interrupted", 130)


# seconds a process other than the main one waits before reporting an error that every process meets alike
REPORT_GRACE_S = 20.0


def report(command: str, message: str, code: int) -> int:
    """Print the one error line of a command and return its exit code.

    In a launch of several processes (``WORLD_SIZE`` > 1) the main process (``RANK`` 0) prints it. Bad input
    (2) and an interruption (130) are met by every process alike, so another process waits up to
    ``REPORT_GRACE_S`` seconds first: when the main process ends with the same error, the launcher stops this
    one and the error is printed once. Past the wait (an error of this process only) it prints it, naming the
    process; so does a process failing with a training fault (3).
    """
    rank, world = process_rank(), int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1 and rank != 0:
        if code in (2, 130):
            time.sleep(REPORT_GRACE_S)
        command = f"{command} (process {rank} of {world})"
    print(error_line(f"calrl {command}: ", message), file=sys.stderr, flush=True)  # one line, long values cut
    return code


def _parse(argv: list[str] | None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv[0] if argv else None)
    for arg in argv:  # bytes that are not UTF-8 reach Python as lone surrogates: no output could be written
        if any("\ud800" <= c <= "\udfff" for c in arg):
            parser.error(f"argument {arg!r} is not valid text (bytes that are not UTF-8); rename the file or "
                         "fix the value")
    flags: list[tuple[str, str]] = []
    if argv and argv[0] in COMMANDS:
        split = getattr(importlib.import_module(COMMANDS[argv[0]]), "split_flags", None)
        if split is not None:
            own, flags = split(argv[1:])
            argv = [argv[0], *own]
    args = parser.parse_args(argv)
    if flags:
        args.flags = flags
    return args


if __name__ == "__main__":
    sys.exit(main())
