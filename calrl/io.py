"""File input and output: checked input paths, checked output locations, atomic and staged writes.

Output is never half-written: a file is written under a temporary name beside its target and renamed
onto it (:func:`atomic_path`); a set of files is built in a staging folder and each file renamed into
place once all of them are complete (:func:`staged_dir`, :func:`staged_files`). Before any work,
:func:`check_output` refuses an output location that would replace earlier results or the command's
own inputs, and :func:`check_input` refuses what cannot be read as a file (FIFO, device, missing).
JSON is read and written by :mod:`calrl.jsonio`.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from calrl.errors import FileSystemError, InputError, file_system_error

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
        yield from _decoded(path, enumerate(f, start=1), bom=True)


def _decoded(path: StrPath, lines: Iterable[tuple[int, bytes]], *, bom: bool) -> Iterator[tuple[int, str]]:
    """The lines decoded as UTF-8 (``bom``: a byte-order mark at the start of line 1 dropped)."""
    for line_no, raw in lines:
        if bom and line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            yield line_no, raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"not UTF-8 text ({exc.reason} at byte {exc.start} of the line)",
                             path=str(path), line=line_no) from None


# about 1,300 lines of a 200-byte-a-line predictions file: reading 10^6 of them into columns took 2.2 s of CPU
# in blocks of 256 KiB, 2.5 s in blocks of 64 KiB or 1 MiB, 3.2 s in blocks of 8 MiB (the columns of a block stay
# in the CPU caches)
LINE_BLOCK_BYTES = 1 << 18


def iter_line_blocks(path: StrPath, size: int | None = None) -> Iterator[tuple[int, int, bytes]]:
    """``(number of its first line, number of lines, bytes)`` of each block of whole lines of a file (about
    ``size`` bytes, default :data:`LINE_BLOCK_BYTES`, more when a line is longer), the lines exactly as
    :func:`iter_lines` splits them (at ``\\n``), not decoded; a leading byte-order mark is dropped."""
    size = size or LINE_BLOCK_BYTES
    first = 1
    with _open_for_reading(path) as f:
        while block := f.read(size):
            if not block.endswith(b"\n"):
                block += f.readline()
            if first == 1 and block.startswith(b"\xef\xbb\xbf"):
                block = block[3:]
            lines = block.count(b"\n") + (not block.endswith(b"\n"))
            yield first, lines, block
            first += lines


def block_lines(path: StrPath, first: int, block: bytes) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of each line of a block of :func:`iter_line_blocks`, as :func:`iter_lines` gives
    them (with its errors)."""
    pieces = block.split(b"\n")
    last = pieces.pop()  # b"" after a final newline
    numbered = enumerate([piece + b"\n" for piece in pieces] + ([last] if last else []), start=first)
    return _decoded(path, numbered, bom=False)  # iter_line_blocks dropped it


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
    import hashlib  # 3 ms (OpenSSL): calrl.io is on calrl --help's path (scripts/bench_startup.py)

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
