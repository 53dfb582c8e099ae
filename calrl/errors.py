"""Errors that the CLI turns into a one-line message and a non-zero exit code."""

from __future__ import annotations


class CalrlError(Exception):
    """Base class for errors reported to the user as one line (never a traceback)."""

    exit_code: int = 2


class InputError(CalrlError):
    """Bad user input: a file, a line, a field or a config key that is wrong.

    The message should name the problem precisely, e.g. ``preds.jsonl:12: field 'confidence': 1.7 is
    outside [0, 1]``.
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        what = f"field '{field}': " if field is not None else ""
        super().__init__(f"{where}{what}{message}")
        self.path, self.line, self.field = path, line, field


class ConfigError(InputError):
    """An invalid training or evaluation config (unknown key, wrong type, missing field)."""


class TrainingFault(CalrlError):
    """A fault detected during training (e.g. a NaN reward); names the step and the sample."""

    exit_code = 3
