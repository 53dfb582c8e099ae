"""Errors that the CLI turns into a one-line message and a non-zero exit code.

File-system faults (``OSError``) are translated here, in one place, by :func:`os_error_message` and
:func:`file_system_error`; :func:`reports_os_errors` wraps a command so that any ``OSError`` it lets
escape becomes a :class:`FileSystemError` (one line naming the path, exit code 2).
"""

from __future__ import annotations

import difflib
import errno
import functools
import re
from collections.abc import Callable
from typing import Any, TypeVar

#: Longest error line printed (characters, the ``calrl CMD: error:`` prefix included), and the longest run
#: of characters without a space echoed whole (a path, a value): longer ones are cut in the middle.
MAX_ERROR_LINE = 299
MAX_ECHOED_RUN = 120


def did_you_mean(value: Any, choices: Any) -> str:
    """`` (did you mean 'x'?)`` for the choice closest to ``value`` (difflib's default closeness), or ``""``:
    the suffix every "unknown name" / "must be one of" error ends with."""
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def error_line(prefix: str, message: str, suffix: str = "") -> str:
    """The one line printed for an error: ``prefix + message + suffix``, under ``MAX_ERROR_LINE`` characters.

    Every error reaches the user through here (the CLI's handler and its argument parser), so no
    message can print a huge value whole or break the line: control characters, line breaks and
    unpaired surrogates are shown escaped (``\\n``, ``\\x00``, ``\\ud800``); every run of more than
    ``MAX_ECHOED_RUN`` characters without a space (a value, a path) keeps its start and end with
    ``...(N more characters)...`` between them; when the line is still too long, the longest runs are cut
    further (the words around them are what the user acts on), and last the message itself.
    """
    limit = max(40, MAX_ERROR_LINE - len(prefix) - len(suffix))
    # last resort, the message's middle: its start says what is wrong, its end what to do
    return prefix + _cut(_cut_runs(_printable(message), limit), limit, head_share=0.75) + suffix


_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_SHORTEST_RUN = 56  # a run is never cut below this (about 10 characters at each end and the count)


def _cut_runs(text: str, limit: int) -> str:
    """``text`` with each run without a space cut to ``MAX_ECHOED_RUN`` characters, then the longest runs cut
    further, down to ``_SHORTEST_RUN`` each, until ``text`` fits ``limit`` (or no run can give more)."""
    runs = list(re.finditer(rf"\S{{{_SHORTEST_RUN + 1},}}", text))
    if not runs:
        return text
    size = {m.start(): min(m.end() - m.start(), MAX_ECHOED_RUN) for m in runs}
    excess = len(text) - sum(m.end() - m.start() - size[m.start()] for m in runs) - limit
    for m in sorted(runs, key=lambda m: size[m.start()], reverse=True):
        if excess <= 0:
            break
        smaller = max(_SHORTEST_RUN, size[m.start()] - excess)
        excess -= size[m.start()] - smaller
        size[m.start()] = smaller
    out, pos = [], 0
    for m in runs:
        out += [text[pos:m.start()], _cut(m.group(), size[m.start()])]
        pos = m.end()
    return "".join(out) + text[pos:]


def _printable(text: str) -> str:
    r"""``text`` with control characters, line and paragraph separators and lone surrogates escaped."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _cut(text: str, limit: int, head_share: float = 0.6) -> str:
    """``text`` if it has at most ``limit`` characters, else its start and end with the count cut between.

    The marker takes up to 35 characters (``...(999,999,999,999 more characters)...``); of the rest,
    ``head_share`` is kept at the start (a value's beginning) and the remainder at the end (a path's file name).
    """
    if len(text) <= limit:
        return text
    keep = max(limit - 35, 8)
    head = round(keep * head_share)
    tail = keep - head
    return f"{text[:head]}...({len(text) - head - tail:,} more characters)...{text[len(text) - tail:]}"


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
        self.path, self.line, self.field, self.reason = path, line, field, message


class ConfigError(InputError):
    """An invalid training or evaluation config (unknown key, wrong type, missing field)."""


class FileSystemError(InputError):
    """A file or folder that cannot be read or written (permission, read-only, disk full, not a folder...).

    Exit code 2 like other bad input: the user has to change a path, a permission or free space.
    """


class TrainingFault(CalrlError):
    """A fault detected during training (e.g. a NaN reward); names the step and the sample."""

    exit_code = 3


# errno -> what it means for the path, in words a user can act on
_ERRNO_MESSAGES: dict[int, str] = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on device (disk full)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for this file system",
    errno.ENOTDIR: "not a folder (a part of the path is a file)",
    errno.EISDIR: "is a folder, expected a file",
    errno.ENOENT: "not found",
    errno.EEXIST: "already exists",
    errno.ENOTEMPTY: "folder not empty",
    errno.ENAMETOOLONG: "name too long",
    errno.ELOOP: "too many levels of symbolic links",
    errno.EIO: "input/output error (failing disk or network file system)",
    errno.EMFILE: "too many open files",
    errno.ENFILE: "too many open files in the system",
    errno.ENXIO: "no such device (a FIFO or socket without a peer?)",
    errno.ENODEV: "no such device",
    errno.ETXTBSY: "file busy",
    errno.EBUSY: "device or resource busy",
    errno.EXDEV: "cannot move across file systems",
    errno.EINVAL: "invalid argument (name not allowed on this file system?)",
}


def os_error_message(exc: OSError) -> str:
    """A short sentence for an ``OSError``, from its errno (the OS's text when the errno is unmapped)."""
    if exc.errno in _ERRNO_MESSAGES:
        return _ERRNO_MESSAGES[exc.errno]
    text = exc.strerror or str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]


def file_system_error(exc: OSError, path: str | None = None, action: str | None = None) -> FileSystemError:
    """The one-line error for ``exc``; ``path`` defaults to the path the OS names (``exc.filename``).

    ``action`` (e.g. ``"cannot write"``) is put before the reason: ``out/gate.json: cannot write:
    no space left on device (disk full)``.
    """
    if path is None and exc.filename is not None:
        path = str(exc.filename)
    reason = os_error_message(exc)
    if exc.filename2 is not None and path != str(exc.filename2):
        reason += f" (moving to {exc.filename2})"
    return FileSystemError(f"{action}: {reason}" if action else reason, path=path)


F = TypeVar("F", bound=Callable[..., Any])


def reports_os_errors(func: F) -> F:
    """Decorate a command's ``run``: an ``OSError`` escaping it becomes a one-line FileSystemError."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except OSError as exc:
            raise file_system_error(exc) from None

    return wrapper  # type: ignore[return-value]
