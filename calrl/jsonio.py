"""The one JSON helper: :func:`loads_json` reads user JSON (malformed text, duplicate keys, integers beyond 64
bits and nesting deeper than :data:`MAX_JSON_DEPTH` become one-line errors naming the file and line);
:func:`write_json` / :func:`write_jsonl` write JSON atomically (:func:`calrl.io.atomic_path`), the JSON lines
exactly as ``json.dumps(row, ensure_ascii=False)`` (:func:`jsonl_lines`, :class:`JsonRows`).
"""

from __future__ import annotations

import collections
import itertools
import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
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
# a string as _JSONL_ENCODER.encode gives it (the C function it calls for a str; calling it directly saves the
# method call, a third of the time of writing 10^6 ids)
_encode_text = json.encoder.encode_basestring


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
    "unique": "(E(x) if type(x := {e}) is str else 'null' if x is None else V(x))",
    "text": "V({e})",
    "flag": "('true' if (x := {e}) is True else 'false' if x is False else 'null' if x is None else V(x))",
    "number": "(R(x) if type(x := {e}) is float and x - x == 0 else I(x) if type(x) is int else 'null' if x is None "
              "else V(x))",
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
    # lines joined into one string by write_grouped: at 4096 (2 MB) writing the two item files of 10^6 rows took
    # 0.38 s of system time, at 1024 0.22 s (and 1.03 s at 16384)
    GROUP_CHUNK = 1024

    def __init__(self, params: str, columns: Sequence[tuple[str, str, str]], *, group_from: str | None = None,
                 ) -> None:
        unknown = [kind for _, _, kind in columns if kind not in _COLUMN_CODE]
        if unknown:
            raise ValueError(f"unknown column kinds {unknown}; known: {', '.join(_COLUMN_CODE)}")
        self.params, self.columns = params, tuple(columns)
        self.keys = tuple(key for key, _, _ in columns)
        if group_from is not None and group_from not in self.keys[1:]:
            raise ValueError(f"group_from {group_from!r} is not a column after the first: {self.keys}")
        self.group_from = self.keys.index(group_from) if group_from is not None else None
        body = ", ".join(f"{key!r}: {_ROW_CODE.get(kind, '{e}').format(e=expr)}" for key, expr, kind in columns)
        self.row = self._compile(f"def row({params}):\n    return {{{body}}}\n", {})["row"]

    @staticmethod
    def _compile(source: str, names: dict[str, Any]) -> dict[str, Any]:
        exec(compile(source, "<calrl.io.JsonRows>", "exec"), names)  # noqa: S102 - source built from constants
        return names

    def _line_functions(self, *bounds: int, head_values: bool = False) -> list[Any]:
        """The line encoder (no ``bounds``), or the encoders of the column ranges between ``bounds`` (the first
        writes the ``{``, the last the ``}``), with their own caches of encoded values (dropped with them).
        ``head_values``: the first range's columns get an encoder each, of the column's value (not the params)."""
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
                    text = _encode_text(x)
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

        names = {"E": _encode_text, "V": value, "C": kept, "R": float.__repr__, "I": int.__repr__}
        edges = [0, *bounds, len(self.columns)]
        for n, (start, stop) in enumerate(itertools.pairwise(edges)):
            if head_values and n == 0:
                for i, (_, _, kind) in enumerate(self.columns[start:stop], start=start):
                    self._compile(f"def column{i}(x):\n    return {_COLUMN_CODE[kind].format(e='x')}\n", names)
                names["part0"] = [names[f"column{i}"] for i in range(start, stop)]
                continue
            parts = []
            for i, (key, expr, kind) in enumerate(self.columns[start:stop], start=start):
                parts.append(f"{self._prefix(i)!r} + {_COLUMN_CODE[kind].format(e=expr)}")
            end = " + '}'" if stop == len(self.columns) else ""
            source = f"def part{n}({self.params}):\n    return (" + "\n            + ".join(parts) + f"{end})\n"
            self._compile(source, names)
        return [names[f"part{n}"] for n in range(len(edges) - 1)]

    def _prefix(self, i: int) -> str:
        """What a line holds before column ``i``'s value: ``{"key": `` or ``, "key": ``."""
        return ("{" if i == 0 else ", ") + _JSONL_ENCODER.encode(self.keys[i]) + ": "

    def lines(self, rows: Iterable[Sequence[Any]]) -> Iterator[str]:
        """The JSON line (with its newline) of each row, given as the tuple of its params."""
        line, = self._line_functions()
        for args in rows:
            yield line(*args) + "\n"

    def write(self, path: StrPath, rows: Iterable[Sequence[Any]]) -> None:
        """Write the rows (each the tuple of the params) as a JSONL file (write, then rename)."""
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.writelines(self.lines(rows))

    def write_grouped(self, path: StrPath, heads: Sequence[Sequence[Any]], groups: Sequence[Any],
                      group_row: Callable[[Any], Sequence[Any]]) -> None:
        """Write rows given by column and by group (write, then rename), each line as :meth:`lines` writes it.

        ``heads`` are the values of the columns before ``group_from``, one sequence per column; ``groups`` each
        row's group; ``group_row(g)`` the params of one row of group ``g``, from which its columns from
        ``group_from`` on are encoded, once: every row of the group holds the same values there
        (:func:`calrl.eval.resolving.group_records`); the encoded part is kept until the group's last row. The
        lines are joined a chunk at a time from the columns' encoded values, without a Python call per line:
        10^6 rows in 40-odd groups take a fifth of the time.
        """
        if self.group_from is None or len(heads) != self.group_from:
            raise ValueError(f"write_grouped needs group_from and {self.group_from} head columns, got {len(heads)}")
        if any(len(column) != len(groups) for column in heads):
            raise ValueError(f"head columns of {[len(c) for c in heads]} rows for {len(groups)} groups")
        encoders, tail = self._line_functions(self.group_from, head_values=True)
        prefixes = [self._prefix(i) for i in range(self.group_from)]
        kinds = [kind for _, _, kind in self.columns[:self.group_from]]
        left, tails = collections.Counter(groups), {}  # rows of each group still to write; encoded rests
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for start in range(0, len(groups), self.GROUP_CHUNK):
                stop = start + self.GROUP_CHUNK
                chunk = groups[start:stop]
                counts = collections.Counter(chunk)
                for group in counts.keys() - tails.keys():
                    tails[group] = tail(*group_row(group)) + "\n"
                pieces: list[Iterable[str]] = []
                for prefix, kind, encode, column in zip(prefixes, kinds, encoders, heads, strict=True):
                    pieces += (itertools.repeat(prefix), _encoded(column[start:stop], kind, encode))
                pieces.append(map(tails.__getitem__, chunk))
                f.write("".join(itertools.chain.from_iterable(zip(*pieces))))
                left.subtract(counts)
                for group in counts:
                    if not left[group]:
                        del tails[group]


