"""File input and output: checked input paths, checked output locations, atomic and staged writes.

Output is never half-written: a file is written under a temporary name beside its target and renamed
onto it (:func:`atomic_path`); a set of files is built in a staging folder and each file renamed into
place once all of them are complete (:func:`staged_dir`, :func:`staged_files`). Before any work,
:func:`check_output` refuses an output location that would replace earlier results or the command's
own inputs, and :func:`check_input` refuses what cannot be read as a file (FIFO, device, missing).
:func:`loads_json` is the one JSON reader for user files (malformed text and nesting deeper than
:data:`MAX_JSON_DEPTH` become one-line errors naming the file and line).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from calrl.errors import FileSystemError, InputError, file_system_error

#: Deepest nesting of arrays and objects accepted in a JSON line or file. Predictions and calibrator
#: files nest 2-3 levels; the limit stops a hostile line from exhausting the parser's recursion.
MAX_JSON_DEPTH = 64

StrPath = str | os.PathLike[str]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ----------------------------------------------------------------------------------------- writing
@contextmanager
def atomic_path(path: StrPath) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``path`` only on success."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: StrPath, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: StrPath, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


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
        import math

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


def _make_dirs(folder: Path) -> Path | None:
    """Create ``folder`` and its missing parents; return the topmost one created (None if it existed)."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    return missing[-1] if missing else None


def _make_stage(folder: Path, created: list[Path]) -> Path:
    """A staging folder inside ``folder``; folders created on the way are appended to ``created``."""
    top = _make_dirs(folder)
    if top is not None:
        created.append(top)
    return Path(tempfile.mkdtemp(prefix=".calrl-staging-", dir=folder))


def _remove_created(created: list[Path]) -> None:
    """After a failure: remove the folders a staged write created (they hold nothing else)."""
    for folder in reversed(created):
        shutil.rmtree(folder, ignore_errors=True)


def _move_into(item: Path, dest: Path) -> None:
    if dest.is_dir() and not dest.is_symlink():
        shutil.rmtree(dest)
    os.replace(item, dest)


@contextmanager
def staged_dir(path: StrPath) -> Iterator[Path]:
    """Yield a temporary folder; on success its files are moved into ``path`` (each by rename).

    Nothing appears in ``path`` if the body raises, so a failed run never leaves half an output. The
    staging folder lives inside ``path`` when it exists (then a folder that cannot be written fails
    before any work is moved), else beside it.
    """
    target = Path(path)
    created: list[Path] = []
    tmp = _make_stage(target if target.is_dir() else target.parent, created)
    try:
        yield tmp
        top = _make_dirs(target)
        if top is not None:
            created.append(top)
        for item in sorted(tmp.iterdir()):
            _move_into(item, target / item.name)
        created.clear()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_created(created)


@contextmanager
def staged_files(paths: Sequence[StrPath]) -> Iterator[list[Path]]:
    """Yield one temporary path per target (in a staging folder beside it); when the body succeeds,
    every written temporary file is renamed onto its target, else none is."""
    targets = [Path(p) for p in paths]
    stages: dict[Path, Path] = {}
    created: list[Path] = []
    try:
        for t in targets:
            if t.parent not in stages:
                stages[t.parent] = _make_stage(t.parent, created)
        yield [stages[t.parent] / t.name for t in targets]
        for t in targets:
            staged = stages[t.parent] / t.name
            if staged.exists():
                _move_into(staged, t)
        created.clear()
    finally:
        for stage in stages.values():
            shutil.rmtree(stage, ignore_errors=True)
        _remove_created(created)


