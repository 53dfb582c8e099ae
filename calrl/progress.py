"""Progress of calrl's long stages: tqdm's bar in a terminal, whole lines in a log.

In a terminal :func:`progress` is tqdm's bar (``tqdm.auto``: a widget in a notebook). When the output is not a
terminal (a redirected log, a CI job, ``calrl demo``'s stage logs), tqdm's redraws (a carriage return, then the
bar again, cleared with spaces) fill a file with overlong lines that show as blank ones; there each bar is
written as whole lines instead (tqdm still formats them): one when it starts, then at most one every
``LOG_INTERVAL`` seconds, and its final state. tqdm's own choice for a non-terminal, ``disable=None``, would
show nothing at all.

:func:`quiet_library_bars` turns off the short bars of transformers, the Hugging Face hub and datasets
(loading weights, writing shards, mapping a dataset) in a log, through their public switches; the Trainer's
training bar is written as lines by :class:`calrl.callbacks.runs.LineProgressCallback`.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterable
from typing import IO, Any

from tqdm import tqdm

LOG_INTERVAL = 15.0  # seconds between two progress lines of one bar in a log
# what tqdm writes between two states of a bar: carriage returns, newlines, cursor moves
_REDRAW = re.compile(r"[\r\n]|\x1b\[[0-9;]*[A-Za-z]")


def process_rank() -> int:
    """This process's rank under ``accelerate launch`` / ``torchrun`` (``RANK``; 0 when not launched so)."""
    return int(os.environ.get("RANK", "0") or 0)


def is_main_process() -> bool:
    """Whether this process is rank 0 (or not launched by ``accelerate launch`` / ``torchrun``): the one that
    prints notices, estimates and summaries once."""
    return process_rank() == 0


def notice(message: str) -> None:
    """One line on stderr from the main process only (``calrl: <message>``)."""
    if is_main_process():
        print(f"calrl: {message}", file=sys.stderr, flush=True)


def is_terminal(stream: Any = None) -> bool:
    """Whether ``stream`` (default: stderr, where progress goes) is a terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class LineWriter:
    """A file for tqdm that writes whole lines to ``stream``: a redraw replaces the pending state, which is
    written when tqdm ends the bar (a newline) or when ``interval`` seconds have passed since the last line."""

    def __init__(self, stream: IO[str], interval: float = LOG_INTERVAL) -> None:
        self.stream, self.interval = stream, interval
        self._pending = ""
        self._last = -float("inf")

    def write(self, text: str) -> None:
        for part in _REDRAW.split(text):
            if part.strip():
                self._pending = part.strip()
        now = time.monotonic()
        if "\n" in text or now - self._last >= self.interval:
            self._emit(now)

    def _emit(self, now: float) -> None:
        if self._pending:
            self.stream.write(self._pending + "\n")
            self.stream.flush()
            self._pending, self._last = "", now

    def flush(self) -> None:
        self.stream.flush()


def progress(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str | None = None,
             unit: str = "it", disable: bool = False, leave: bool = True, file: IO[str] | None = None) -> Any:
    """A tqdm bar for a stage (a terminal), or the same progress as whole lines (a log; see the module doc)."""
    stream = sys.stderr if file is None else file
    if disable or is_terminal(stream):
        from tqdm.auto import tqdm as auto_tqdm  # 20 ms: not for calrl --help (calrl.progress is on its path)

        return auto_tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, file=file, disable=disable,
                         dynamic_ncols=True)
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=True, file=LineWriter(stream),
                mininterval=LOG_INTERVAL, ascii=True)


def quiet_library_bars() -> None:
    """In a log (stderr not a terminal), turn off the short bars of transformers, the hub and datasets."""
    if is_terminal():
        return
    # transformers (0.8 s): calrl.progress is on calrl --help's path (tests/test_cli_startup.py)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # transformers' and the hub's
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()
