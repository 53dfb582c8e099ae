"""The harness of the bad-input tables (``test_bad_inputs.py``, ``test_bad_inputs_tail.py``): the files every
case starts from, the argv builders, in-process file-system faults, and :func:`check_case`, the one check of a row.

Every case runs the CLI in-process on a fresh folder holding a good predictions file, two resolved eval folders, a
calibrator and a folder of earlier results, plus what the case adds. :func:`check_case` asserts the exit code; for a
refusal (exit 2) that stderr is one line under ``MAX_LINE`` characters starting ``calrl ...: error:`` with no
traceback; that the expected part (file, line, field, option) is in it; and that every file that existed before is
byte-identical afterwards, a refused run adding none.
"""

from __future__ import annotations

import builtins
import errno
import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from calrl.cli.main import main
from calrl.data.records import ResolvedRecord
from calrl.recalibration.calibrators import FORMAT

MAX_LINE = 300  # an error line is shorter than this (issue 20: long values are cut, with a count)

N_ITEMS = 40


def _rows(n: int = N_ITEMS) -> list[dict]:
    return [{"id": f"q{i}", "correct": i % 2 == 0, "confidence": round(0.05 + 0.9 * (i % 10) / 9, 3),
             "slice": {"domain": "ab"[i % 2]}} for i in range(n)]


def _jsonl(rows: list) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _resolved(shift: float = 0.0) -> str:
    recs = [ResolvedRecord(id=r["id"], abstained=False, correct=r["correct"],
                           confidence=min(1.0, r["confidence"] + shift), confidence_source="given",
                           hedged=False, slice=r["slice"]) for r in _rows()]
    return "".join(json.dumps(r.to_json()) + "\n" for r in recs)


def _calibrator(**changes) -> str:
    doc = {"format": FORMAT, "method": "temperature", "params": {"temperature": 2.0}, "n": 10,
           "nll_before": 0.7, "nll_after": 0.6, "eps": 1e-3}
    doc.update(changes)
    return json.dumps({k: v for k, v in doc.items() if v is not _DROP})


_DROP = object()

# files every case starts from (relative path -> text)
BASE_FILES = {
    "good.jsonl": _jsonl(_rows()),
    "base/resolved.jsonl": _resolved(),
    "base/metrics.json": "{}\n",
    "base/report.md": "# baseline eval report\n",
    "cand/resolved.jsonl": _resolved(0.02),
    "cal.json": _calibrator(),
    "prior/metrics.json": '{"earlier": true}\n',
    "prior/report.md": "# earlier\n",
    "prior/gate.json": '{"verdict": "pass"}\n',
    "afile.txt": "a regular file\n",
}

FIFO, FOLDER = object(), object()


@dataclass(frozen=True)
class Link:
    """A symbolic link to ``target`` (a path relative to the link's folder, or absolute)."""

    target: str


def _bad_row(**fields) -> str:
    """good.jsonl's first two rows, then a third row with ``fields`` replaced (line 3 is bad)."""
    rows = _rows(3)
    rows[2] = {**rows[2], **fields}
    rows[2] = {k: v for k, v in rows[2].items() if v is not _DROP}
    return _jsonl(rows)


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@dataclass
class Case:
    name: str
    argv: list[str]  # "{d}" is the case's folder
    code: int
    expect: str  # substring of the one-line stderr ("{d}" allowed)
    files: dict[str, object] = field(default_factory=dict)  # text, bytes, FIFO, FOLDER or a Link
    fault: Callable[[pytest.MonkeyPatch, Path], None] | None = None
    changes: tuple[str, ...] = ()  # earlier files a passing run may rewrite


def ev(*args: str) -> list[str]:
    return ["eval", *args]


def ev_p(name: str, *args: str) -> list[str]:
    """eval of {d}/name into a fresh {d}/out."""
    return ["eval", "--predictions", f"{{d}}/{name}", "--out", "{d}/out", *args]


