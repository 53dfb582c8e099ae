"""The one JSON reader for user files: :func:`loads_json` (one text, exact ``json`` semantics, one-line errors
naming file, line and field) and :func:`json_values` (a JSON-lines file, each value and error what
:func:`loads_json` gives, read by msgspec where nothing can read differently). :mod:`calrl.io` opens the files
(``calrl.io.iter_json_lines``) and re-exports both."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from typing import Any, BinaryIO

from calrl.errors import InputError

#: Deepest nesting of arrays and objects accepted in a JSON line or file. Predictions and calibrator
#: files nest 2-3 levels; the limit stops a hostile line from exhausting the parser's recursion.
MAX_JSON_DEPTH = 64

StrPath = str | os.PathLike[str]


def _depth(obj: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0, ``[]`` is 1), without recursion."""
    deepest, stack = 0, [(obj, 0)]
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            deepest = max(deepest, level + 1)
            stack.extend((v, level + 1) for v in value if isinstance(v, dict | list))
    return deepest


def loads_json(text: str, *, path: str, line: int | None = None, field: str | None = None,
               what: str = "JSON") -> Any:
    """Parse ``text`` as JSON; malformed text, nesting deeper than ``MAX_JSON_DEPTH``, an integer longer
    than Python reads (``sys.get_int_max_str_digits()``), or a lone UTF-16 surrogate escape (``"\\ud800"``,
    half of a pair: not Unicode text, it could not be written back as UTF-8) is an InputError naming
    ``path``, the line (``line`` when the text is one line of the file) and the field (``field``, or the
    key path of the bad value); ``what`` names the text in the message (e.g. ``"JSON in CSV cell"``)."""
    too_deep = f"{what} nested deeper than {MAX_JSON_DEPTH} levels of arrays and objects"
    try:
        value = _DECODER.decode(text)
    except _DuplicateKey as exc:
        raise InputError(f"duplicate key in {what} (an object names it twice; which value is meant?)", path=path,
                         line=line, field=_key_path(field, exc.key)) from None
    except json.JSONDecodeError as exc:
        where = line if line is not None else exc.lineno
        found = "a byte-order mark (U+FEFF) inside the text" if text[exc.pos:exc.pos + 1] == "\ufeff" else exc.msg
        raise InputError(f"malformed {what}: {found} (column {exc.colno})", path=path, line=where,
                         field=field) from None
    except RecursionError:
        raise InputError(too_deep, path=path, line=line, field=field) from None
    except ValueError:  # the only other ValueError of json.loads: an integer over the int-to-text limit
        key, digits = _find(json.loads(text, parse_int=_LongInt.parse), lambda v: isinstance(v, _LongInt))
        if key is None:
            raise
        raise InputError(f"an integer of {digits:,} digits (more than {sys.get_int_max_str_digits():,} cannot "
                         "be read; write it as a string)", path=path, line=line,
                         field=_key_path(field, key)) from None
    # the depth walk only runs where there are enough brackets to exceed the limit (str.count is cheap)
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _depth(value) > MAX_JSON_DEPTH:
        raise InputError(too_deep, path=path, line=line, field=field)
    # text read from a file was decoded as UTF-8, so a surrogate can only come from a \uD800-\uDFFF escape
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):
        key, bad = _find(value, lambda v: isinstance(v, str) and _LONE_SURROGATE.search(v) is not None)
        if key is not None:
            code = ord(_LONE_SURROGATE.search(bad).group())
            raise InputError(f"lone UTF-16 surrogate \\u{code:04x} in {what} (half of an escaped pair; not "
                             "Unicode text)", path=path, line=line, field=_key_path(field, key))
    return value