# ------------------------------------------------------------------------------------ input checks
_SPECIAL_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                  (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def check_input(path: StrPath, *, option: str, allow_dir: bool = False) -> Path:
    """The input ``path`` as a Path, after checking it exists and is a regular file (or a folder when
    ``allow_dir``) that can be opened; anything else is a one-line error naming the path.

    Special files are refused before they are opened: reading a FIFO without a writer blocks forever.
    """
    if str(path) == "":
        raise InputError(f"{option} is an empty path")
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise InputError("file not found", path=str(path)) from None
    except OSError as exc:
        raise file_system_error(exc, str(path), "cannot read") from None
    for is_kind, name in _SPECIAL_KINDS:
        if is_kind(st.st_mode):
            raise InputError(f"is {name}, not a regular file", path=str(path))
    if stat.S_ISDIR(st.st_mode):
        if not allow_dir:
            raise InputError("is a folder, expected a file", path=str(path))
        if not os.access(p, os.R_OK | os.X_OK):
            raise FileSystemError("cannot read: permission denied", path=str(path))
        return p
    try:
        with open(p, "rb"):
            pass
    except OSError as exc:
        raise file_system_error(exc, str(path), "cannot read") from None
    return p


def _open_for_reading(path: StrPath) -> Any:
    """The file opened in binary mode; an OSError becomes a one-line error naming it."""
    try:
        return open(path, "rb")  # the caller closes it with ``with``
    except OSError as exc:
        raise file_system_error(exc, str(path), "cannot read") from None


def iter_lines(path: StrPath) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of each line of a UTF-8 file, streamed; a leading byte-order mark is
    dropped, and a line that is not UTF-8 is an InputError naming the file and that line."""
    with _open_for_reading(path) as f:
        for line_no, raw in enumerate(f, start=1):
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                yield line_no, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"not UTF-8 text ({exc.reason} at byte {exc.start} of the line)",
                                 path=str(path), line=line_no) from None


def read_text(path: StrPath) -> str:
    """The whole of a UTF-8 text file (a leading byte-order mark dropped); one-line errors otherwise."""
    with _open_for_reading(path) as f:
        data = f.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path=str(path)) from None


def sha256_of(path: StrPath) -> str:
    """``"sha256:<hex digest>"`` of a file's bytes, read in blocks."""
    import hashlib

    digest = hashlib.sha256()
    with _open_for_reading(path) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def input_hashes(paths: Iterable[StrPath]) -> dict[str, str]:
    """The content hash (:func:`sha256_of`) of each file, and of every file inside each folder, by path."""
    out: dict[str, str] = {}
    for path in paths:
        p = Path(path)
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            out[str(f)] = sha256_of(f)
    return out


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


# ---------------------------------------------------------------------------------- output checks
def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _inside(child: Path, folder: Path) -> bool:
    try:
        child.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _check_parents(target: Path, option: str) -> None:
    """The first existing folder on the way to ``target`` must be a folder (not a file)."""
    for ancestor in target.absolute().parents:
        if ancestor.exists() or ancestor.is_symlink():
            if not ancestor.is_dir():
                raise InputError(f"{ancestor.name} is a file, not a folder: cannot create {option} here",
                                 path=str(target))
            return


def check_output(path: StrPath, *, option: str, kind: str, inputs: Iterable[StrPath | None] = (),
                 outputs: Iterable[str] = (), overwrite: bool = False) -> Path:
    """Check an output location before any work is done; return it as a Path.

    ``kind`` is ``"dir"`` (a folder receiving the files named ``outputs``), ``"file"``, or ``"tree"`` (a
    folder written as a whole, e.g. a saved ``datasets`` folder). Refused, as
    one-line errors naming the path: an empty path; a location under a file; a folder where a file is
    expected or the reverse; an output that *is* one of ``inputs`` (always, even with ``overwrite``);
    and, unless ``overwrite``, a file that already exists, or a folder that holds earlier results (one
    of ``outputs``) or one of the command's ``inputs``.
    """
    if str(path) == "":
        raise InputError(f"{option} is an empty path; give a {'folder' if kind == 'dir' else 'file'}")
    target = Path(path)
    ins = [Path(p) for p in inputs if p is not None and str(p) != ""]
    again = f"choose another {option} or pass --overwrite"
    _check_parents(target, option)
    for p in ins:
        if _same(p, target) and (kind != "dir" or p.is_file()):
            raise InputError(f"{option} is this command's input and would be overwritten; choose another "
                             f"{option}", path=str(target))
    if kind == "dir":
        if target.exists() and not target.is_dir():
            raise InputError(f"{option} must be a folder, but this is a file", path=str(target))
        names = list(outputs)
        for p in ins:
            if p.is_file() and p.name in names and _same(p.parent, target):
                raise InputError(f"{option} would overwrite this command's input {p}; choose another "
                                 f"{option}", path=str(target))
        if target.is_dir() and not overwrite:
            inside = [p for p in ins if _inside(p, target)]
            if inside:
                raise InputError(f"holds this command's input {inside[0]}; {again}", path=str(target))
            earlier = [n for n in names if (target / n).exists()]
            if earlier:
                raise InputError(f"holds earlier results ({', '.join(earlier)}); {again}", path=str(target))
        return target
    if kind == "file" and target.is_dir():
        raise InputError(f"{option} is a folder; give a file path", path=str(target))
    if kind == "tree" and target.exists() and not target.is_dir():
        raise InputError(f"{option} must be a folder, but this is a file", path=str(target))
    if (target.exists() or target.is_symlink()) and not overwrite:
        raise InputError(f"already exists; {again}", path=str(target))
    return target