def _encoded(values: Sequence[Any], kind: str, encode: Any) -> Iterable[str]:
    """The JSON text of each value as ``encode`` (the column's encoder) gives it: a column of strings, integers
    or nulls only at C speed, without a Python call per value."""
    types = set(map(type, values))
    if types == {str} and kind in ("unique", "text"):
        return map(_encode_text, values)
    if types == {int} and kind == "number":
        return map(int.__repr__, values)
    if types == {type(None)} and kind in ("unique", "text", "number", "flag", "shared"):
        return itertools.repeat("null", len(values))
    return map(encode, values)


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


# ------------------------------------------------------------------------------ JSON lines, in bulk
_COLON_ESCAPE = re.compile(rb"\\u003[aA]")  # an escaped ":" in a string, which the colon count below cannot see
_NOT_FAST = object()  # what a value that must be read line by line becomes


class JsonLinesColumns:
    """Blocks of JSON lines decoded by msgspec into columns, giving exactly what :func:`loads_json` gives line by
    line, or None for a block that must be read line by line (a few times faster than ``json`` with its checks).

    ``struct_type`` is a ``msgspec.Struct`` with ``forbid_unknown_fields=True`` (a line with another key goes
    line by line), each field defaulting to ``msgspec.UNSET`` (so that a key given as null is told from one not
    given) and typed as strings, integers, floats, booleans, None, tuples of strings (JSON arrays of strings),
    or ``msgspec.Raw`` for any other list or object: :meth:`values` reads those with :func:`loads_json`, once per
    distinct text.

    Where msgspec would read a line differently from :func:`loads_json`, the block is refused: a key given twice
    (msgspec keeps the last value; found by counting colons: every colon of a line belongs to a key, a string
    or a raw value, so the count equals keys + colons inside strings and raw values only when no key is given
    twice), lines not holding exactly one object each (blank lines, an object over two lines), an escaped
    colon ``\\u003a``. Lone surrogates, integers beyond ``sys.get_int_max_str_digits()`` digits, NaN and
    Infinity make msgspec fail, so they too go line by line.
    """

    def __init__(self, struct_type: type) -> None:
        import msgspec  # 10 ms: only the readers of JSON lines files need it

        info = msgspec.inspect.type_info(struct_type)
        if not info.forbid_unknown_fields:
            raise ValueError(f"{struct_type.__name__} must forbid unknown fields")
        self.names, self.texts, self.raws = [], [], []
        for field in info.fields:
            if field.name != field.encode_name or not (field.required or (
                    field.default is msgspec.NODEFAULT and field.default_factory is msgspec.NODEFAULT)):
                raise ValueError(f"field {field.name!r}: renamed, or a default other than msgspec.UNSET")
            kind = _field_kind(msgspec.inspect, field.type)
            {"text": self.texts, "raw": self.raws}.get(kind, []).append(field.name)
            self.names.append(field.name)
        body = ", ".join(f"[r.{name} for r in rows]" for name in self.names)
        namespace: dict[str, Any] = {}
        exec(f"def columns(rows):\n    return ({body},)\n", namespace)  # noqa: S102 - from the field names
        self._columns = namespace["columns"]
        self._decoder = msgspec.json.Decoder(struct_type)
        # not UTF-8: UnicodeDecodeError (a ValueError); nested deep: RecursionError
        self._error, self.unset = (msgspec.DecodeError, ValueError, RecursionError), msgspec.UNSET

    def decode(self, block: bytes, lines: int) -> tuple[dict[str, list[Any]], dict[str, int]] | None:
        """The columns of a block of ``lines`` lines (:func:`calrl.io.iter_line_blocks`): a list per field, in
        line order, ``msgspec.UNSET`` where a line lacks the key, raw values as bytes; and how many lines lack
        each key. None when the block must be read line by line."""
        # every line one object, so that each line is one row: a line starts with "{" and ends with "}"
        if not block.startswith(b"{") or _COLON_ESCAPE.search(block):
            return None
        bounds = block.count(b"}\n{") + (block.count(b"}\r\n{") if b"\r" in block else 0)
        if bounds != lines - 1:
            return None
        try:
            rows = self._decoder.decode_lines(block)
        except self._error:
            return None
        if len(rows) != lines:  # two objects on a line
            return None
        columns = dict(zip(self.names, self._columns(rows), strict=True))
        del rows
        unset = self.unset
        absent = {name: column.count(unset) for name, column in columns.items()}
        for name in self.raws:
            if absent[name] == 0:
                columns[name] = list(map(bytes, columns[name]))
            elif absent[name] < lines:
                columns[name] = [x if x is unset else bytes(x) for x in columns[name]]
        keys = lines * len(columns) - sum(absent.values())
        inside = sum(_text_colons(columns[name]) for name in self.texts if absent[name] < lines)
        inside += sum(b"".join(filter(None, columns[name])).count(b":")  # UNSET is false
                      for name in self.raws if absent[name] < lines)
        return (columns, absent) if block.count(b":") == keys + inside else None

    def values(self, name: str, column: list[Any], convert: Any, kept: dict[Any, Any], *,
               limit: int) -> list[Any] | None:
        """What ``convert`` makes of each value of the column ``name`` (a raw one read by :func:`loads_json`
        first), once per distinct value: ``kept`` maps values (and UNSET: seed it) to results, up to ``limit``
        of them. None when a value is not one the fast path takes (a raw one not UTF-8 or not read alike by
        :func:`loads_json`, or one ``convert`` refuses with an :class:`InputError`)."""
        out = list(map(kept.get, column, itertools.repeat(_NOT_FAST)))
        if _NOT_FAST not in out:
            return out
        raw = name in self.raws
        for i, value in enumerate(column):
            if out[i] is not _NOT_FAST:
                continue
            result = kept.get(value, _NOT_FAST)  # kept since the first pass
            if result is _NOT_FAST:
                result = _converted(value, convert, raw)
                if result is _NOT_FAST:
                    return None
                if len(kept) < limit:
                    kept[value] = result
            out[i] = result
        return out