def json_values(f: BinaryIO, path: StrPath, *, inner: str | None = None) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` of each non-blank line of a JSON-lines file, streamed: each value and each error
    exactly what ``calrl.io.iter_lines`` and :func:`loads_json` give, faster.

    Lines are read by msgspec's decoder (4x faster than ``json``) where nothing in them can read differently,
    which is checked for a block of lines at a time (:func:`_vouched_block`), else line by line
    (:func:`_fast_json`). Any other line (a lone-surrogate escape, deep nesting, a very long integer, a key that
    may be given twice, anything msgspec refuses: NaN, malformed text) is read by :func:`loads_json`, whose value
    or one-line error is then the answer. ``inner``: the key whose value is often an object (checked in blocks;
    a block with objects under other keys is checked line by line).
    """
    import msgspec

    decode, limit = msgspec.json.Decoder().decode, sys.get_int_max_str_digits()
    long_int = re.compile(rb"[0-9]{%d}" % (limit + 1)) if limit else None
    line_no = 0
    while lines := f.readlines(1 << 22):
        if line_no == 0 and lines[0].startswith(b"\xef\xbb\xbf"):
            lines[0] = lines[0][3:]
        values = _vouched_block(lines, decode, long_int, limit, inner)
        if values is not None:
            yield from enumerate(values, start=line_no + 1)
            line_no += len(lines)
            continue
        for raw in lines:
            line_no += 1
            value = _fast_json(raw, decode, long_int if len(raw) > limit else None, inner)
            if value is _UNSURE:
                value = _exact_json(raw, path, line_no)
            if value is not _BLANK:
                yield line_no, value


_UNSURE, _BLANK = object(), object()


def _exact_json(raw: bytes, path: StrPath, line_no: int) -> Any:
    """What :func:`iter_lines` and :func:`loads_json` make of one line (``_BLANK`` for a blank one)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text ({exc.reason} at byte {exc.start} of the line)", path=str(path),
                         line=line_no) from None
    return loads_json(text, path=str(path), line=line_no) if text.strip() else _BLANK


def _vouched_block(lines: list[bytes], decode: Any, long_int: re.Pattern[bytes] | None, limit: int,
                   inner_key: str | None) -> list[Any] | None:
    """The objects on a block of lines, read by msgspec, when every line holds one object whose keys are all
    different, and nothing :func:`_fast_json` leaves to ``json`` is in the block; else None (then the lines are
    read one by one). :func:`_fast_json`'s checks, made with numpy over the whole block: every colon after a
    quote (none after whitespace) ends a key, so as many ``":`` as keys read means no key was read twice."""
    import numpy as np

    block = b"".join(lines)
    if long_int is not None and any(long_int.search(raw) for raw in lines if len(raw) > limit):
        return None
    a = np.frombuffer(block, dtype=np.uint8)
    before_colon = a[np.flatnonzero(a[1:] == 58)]  # the byte before each ':'
    slashes = np.flatnonzero(a[:-2] == 92)
    if (np.isin(before_colon, (32, 9, 13)).any() or ((a[slashes + 1] == 117) & ((a[slashes + 2] | 32) == 100)).any()):
        return None  # whitespace before a colon (keys cannot be counted), or maybe a \uD800-\uDFFF escape
    openers = np.flatnonzero((a == 91) | (a == 123))
    ends = np.cumsum(np.fromiter(map(len, lines), dtype=np.int64, count=len(lines)))
    if openers.size and np.bincount(np.searchsorted(ends, openers, side="right")).max() > MAX_JSON_DEPTH:
        return None  # a line with enough brackets to nest too deep
    try:
        values = list(map(decode, lines))
    except ValueError:  # msgspec's DecodeError and UnicodeDecodeError; a blank line too
        return None
    if set(map(type, values)) != {dict}:
        return None
    inner = [v for row in values if type(v := row.get(inner_key)) is dict] if inner_key is not None else []
    keys = sum(map(len, values)) + sum(map(len, inner))
    if int((before_colon == 34).sum()) != keys or int((a[openers] == 123).sum()) != len(values) + len(inner):
        return None  # a key may be given twice, or there are objects in other places
    return values


def _fast_json(raw: bytes, decode: Any, long_int: re.Pattern[bytes] | None, inner_key: str | None) -> Any:
    """The object on a JSON line read by msgspec, ``_BLANK`` for a blank line, or ``_UNSURE`` unless msgspec's
    value is sure to be :func:`loads_json`'s. msgspec reads numbers, strings and UTF-8 as ``json`` does
    (integers of any size, correctly rounded floats) and refuses what ``json`` refuses and more (NaN, overflowing
    floats, lone surrogates), but keeps the last of two equal keys, reads integers past Python's digit limit and
    any depth: such lines are left to ``json``. A duplicate key is ruled out by counting: with no whitespace
    before a colon, every key ends in ``":``, so as many ``":`` as keys read means no key was read twice."""
    if not raw.strip():
        return _BLANK
    objects = raw.count(b"{")
    if (b"\\ud" in raw or b"\\uD" in raw or b" :" in raw or b"\t:" in raw or b"\r:" in raw
            or objects + raw.count(b"[") > MAX_JSON_DEPTH or (long_int is not None and long_int.search(raw))):
        return _UNSURE
    try:
        value = decode(raw)
    except ValueError:  # msgspec's DecodeError and UnicodeDecodeError
        return _UNSURE
    if type(value) is not dict:
        return _UNSURE
    keys = len(value)
    if objects == 2 and type(inner := value.get(inner_key)) is dict:  # one object inside, under ``inner_key``
        keys += len(inner)
    elif objects != 1:
        return _UNSURE
    return value if raw.count(b'":') == keys else _UNSURE


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object's dict; a key given twice raises _DuplicateKey (Python's json would keep the last silently)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


#: One decoder for every user file: made once (json.loads with a hook would build one per call).
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class _LongInt(int):
    """Stands for an integer too long to read (its value is its number of digits), to find where it is."""

    @classmethod
    def parse(cls, text: str) -> int:
        digits = len(text.lstrip("-"))
        return int(text) if digits <= sys.get_int_max_str_digits() else cls(digits)


def _find(value: Any, bad: Any) -> tuple[str | None, Any]:
    """The key path (``slice.domain``, ``samples[2]``; ``""`` for the top) and value of the first part of a
    parsed JSON value, keys included, for which ``bad`` holds; (None, None) when none does."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        where, item = stack.pop(0)
        if bad(item):
            return where, item
        if isinstance(item, dict):
            for k, v in item.items():
                name = f"{where}.{k}" if where else str(k)
                if bad(k):
                    return name, k
                stack.append((name, v))
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(item))
    return None, None


def _key_path(field: str | None, key: str | None) -> str | None:
    """The field named in an error: the caller's ``field`` and the key path inside it."""
    if not key:
        return field
    return f"{field}.{key}" if field and not key.startswith("[") else (field or "") + key
