"""The one JSON helper: :func:`loads_json` reads user JSON (malformed text, duplicate keys, integers beyond 64
bits and nesting deeper than :data:`MAX_JSON_DEPTH` become one-line errors naming the file and line);
:func:`write_json` / :func:`write_jsonl` write JSON atomically (:func:`calrl.io.atomic_path`), the JSON lines
exactly as ``json.dumps(row, ensure_ascii=False)`` (:func:`jsonl_lines`, :class:`JsonRows`).
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from calrl.errors import InputError
from calrl.io import StrPath, atomic_path, write_text

#: Deepest nesting of arrays and objects accepted in a JSON line or file. Predictions and calibrator
#: files nest 2-3 levels; the limit stops a hostile line from exhausting the parser's recursion.
MAX_JSON_DEPTH = 64


def write_json(path: StrPath, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def write_jsonl(path: StrPath, rows: Iterable[dict[str, Any]]) -> None:
    """One line per row, each exactly ``json.dumps(row, ensure_ascii=False)`` (see :func:`jsonl_lines`)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.writelines(jsonl_lines(rows))


_JSONL_CHUNK = 2048  # rows encoded per call of the C encoder
_JSONL_ENCODER = json.JSONEncoder(ensure_ascii=False)  # json.dumps(row, ensure_ascii=False)'s settings
_ROW_BREAK = "\x00"  # put between the rows of a chunk, encoded as the list item "\u0000"
_ROW_SEPARATOR = ", " + _JSONL_ENCODER.encode(_ROW_BREAK) + ", "


def jsonl_lines(rows: Iterable[Any]) -> Iterator[str]:
    """The JSONL text of ``rows``, a chunk of lines at a time: each line is ``json.dumps(row,
    ensure_ascii=False)``, byte for byte.

    ``json.dumps`` per row spent most of its time setting up the encoder; here the rows of a chunk are encoded
    in one call, as the list ``[row, "\x00", row, "\x00", ..., row]``, and the text is split where the
    ``"\u0000"`` items stand. A row holding that very item itself (a list or object with a value "\x00"
    between others) gives more pieces than rows: that chunk is encoded row by row instead.
    """
    chunk: list[Any] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == _JSONL_CHUNK:
            yield _encode_chunk(chunk)
            chunk = []
    if chunk:
        yield _encode_chunk(chunk)


def _encode_chunk(chunk: list[Any]) -> str:
    spaced: list[Any] = [_ROW_BREAK] * (2 * len(chunk) - 1)
    spaced[::2] = chunk
    lines = _JSONL_ENCODER.encode(spaced)[1:-1].split(_ROW_SEPARATOR)
    if len(lines) != len(chunk):  # a row holds the separator's text: no split point can be trusted
        lines = [_JSONL_ENCODER.encode(row) for row in chunk]
    lines.append("")
    return "\n".join(lines)


# how JsonRows encodes a column of each kind (``{e}``: the column's expression); V, C, E, R: see _line_function
_COLUMN_CODE = {
    "unique": "(E(x) if type(x := {e}) is str else V(x))",
    "text": "V({e})",
    "flag": "('true' if (x := {e}) is True else 'false' if x is False else 'null' if x is None else V(x))",
    "number": "(R(x) if type(x := {e}) is float and x - x == 0 else 'null' if x is None else V(x))",
    "shared": "('null' if (x := {e}) is None else C(x))",
    # the value listed: [] for None, else [x] (listed) or [[x]] (listed_twice); the row holds the lists too
    "listed": "('[]' if (x := {e}) is None else '[' + V(x) + ']')",
    "listed_twice": "('[]' if (x := {e}) is None else '[[' + V(x) + ']]')",
}
# how JsonRows.row builds a column's value from its expression (the expression itself for other kinds)
_ROW_CODE = {"listed": "([] if (x := {e}) is None else [x])", "listed_twice": "([] if (x := {e}) is None else [[x]])"}