def _field_kind(inspect: Any, field_type: Any) -> str:
    """``"text"`` (strings inside), ``"raw"`` or ``"scalar"``; ValueError for a type the fast reader refuses."""
    kinds = field_type.types if isinstance(field_type, inspect.UnionType) else (field_type,)
    if all(isinstance(k, inspect.RawType) for k in kinds):
        return "raw"
    texts = [k for k in kinds if isinstance(k, inspect.StrType)
             or (isinstance(k, inspect.VarTupleType) and isinstance(k.item_type, inspect.StrType))]
    scalars = (inspect.IntType, inspect.FloatType, inspect.BoolType, inspect.NoneType)
    if not all(k in texts or isinstance(k, scalars) for k in kinds):
        raise ValueError(f"only scalars, tuples of strings or msgspec.Raw, got {field_type}")
    return "text" if texts else "scalar"


def _converted(value: Any, convert: Any, raw: bool) -> Any:
    if raw:
        # nested deep enough that the line would exceed MAX_JSON_DEPTH with the row around it: line by line
        if value.count(b"[") + value.count(b"{") >= MAX_JSON_DEPTH:
            return _NOT_FAST
        try:
            value = loads_json(value.decode("utf-8"), path="")
        except (UnicodeDecodeError, InputError):
            return _NOT_FAST
    try:
        return convert(value)
    except InputError:
        return _NOT_FAST


def _text_colons(column: list[Any]) -> int:
    """Colons inside the strings of a column (its other values hold none)."""
    try:
        return "".join(filter(None, column)).count(":")  # strings, None and UNSET (false)
    except TypeError:  # numbers, tuples
        parts: list[str] = []
        for x in column:
            if type(x) is str:
                parts.append(x)
            elif type(x) is tuple:
                parts.extend(x)
        return "".join(parts).count(":")
