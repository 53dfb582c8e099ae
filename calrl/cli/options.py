"""Argument types and options shared by the ``calrl`` sub-commands, and the one-line parser."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from calrl.errors import error_line
from calrl.limits import MAX_BATCH_SIZE, MAX_BINS, MAX_BOOTSTRAP, MAX_ITEMS, MAX_SEED


class OneLineArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr (exit code 2), never the usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, error_line(f"{self.prog}: error: ", message, f" (see {self.prog} --help)") + "\n")


def int_range(low: int, high: int) -> Callable[[str], int]:
    """An argument type: an integer from ``low`` to ``high`` (a one-line usage error naming the option otherwise)."""

    def parse(text: str) -> int:
        digits = text.strip().lstrip("+-")
        if not digits.isdigit() or not digits.isascii():
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
        if len(digits) > 30:  # int() of thousands of digits is slow, and refused above 4300
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, got a number of {len(digits):,} digits")
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, got {value}")
        return value

    parse.__name__ = f"integer from {low} to {high}"
    return parse


#: Seeds of every command, and the counts of items shared by several commands.
seed = int_range(0, MAX_SEED)
positive_int = int_range(1, MAX_ITEMS)
non_negative_int = int_range(0, MAX_ITEMS)
bootstrap = int_range(0, MAX_BOOTSTRAP)
batch_size = int_range(1, MAX_BATCH_SIZE)


def bins(text: str) -> int:
    """Number of equal-width bins: an integer from 1 to ``MAX_BINS``."""
    return int_range(1, MAX_BINS)(text)


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def non_empty_path(text: str) -> str:
    if text.strip() == "":
        raise argparse.ArgumentTypeError("empty path")
    return text


def add_overwrite(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help=f"replace {what} (refused by default; an input is never overwritten)")