def cmp(*args: str, out: str = "{d}/gate") -> list[str]:
    return ["compare", "--baseline", "{d}/base", "--candidate", "{d}/cand", "--out", out, *args]


def fit(*args: str, preds: str = "{d}/good.jsonl", out: str = "{d}/cal/new.json") -> list[str]:
    return ["recalibrate", "fit", "--predictions", preds, "--method", "temperature", "--out", out, *args]


def app(*args: str, cal: str = "{d}/cal.json", preds: str = "{d}/good.jsonl",
        out: str = "{d}/recal.jsonl") -> list[str]:
    return ["recalibrate", "apply", "--calibrator", cal, "--predictions", preds, "--out", out, *args]


# ----------------------------------------------------------------------------------------- faults
def _raise_in(target: str, err: int, after: int = 0):
    """A fault: the ``after``+1-th call of ``target`` (a function of calrl.io's modules) raises OSError."""

    def install(monkeypatch: pytest.MonkeyPatch, d: Path) -> None:
        import calrl.io as io_mod

        module, name = {"mkdtemp": (io_mod.tempfile, "mkdtemp"), "mkstemp": (io_mod.tempfile, "mkstemp"),
                        "replace": (io_mod.os, "replace"), "mkdir": (Path, "mkdir")}[target]
        real = getattr(module, name)
        calls = {"n": 0}

        def fake(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] > after:
                where = kwargs.get("dir") or (args[0] if args else d)
                raise OSError(err, os.strerror(err), str(where))
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, fake)

    return install


def _unreadable(rel: str, err: int = errno.EACCES):
    """A fault: opening ``{d}/rel`` for reading raises ``err`` (root reads anything, so in-process)."""

    def install(monkeypatch: pytest.MonkeyPatch, d: Path) -> None:
        import calrl.io as io_mod

        target = str(d / rel)

        def fake_open(file, mode="r", *args, **kwargs):
            if str(file) == target and "w" not in mode:
                raise OSError(err, os.strerror(err), str(file))
            return builtins.open(file, mode, *args, **kwargs)

        monkeypatch.setattr(io_mod, "open", fake_open, raising=False)

    return install


DISK_FULL = errno.ENOSPC

# ----------------------------------------------------------------------------------------- runner
def _make(root: Path, files: dict[str, object]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and not path.is_dir():
            path.unlink()
        if isinstance(content, Link):
            path.symlink_to(content.target)
        elif content is FIFO:
            os.mkfifo(path)
        elif content is FOLDER:
            path.mkdir(exist_ok=True)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root``: the bytes of regular files, None for folders and special files."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            mode = os.lstat(path).st_mode
            out[str(path.relative_to(root))] = path.read_bytes() if stat.S_ISREG(mode) else None
    return out


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse usage errors
        return int(exc.code)


def check_case(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run one row of a table and check it (see the module docstring); returns the stderr line."""
    d = tmp_path / "case"
    _make(d, BASE_FILES | case.files)
    monkeypatch.chdir(d)
    before = _snapshot(d)
    if case.fault is not None:
        case.fault(monkeypatch, d)
    argv = [a.replace("{d}", str(d)) for a in case.argv]

    code = _run(argv)
    monkeypatch.undo()
    captured = capsys.readouterr()
    err = captured.err.strip()

    assert code == case.code, (code, err, captured.out[-500:])
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    if case.code == 2:
        assert err.startswith("calrl") and ": error: " in err, err
        assert "\n" not in err, err
        assert len(err) < MAX_LINE, (len(err), err[:400])
    if case.expect:
        assert case.expect.replace("{d}", str(d)) in err, err
    after = _snapshot(d)
    for rel, content in before.items():
        assert rel in after, f"{rel} disappeared"
        if rel not in case.changes:
            assert after[rel] == content, f"{rel} changed"
    if case.code == 2:  # a refused or failed run writes nothing, not even a staging folder
        assert sorted(after) == sorted(before), sorted(set(after) - set(before))
    else:
        assert all(after[rel] != before[rel] for rel in case.changes)
    return err