class JsonRows:
    """Rows of fixed columns: as dicts (:meth:`row`) and as JSON lines (:meth:`write`), each line exactly
    ``json.dumps(row, ensure_ascii=False)`` but built without the dict and with repeated values encoded once.

    ``params`` names the arguments a row is made from (``"rec, res"``); ``columns`` are ``(key, expression of
    the params, kind)``. The kind says what the value usually is, and picks the fastest exact encoding; any
    other value is encoded as ``json.dumps`` would, so a kind is a hint, never a constraint:

    - ``"unique"``: a string seldom repeated (ids, questions);
    - ``"text"``: a string that repeats (answers, sources; kept encoded, up to ``MAX_KEPT`` of them);
    - ``"flag"``: True, False or None; ``"number"``: a float or None;
    - ``"shared"``: a list or object the rows share (slices, references), or None: kept encoded by identity
      (the rows must not change while they are written);
    - ``"listed"``, ``"listed_twice"``: the value put in a list, ``[x]``, or in a list in a list, ``[[x]]``
      (``[]`` for None): lm-evaluation-harness' ``filtered_resps`` and ``resps``; the expression gives ``x``.

    With 10^6 rows ``json.dumps`` per row was a quarter of ``calrl eval --predictions``' time.
    """

    MAX_KEPT = 1 << 16
    def __init__(self, params: str, columns: Sequence[tuple[str, str, str]]) -> None:
        unknown = [kind for _, _, kind in columns if kind not in _COLUMN_CODE]
        if unknown:
            raise ValueError(f"unknown column kinds {unknown}; known: {', '.join(_COLUMN_CODE)}")
        self.params, self.columns = params, tuple(columns)
        self.keys = tuple(key for key, _, _ in columns)
        body = ", ".join(f"{key!r}: {_ROW_CODE.get(kind, '{e}').format(e=expr)}" for key, expr, kind in columns)
        self.row = self._compile(f"def row({params}):\n    return {{{body}}}\n", {})["row"]

    @staticmethod
    def _compile(source: str, names: dict[str, Any]) -> dict[str, Any]:
        exec(compile(source, "<calrl.io.JsonRows>", "exec"), names)  # noqa: S102 - source built from constants
        return names

    def _line_function(self) -> Any:
        """The line encoder, with its own caches of encoded values (dropped with it)."""
        encoder = _JSONL_ENCODER
        texts: dict[str, str] = {}
        shared: dict[int, tuple[Any, str]] = {}
        limit = self.MAX_KEPT

        def value(x: Any) -> str:  # any value, as json.dumps(x, ensure_ascii=False); strings kept
            if x is None:
                return "null"
            if type(x) is int:
                return int.__repr__(x)
            if type(x) is str:
                text = texts.get(x)
                if text is None:
                    text = encoder.encode(x)
                    if len(texts) < limit and len(x) <= 256:  # long texts (answers) seldom repeat
                        texts[x] = text
                return text
            if type(x) is float and math.isfinite(x):
                return float.__repr__(x)
            return encoder.encode(x)

        def kept(x: Any) -> str:  # a list or object shared between rows, by identity (holding it alive)
            entry = shared.get(id(x))
            if entry is None or entry[0] is not x:
                entry = (x, value(x))
                if len(shared) < limit:
                    shared[id(x)] = entry
            return entry[1]

        parts = []
        for i, (key, expr, kind) in enumerate(self.columns):
            prefix = ("{" if i == 0 else ", ") + encoder.encode(key) + ": "
            parts.append(f"{prefix!r} + {_COLUMN_CODE[kind].format(e=expr)}")
        source = f"def line({self.params}):\n    return (" + "\n            + ".join(parts) + " + '}')\n"
        names = {"E": encoder.encode, "V": value, "C": kept, "R": float.__repr__}
        return self._compile(source, names)["line"]

    def lines(self, rows: Iterable[Sequence[Any]]) -> Iterator[str]:
        """The JSON line (with its newline) of each row, given as the tuple of its params."""
        line = self._line_function()
        for args in rows:
            yield line(*args) + "\n"

    def write(self, path: StrPath, rows: Iterable[Sequence[Any]]) -> None:
        """Write the rows (each the tuple of the params) as a JSONL file (write, then rename)."""
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.writelines(self.lines(rows))


# -------------------------------------------------------------------------------------------- JSON
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
