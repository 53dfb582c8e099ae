"""Bad input to ``calrl eval``, ``compare`` and ``recalibrate``: one table, one check per row.

Every case runs the CLI in-process on a fresh folder holding a good predictions file, two resolved
eval folders, a calibrator and a folder of earlier results, plus what the case adds. It asserts the
exit code, that stderr is one line naming the file, line, option or key (no traceback), and that
every file that existed before is byte-identical afterwards; a run that fails writes nothing at all.
File-system faults that root would bypass (read-only folders, permissions) come from a path under a
regular file, or from ``OSError`` raised in-process where calrl creates, opens or writes files.
"""

from __future__ import annotations

import builtins
import dataclasses
import errno
import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from calrl.cli.main import main
from calrl.eval.calibrators import FORMAT
from calrl.eval.records import ResolvedRecord

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
    files: dict[str, object] = field(default_factory=dict)  # text, bytes, FIFO or FOLDER
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

# ------------------------------------------------------------------------------------------ cases
EVAL_CASES = [
    # missing, empty and special inputs
    Case("missing file", ev_p("nope.jsonl"), 2, "nope.jsonl: file not found"),
    Case("empty file", ev_p("e.jsonl"), 2, "e.jsonl: no predictions in the file (empty input)", {"e.jsonl": ""}),
    Case("blank lines only", ev_p("e.jsonl"), 2, "e.jsonl: no predictions", {"e.jsonl": "\n  \n\n"}),
    Case("BOM only", ev_p("e.jsonl"), 2, "e.jsonl: no predictions", {"e.jsonl": "\ufeff"}),
    Case("plain folder", ev_p("dir"), 2, "dir: not a saved datasets folder", {"dir": FOLDER}),
    Case("unknown extension", ev_p("p.txt"), 2, "p.txt: unknown format '.txt'", {"p.txt": "{}"}),
    Case("no extension", ev_p("p"), 2, "p: unknown format '(no extension)'", {"p": "{}"}),
    Case("FIFO input", ev_p("pipe.jsonl"), 2, "pipe.jsonl: is a FIFO (named pipe), not a regular file",
         {"pipe.jsonl": FIFO}),
    Case("character device input", ev("--predictions", "/dev/null", "--out", "{d}/out"), 2,
         "/dev/null: is a character device"),
    Case("unreadable input", ev_p("good.jsonl"), 2, "good.jsonl: cannot read: permission denied",
         fault=_unreadable("good.jsonl")),
    Case("input I/O error", ev_p("good.jsonl"), 2, "good.jsonl: cannot read: input/output error",
         fault=_unreadable("good.jsonl", errno.EIO)),
    Case("latin-1 text", ev_p("l.jsonl"), 2, "l.jsonl:1: not UTF-8 text",
         {"l.jsonl": '{"id": "caf\xe9"}\n'.encode("latin-1")}),
    Case("UTF-16 text", ev_p("u.jsonl"), 2, "u.jsonl:1: not UTF-8 text",
         {"u.jsonl": _jsonl(_rows(2)).encode("utf-16")}),
    Case("bad byte on line 3", ev_p("b.jsonl"), 2, "b.jsonl:3: not UTF-8 text",
         {"b.jsonl": _jsonl(_rows(2)).encode() + b'{"id": "\xff"}\n'}),
    # JSON structure, with the line
    Case("malformed JSON line 3", ev_p("b.jsonl"), 2, "b.jsonl:3: malformed JSON",
         {"b.jsonl": _jsonl(_rows(2)) + '{"id": "x",\n'}),
    Case("truncated object", ev_p("b.jsonl"), 2, "b.jsonl:2: malformed JSON: Expecting",
         {"b.jsonl": _jsonl(_rows(1)) + '{"id": "x", "correct": tr'}),
    Case("single quotes", ev_p("b.jsonl"), 2, "b.jsonl:1: malformed JSON", {"b.jsonl": "{'id': 'x'}\n"}),
    Case("trailing comma", ev_p("b.jsonl"), 2, "b.jsonl:1: malformed JSON", {"b.jsonl": '{"id": "x",}\n'}),
    Case("array line", ev_p("b.jsonl"), 2, "b.jsonl:2: expected a JSON object per line, got a list",
         {"b.jsonl": _jsonl(_rows(1)) + "[1, 2]\n"}),
    Case("string line", ev_p("b.jsonl"), 2, "b.jsonl:1: expected a JSON object per line, got a string",
         {"b.jsonl": '"text"\n'}),
    Case("number line", ev_p("b.jsonl"), 2, "b.jsonl:1: expected a JSON object per line, got a number",
         {"b.jsonl": "42\n"}),
    Case("null line", ev_p("b.jsonl"), 2, "b.jsonl:1: expected a JSON object per line, got null",
         {"b.jsonl": "null\n"}),
    Case("nested 100000 deep", ev_p("d.jsonl"), 2, "d.jsonl:2: JSON nested deeper than 64 levels",
         {"d.jsonl": _jsonl(_rows(1)) + _deep(100_000) + "\n"}),
    Case("nested 65 deep", ev_p("d.jsonl"), 2, "d.jsonl:1: JSON nested deeper than 64 levels",
         {"d.jsonl": _deep(65) + "\n"}),
    Case("deep slice value", ev_p("d.jsonl"), 2, "d.jsonl:3: JSON nested deeper than 64",
         {"d.jsonl": _bad_row(slice={"x": json.loads(_deep(70))})}),
    Case("BOM then malformed line 2", ev_p("b.jsonl"), 2, "b.jsonl:2: malformed JSON",
         {"b.jsonl": "\ufeff" + _jsonl(_rows(1)) + "{oops\n"}),
    # field values, with line and field
    Case("confidence NaN", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'confidence': nan is outside [0, 1]",
         {"b.jsonl": _jsonl(_rows(2)) + '{"id": "x", "correct": true, "confidence": NaN}\n'}),
    Case("confidence Infinity", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'confidence': inf is outside",
         {"b.jsonl": _jsonl(_rows(2)) + '{"id": "x", "correct": true, "confidence": Infinity}\n'}),
    Case("confidence -Infinity", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'confidence': -inf is outside",
         {"b.jsonl": _jsonl(_rows(2)) + '{"id": "x", "correct": true, "confidence": -Infinity}\n'}),
    Case("confidence 1e309", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'confidence': inf is outside",
         {"b.jsonl": _jsonl(_rows(2)) + '{"id": "x", "correct": true, "confidence": 1e309}\n'}),
    Case("confidence 1.5", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'confidence': 1.5 is outside [0, 1]",
         {"b.jsonl": _bad_row(confidence=1.5)}),
    Case("confidence -0.1", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'confidence': -0.1 is outside",
         {"b.jsonl": _bad_row(confidence=-0.1)}),
    Case("confidence 100 (percent)", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'confidence': 100 is outside",
         {"b.jsonl": _bad_row(confidence=100)}),
    Case("confidence text", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'confidence': expected a number",
         {"b.jsonl": _bad_row(confidence="high")}),
    Case("confidence boolean", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'confidence': expected a number",
         {"b.jsonl": _bad_row(confidence=True)}),
    Case("confidence list", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'confidence': expected a number",
         {"b.jsonl": _bad_row(confidence=[0.5])}),
    Case("confidence object", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'confidence': expected a number",
         {"b.jsonl": _bad_row(confidence={"v": 0.5})}),
    Case("id missing", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'id': missing", {"b.jsonl": _bad_row(id=_DROP)}),
    Case("id null", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'id': missing", {"b.jsonl": _bad_row(id=None)}),
    Case("id boolean", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'id': expected a string, got a boolean",
         {"b.jsonl": _bad_row(id=True)}),
    Case("id list", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'id': expected a string, got a list",
         {"b.jsonl": _bad_row(id=["q"])}),
    Case("id object", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'id': expected a string, got an object",
         {"b.jsonl": _bad_row(id={"q": 1})}),
    Case("id empty", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'id': empty", {"b.jsonl": _bad_row(id="")}),
    Case("id blank", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'id': empty", {"b.jsonl": _bad_row(id="   ")}),
    Case("duplicate id", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'id': duplicate id 'q0' (lines 1 and 3)",
         {"b.jsonl": _bad_row(id="q0")}),
    Case("duplicate id number and text", ev_p("b.jsonl"), 2, "b.jsonl:2: field 'id': duplicate id '7'",
         {"b.jsonl": '{"id": "7", "correct": true, "confidence": 0.5}\n'
                     '{"id": 7, "correct": true, "confidence": 0.5}\n'}),
    Case("response number", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'response': expected a string, got a number",
         {"b.jsonl": _bad_row(response=5)}),
    Case("response list", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'response': expected a string",
         {"b.jsonl": _bad_row(response=["a"])}),
    Case("question number", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'question': expected a string",
         {"b.jsonl": _bad_row(question=1)}),
    Case("reference number", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'reference': expected a string or a list",
         {"b.jsonl": _bad_row(reference=4)}),
    Case("reference list of numbers", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'reference'",
         {"b.jsonl": _bad_row(reference=[4, 5])}),
    Case("correct text", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'correct': expected true, false or null",
         {"b.jsonl": _bad_row(correct="yes")}),
    Case("correct number", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'correct': expected true, false or null",
         {"b.jsonl": _bad_row(correct=1)}),
    Case("abstained text", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'abstained': expected true, false or null",
         {"b.jsonl": _bad_row(abstained="no")}),
    Case("slice list", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'slice': expected a string or an object",
         {"b.jsonl": _bad_row(slice=["a"])}),
    Case("slice number", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'slice': expected a string or an object",
         {"b.jsonl": _bad_row(slice=3)}),
    Case("slice value number", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'slice': value of 'domain' is a number",
         {"b.jsonl": _bad_row(slice={"domain": 3})}),
    Case("slice value object", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'slice': value of 'domain' is an object",
         {"b.jsonl": _bad_row(slice={"domain": {"x": "y"}})}),
    Case("samples text", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'samples': expected a list of strings",
         {"b.jsonl": _bad_row(samples="a")}),
    Case("samples numbers", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'samples': item 0 is a number",
         {"b.jsonl": _bad_row(samples=[1])}),
    Case("choices object", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'choices': expected a list of strings",
         {"b.jsonl": _bad_row(choices={"a": "b"})}),
    Case("nothing to score", ev_p("b.jsonl"), 2, "b.jsonl:3: neither 'response' nor both 'correct'",
         {"b.jsonl": _bad_row(correct=_DROP, confidence=_DROP)}),
    Case("abstained and correct", ev_p("b.jsonl"), 2, "b.jsonl:3: id 'q2': 'abstained' and 'correct' are both true",
         {"b.jsonl": _bad_row(abstained=True, correct=True)}),
    Case("no reference to grade", ev_p("b.jsonl"), 2, "b.jsonl:3: id 'q2': no 'reference' to grade",
         {"b.jsonl": _bad_row(correct=_DROP, response="Paris. Confidence: 8")}),
    Case("missing confidence under policy error", ev_p("b.jsonl", "--missing-confidence", "error"), 2,
         "b.jsonl: id 'q2' has no confidence", {"b.jsonl": _bad_row(confidence=None)}),
    # CSV and Parquet
    Case("CSV extra cells", ev_p("p.csv"), 2, "p.csv:2: more cells than header columns",
         {"p.csv": "id,correct,confidence\nq1,true,0.5,extra\n"}),
    Case("CSV bad JSON cell", ev_p("p.csv"), 2, "p.csv:2: field 'reference': malformed JSON in CSV cell",
         {"p.csv": 'id,response,reference\nq1,x,"[""4"""\n'}),
    Case("CSV deep JSON cell", ev_p("p.csv"), 2, "p.csv:2: field 'slice': JSON in CSV cell nested deeper",
         {"p.csv": f'id,correct,confidence,slice\nq1,true,0.5,"{{""a"": {_deep(80)}}}"\n'}),
    Case("CSV confidence text", ev_p("p.csv"), 2, "p.csv:2: field 'confidence': expected a number",
         {"p.csv": "id,correct,confidence\nq1,true,high\n"}),
    Case("CSV confidence 2", ev_p("p.csv"), 2, "p.csv:3: field 'confidence': 2 is outside [0, 1]",
         {"p.csv": "id,correct,confidence\nq1,true,0.5\nq2,true,2\n"}),
    Case("CSV confidence nan", ev_p("p.csv"), 2, "p.csv:2: field 'confidence': nan is outside",
         {"p.csv": "id,correct,confidence\nq1,true,nan\n"}),
    Case("CSV correct maybe", ev_p("p.csv"), 2, "p.csv:2: field 'correct': expected true, false or null",
         {"p.csv": "id,correct,confidence\nq1,maybe,0.5\n"}),
    Case("CSV samples text", ev_p("p.csv"), 2, "p.csv:2: field 'samples': expected a JSON list",
         {"p.csv": "id,correct,confidence,samples\nq1,true,0.5,abc\n"}),
    Case("CSV header only", ev_p("p.csv"), 2, "p.csv: no predictions", {"p.csv": "id,correct,confidence\n"}),
    Case("CSV slice and slice columns", ev_p("p.csv"), 2, "p.csv:2: field 'slice': give either",
         {"p.csv": "id,correct,confidence,slice,slice.d\nq1,true,0.5,a,b\n"}),
    Case("CSV BOM then bad row", ev_p("p.csv"), 2, "p.csv:3: field 'confidence'",
         {"p.csv": "\ufeffid,correct,confidence\nq1,true,0.5\nq2,true,7\n"}),
    Case("CSV without id column", ev_p("p.csv"), 2, "p.csv:2: field 'id': missing",
         {"p.csv": "correct,confidence\ntrue,0.5\n"}),
    Case("CSV not UTF-8", ev_p("p.csv"), 2, "p.csv: not UTF-8 text", {"p.csv": b"id,response\nq1,caf\xe9\n"}),
    Case("CSV FIFO", ev_p("p.csv"), 2, "p.csv: is a FIFO", {"p.csv": FIFO}),
    Case("Parquet garbage", ev_p("p.parquet"), 2, "p.parquet: cannot read Parquet", {"p.parquet": b"not parquet"}),
    Case("Parquet empty file", ev_p("p.parquet"), 2, "p.parquet: cannot read Parquet", {"p.parquet": b""}),
    # options
    Case("--bins 0", ev_p("good.jsonl", "--bins", "0"), 2, "argument --bins: must be from 1 to 1000, got 0"),
    Case("--bins -3", ev_p("good.jsonl", "--bins", "-3"), 2, "argument --bins: must be from 1 to 1000"),
    Case("--bins 1001", ev_p("good.jsonl", "--bins", "1001"), 2, "argument --bins: must be from 1 to 1000, got 1001"),
    Case("--bins 1000000", ev_p("good.jsonl", "--bins", "1000000"), 2, "argument --bins: must be from 1 to 1000"),
    Case("--bins text", ev_p("good.jsonl", "--bins", "many"), 2, "argument --bins: expected an integer, got 'many'"),
    Case("--bins float", ev_p("good.jsonl", "--bins", "1.5"), 2, "argument --bins: expected an integer"),
    Case("--bootstrap -1", ev_p("good.jsonl", "--bootstrap", "-1"), 2, "argument --bootstrap: must be from 0 to 10000, got -1"),
    Case("--min-slice-size -1", ev_p("good.jsonl", "--min-slice-size", "-1"), 2, "argument --min-slice-size"),
    Case("--missing-confidence bogus", ev_p("good.jsonl", "--missing-confidence", "x"), 2,
         "argument --missing-confidence: invalid choice: 'x'"),
    Case("--grader bogus", ev_p("good.jsonl", "--grader", "fuzzy"), 2, "field 'grader': unknown grader 'fuzzy'"),
    Case("--seed text", ev_p("good.jsonl", "--seed", "abc"), 2, "argument --seed: expected an integer, got"),
    Case("unknown option", ev_p("good.jsonl", "--frobnicate"), 2, "unrecognized arguments: --frobnicate"),
    Case("no --out", ev("--predictions", "{d}/good.jsonl"), 2, "the following arguments are required: --out"),
    Case("no source", ev("--out", "{d}/out"), 2, "one of the arguments --predictions --model is required"),
    Case("both sources", ev("--predictions", "{d}/good.jsonl", "--model", "m", "--out", "{d}/out"), 2,
         "argument --model: not allowed with argument --predictions"),
    Case("--dataset without --model", ev_p("good.jsonl", "--dataset", "gsm8k"), 2,
         "only apply with --model"),
    # output location
    Case("--out empty", ev("--predictions", "{d}/good.jsonl", "--out", ""), 2, "--out is an empty path"),
    Case("--out a file", ev("--predictions", "{d}/good.jsonl", "--out", "{d}/afile.txt"), 2,
         "afile.txt: --out must be a folder, but this is a file"),
    Case("--out under a file", ev("--predictions", "{d}/good.jsonl", "--out", "{d}/afile.txt/out"), 2,
         "{d}/afile.txt/out: afile.txt is a file, not a folder: cannot create --out here"),
    Case("--out deep under a file", ev("--predictions", "{d}/good.jsonl", "--out", "{d}/afile.txt/a/b"), 2,
         "{d}/afile.txt/a/b: afile.txt is a file, not a folder"),
    Case("--out holds earlier results", ev("--predictions", "{d}/good.jsonl", "--out", "{d}/prior"), 2,
         "prior: holds earlier results (metrics.json, report.md); choose another --out or pass --overwrite"),
    Case("--out holds the input", ev("--predictions", "{d}/in/p.jsonl", "--out", "{d}/in"), 2,
         "in: holds this command's input", {"in/p.jsonl": _jsonl(_rows())}),
    Case("--out is the current folder with the input", ev("--predictions", "good.jsonl", "--out", "."), 2,
         "holds this command's input"),
    Case("input resolved.jsonl in --out", ev("--predictions", "{d}/r/resolved.jsonl", "--out", "{d}/r",
                                             "--overwrite"), 2,
         "--out would overwrite this command's input", {"r/resolved.jsonl": _jsonl(_rows())}),
    Case("input metrics.json in --out", ev("--predictions", "{d}/r/metrics.json", "--out", "{d}/r",
                                           "--overwrite"), 2,
         "--out would overwrite this command's input", {"r/metrics.json": _jsonl(_rows())}),
    Case("staging folder not permitted", ev_p("good.jsonl", "--bootstrap", "0"), 2,
         "{d}: permission denied", fault=_raise_in("mkdtemp", errno.EACCES)),
    Case("read-only file system", ev_p("good.jsonl", "--bootstrap", "0"), 2, "read-only file system",
         fault=_raise_in("mkdtemp", errno.EROFS)),
    Case("disk full on the first file", ev_p("good.jsonl", "--bootstrap", "0"), 2,
         "no space left on device (disk full)", fault=_raise_in("mkstemp", DISK_FULL)),
    Case("disk full on the third file", ev_p("good.jsonl", "--bootstrap", "0"), 2,
         "no space left on device (disk full)", fault=_raise_in("mkstemp", DISK_FULL, after=2)),
    Case("quota exceeded", ev_p("good.jsonl", "--bootstrap", "0"), 2, "disk quota exceeded",
         fault=_raise_in("mkstemp", errno.EDQUOT, after=1)),
    Case("rename fails", ev_p("good.jsonl", "--bootstrap", "0"), 2, "input/output error",
         fault=_raise_in("replace", errno.EIO)),
    # accepted neighbours: the run passes and rewrites only what it may
    Case("JSONL with BOM is read", ev_p("bom.jsonl", "--bootstrap", "0"), 0, "",
         {"bom.jsonl": "\ufeff" + _jsonl(_rows())}),
    Case("--overwrite replaces earlier results", ev("--predictions", "{d}/good.jsonl", "--out", "{d}/prior",
                                                    "--bootstrap", "0", "--overwrite"), 0, "",
         changes=("prior/metrics.json", "prior/report.md")),
    Case("--bins 1000 is allowed", ev_p("good.jsonl", "--bootstrap", "0", "--bins", "1000"), 0, ""),
]

COMPARE_CASES = [
    Case("baseline missing", ["compare", "--baseline", "{d}/nope", "--candidate", "{d}/cand", "--out", "{d}/g"],
         2, "nope: file not found"),
    Case("candidate missing", ["compare", "--baseline", "{d}/base", "--candidate", "{d}/nope", "--out", "{d}/g"],
         2, "nope: file not found"),
    Case("baseline a FIFO", ["compare", "--baseline", "{d}/p.jsonl", "--candidate", "{d}/cand", "--out", "{d}/g"],
         2, "p.jsonl: is a FIFO", {"p.jsonl": FIFO}),
    Case("resolved.jsonl a FIFO", cmp(), 2, "resolved.jsonl: is a FIFO", {"cand/resolved.jsonl": FIFO}),
    Case("folder without records", ["compare", "--baseline", "{d}/empty", "--candidate", "{d}/cand", "--out",
                                    "{d}/g"], 2, "empty: no resolved.jsonl, predictions.jsonl or metrics.json",
         {"empty": FOLDER}),
    Case("resolved malformed", cmp(), 2, "cand/resolved.jsonl:2: malformed JSON",
         {"cand/resolved.jsonl": _resolved().splitlines()[0] + "\n{nope\n"}),
    Case("resolved deep", cmp(), 2, "cand/resolved.jsonl:1: JSON nested deeper than 64",
         {"cand/resolved.jsonl": _deep(100_000) + "\n"}),
    Case("resolved not an object", cmp(), 2, "cand/resolved.jsonl:1: expected a JSON object per line",
         {"cand/resolved.jsonl": "[1]\n"}),
    Case("resolved empty", cmp(), 2, "cand/resolved.jsonl: no records (empty input)", {"cand/resolved.jsonl": ""}),
    Case("resolved not UTF-8", cmp(), 2, "cand/resolved.jsonl:1: not UTF-8 text",
         {"cand/resolved.jsonl": b'{"id": "\xff"}\n'}),
    Case("resolved BOM then bad line", cmp(), 2, "cand/resolved.jsonl:2: field 'abstained'",
         {"cand/resolved.jsonl": "\ufeff" + _resolved().splitlines()[0] + '\n{"id": "z"}\n'}),
    *[Case(f"resolved {name} = {value!r}", cmp(), 2, f"cand/resolved.jsonl:1: field '{name}'",
           {"cand/resolved.jsonl": json.dumps({**json.loads(_resolved().splitlines()[0]), name: value}) + "\n"})
      for name, value in (("id", 5), ("abstained", "no"), ("correct", None), ("confidence_source", 1),
                          ("hedged", 0), ("confidence", 1.5), ("confidence", -1), ("confidence", "x"),
                          ("confidence", True), ("slice", ["a"]), ("slice", {"k": 1}), ("samples", "s"),
                          ("reference", 3), ("answer", 4), ("response", ["r"]))],
    Case("resolved NaN confidence", cmp(), 2, "cand/resolved.jsonl:1: field 'confidence'",
         {"cand/resolved.jsonl": '{"id": "q0", "abstained": false, "correct": true, "confidence": NaN, '
                                 '"confidence_source": "given", "hedged": false}\n'}),
    Case("resolved duplicate id", cmp(), 2, "cand/resolved.jsonl:2: field 'id': duplicate id 'q0'",
         {"cand/resolved.jsonl": _resolved().splitlines()[0] + "\n" + _resolved().splitlines()[0] + "\n"}),
    Case("no shared id", cmp(), 2, "field 'id': baseline (40 items) and candidate (1 items) share no id "
         "(baseline {d}/base/resolved.jsonl, candidate {d}/cand/resolved.jsonl)",
         {"cand/resolved.jsonl": _resolved().splitlines()[0].replace('"q0"', '"zz"') + "\n"}),
    Case("metrics.json without source", ["compare", "--baseline", "{d}/m", "--candidate", "{d}/cand", "--out",
                                         "{d}/g"], 2, "m/metrics.json: field 'source': no item-level records",
         {"m/metrics.json": "{}"}),
    Case("metrics.json malformed", ["compare", "--baseline", "{d}/m", "--candidate", "{d}/cand", "--out",
                                    "{d}/g"], 2, "m/metrics.json:1: malformed JSON", {"m/metrics.json": "{"}),
    Case("metrics.json source gone", ["compare", "--baseline", "{d}/m", "--candidate", "{d}/cand", "--out",
                                      "{d}/g"], 2, "m/metrics.json: field 'source': the predictions file",
         {"m/metrics.json": '{"source": "gone.jsonl"}'}),
    Case("candidate predictions bad line", ["compare", "--baseline", "{d}/base", "--candidate", "{d}/b.jsonl",
                                            "--out", "{d}/g"], 2, "b.jsonl:3: field 'confidence'",
         {"b.jsonl": _bad_row(confidence=3)}),
    Case("candidate predictions no reference", ["compare", "--baseline", "{d}/base", "--candidate",
                                                "{d}/b.jsonl", "--out", "{d}/g"], 2,
         "b.jsonl:3: id 'q2': no 'reference'", {"b.jsonl": _bad_row(correct=_DROP, response="x")}),
    Case("missing policy error", ["compare", "--baseline", "base", "--candidate", "cand", "--out", "g",
                                  "--missing-confidence", "error"], 2,
         "field 'confidence': 1 answered item(s) of the candidate have no confidence (first: id 'q0'); choose "
         "another missing-confidence policy (baseline base/resolved.jsonl, candidate cand/resolved.jsonl)",
         {"cand/resolved.jsonl": _resolved().replace('"confidence": 0.05,', '"confidence": null,', 1)}),
    # options
    Case("--out empty", cmp(out=""), 2, "argument --out: empty path"),
    Case("--out a file", cmp(out="{d}/afile.txt"), 2, "afile.txt: --out must be a folder"),
    Case("--out under a file", cmp(out="{d}/afile.txt/g"), 2, "{d}/afile.txt/g: afile.txt is a file, not a folder"),
    Case("--out the baseline's eval folder", cmp(out="{d}/base"), 2,
         "base: holds this command's input {d}/base; choose another --out or pass --overwrite"),
    Case("--out holds an earlier gate", cmp(out="{d}/prior"), 2, "prior: holds earlier results (gate.json"),
    Case("--bins 0", cmp("--bins", "0"), 2, "argument --bins: must be from 1 to 1000"),
    Case("--bins 1001", cmp("--bins", "1001"), 2, "argument --bins: must be from 1 to 1000"),
    Case("--bins text", cmp("--bins", "x"), 2, "argument --bins: expected an integer"),
    Case("--bootstrap -5", cmp("--bootstrap", "-5"), 2, "argument --bootstrap: must be from 0 to 10000, got -5"),
    Case("--seed text", cmp("--seed", "s"), 2, "argument --seed: expected an integer, got 's'"),
    Case("--refusal-collapse-factor 1", cmp("--refusal-collapse-factor", "1"), 2,
         "field 'refusal_collapse_factor': must be a finite number > 1"),
    Case("--refusal-collapse-factor nan", cmp("--refusal-collapse-factor", "nan"), 2,
         "argument --refusal-collapse-factor: must be a finite number"),
    Case("--refusal-collapse-factor inf", cmp("--refusal-collapse-factor", "inf"), 2,
         "argument --refusal-collapse-factor: must be a finite number"),
    Case("--refusal-collapse-factor text", cmp("--refusal-collapse-factor", "five"), 2,
         "argument --refusal-collapse-factor: expected a number"),
    Case("--max-refusal-rate 1.5", cmp("--max-refusal-rate", "1.5"), 2, "field 'max_refusal_rate': must be in [0, 1]"),
    Case("--max-refusal-rate -0.1", cmp("--max-refusal-rate", "-0.1"), 2, "field 'max_refusal_rate'"),
    Case("--max-accuracy-drop 1", cmp("--max-accuracy-drop", "1"), 2, "field 'max_accuracy_drop': must be in [0, 1)"),
    Case("--max-accuracy-drop -0.1", cmp("--max-accuracy-drop", "-0.1"), 2, "field 'max_accuracy_drop'"),
    Case("--slice-ece-threshold 2", cmp("--slice-ece-threshold", "2"), 2, "field 'slice_ece_threshold'"),
    Case("--min-slice-size 0", cmp("--min-slice-size", "0"), 2, "argument --min-slice-size: must be from 1 to 1000000000, got 0"),
    Case("--collapse-spread-ratio 0", cmp("--collapse-spread-ratio", "0"), 2, "field 'collapse_spread_ratio'"),
    Case("--collapse-spread-ratio 1.5", cmp("--collapse-spread-ratio", "1.5"), 2, "field 'collapse_spread_ratio'"),
    Case("--missing-confidence bogus", cmp("--missing-confidence", "skip"), 2,
         "argument --missing-confidence: invalid choice"),
    Case("--missing-policy (old name) bogus", cmp("--missing-policy", "skip"), 2, "argument --missing-policy"),
    Case("unknown option", cmp("--strict"), 2, "unrecognized arguments: --strict"),
    Case("no --candidate", ["compare", "--baseline", "{d}/base", "--out", "{d}/g"], 2,
         "the following arguments are required: --candidate"),
    # file-system faults while writing the gate
    Case("staging not permitted", cmp("--bootstrap", "0"), 2, "permission denied",
         fault=_raise_in("mkdtemp", errno.EACCES)),
    Case("disk full writing gate.json", cmp("--bootstrap", "0"), 2, "no space left on device (disk full)",
         fault=_raise_in("mkstemp", DISK_FULL)),
    Case("disk full writing the report", cmp("--bootstrap", "0"), 2, "no space left on device",
         fault=_raise_in("mkstemp", DISK_FULL, after=2)),
    Case("unreadable resolved.jsonl", cmp(), 2, "base/resolved.jsonl: cannot read: permission denied",
         fault=_unreadable("base/resolved.jsonl")),
    # accepted neighbours
    Case("--overwrite into the baseline's folder", cmp("--bootstrap", "0", "--overwrite", out="{d}/base"), 0, "",
         changes=("base/report.md",)),
    Case("resolved.jsonl with BOM is read", cmp("--bootstrap", "0"), 0, "",
         {"cand/resolved.jsonl": "\ufeff" + _resolved(0.02)}),
]

FIT_CASES = [
    Case("fit missing predictions", fit(preds="{d}/nope.jsonl"), 2, "nope.jsonl: file not found"),
    Case("fit FIFO predictions", fit(preds="{d}/p.jsonl"), 2, "p.jsonl: is a FIFO", {"p.jsonl": FIFO}),
    Case("fit unknown method", ["recalibrate", "fit", "--predictions", "{d}/good.jsonl", "--method", "magic",
                                "--out", "{d}/c.json"], 2, "field 'method': unknown method 'magic'"),
    Case("fit --out not JSON", fit(out="{d}/c.txt"), 2, "c.txt: the calibrator is written as JSON"),
    Case("fit --out empty", fit(out=""), 2, "argument --out: empty path"),
    Case("fit --out exists", fit(out="{d}/cal.json"), 2, "cal.json: already exists; choose another --out or pass --overwrite"),
    Case("fit --out is the input", fit("--overwrite", preds="{d}/p.json", out="{d}/p.json"), 2,
         "p.json: --out is this command's input", {"p.json": _jsonl(_rows())}),
    Case("fit report exists", fit(out="{d}/cal/new.json"), 2, "new_report.md: already exists",
         {"cal/new_report.md": "# earlier\n"}),
    Case("fit --out under a file", fit(out="{d}/afile.txt/c.json"), 2, "{d}/afile.txt/c.json: afile.txt is a file, not a folder"),
    Case("fit --out a folder", fit(out="{d}/x.json"), 2, "x.json: --out is a folder", {"x.json": FOLDER}),
    Case("fit --report-dir under a file", fit("--report-dir", "{d}/afile.txt/r"), 2,
         "afile.txt is a file, not a folder: cannot create --report-dir here"),
    Case("fit --report-dir empty", fit("--report-dir", ""), 2, "argument --report-dir: empty path"),
    Case("fit --holdout-fraction 0", fit("--holdout-fraction", "0"), 2, "field 'holdout-fraction': must be in (0, 1)"),
    Case("fit --holdout-fraction 1", fit("--holdout-fraction", "1"), 2, "field 'holdout-fraction'"),
    Case("fit --holdout-fraction nan", fit("--holdout-fraction", "nan"), 2,
         "argument --holdout-fraction: must be a finite number"),
    Case("fit --bins 0", fit("--bins", "0"), 2, "argument --bins: must be from 1 to 1000"),
    Case("fit --bins 5000", fit("--bins", "5000"), 2, "argument --bins: must be from 1 to 1000"),
    Case("fit both splits", fit("--holdout-fraction", "0.2", "--eval-predictions", "{d}/good.jsonl"), 2,
         "argument --eval-predictions: not allowed with argument --holdout-fraction"),
    Case("fit all correct", fit(preds="{d}/c.jsonl"), 2, "c.jsonl: field 'correct': all 28 items are correct: "
         "temperature scaling needs both", {"c.jsonl": _jsonl([{**r, "correct": True} for r in _rows()])}),
    Case("fit all wrong (Platt)", ["recalibrate", "fit", "--predictions", "{d}/w.jsonl", "--method", "platt",
                                   "--out", "{d}/c.json"], 2, "w.jsonl: field 'correct': all 28 items are wrong",
         {"w.jsonl": _jsonl([{**r, "correct": False} for r in _rows()])}),
    Case("fit nothing scored", fit(preds="{d}/a.jsonl"), 2, "a.jsonl: no answered item with a confidence",
         {"a.jsonl": _jsonl([{"id": f"a{i}", "abstained": True} for i in range(5)])}),
    Case("fit one item", fit(preds="{d}/one.jsonl"), 2, "one.jsonl: 1 scored items cannot be split",
         {"one.jsonl": _jsonl(_rows(1))}),
    Case("fit bad line", fit(preds="{d}/b.jsonl"), 2, "b.jsonl:3: field 'confidence'",
         {"b.jsonl": _bad_row(confidence="x")}),
    Case("fit deep line", fit(preds="{d}/d.jsonl"), 2, "d.jsonl:1: JSON nested deeper", {"d.jsonl": _deep(500) + "\n"}),
    Case("fit eval file missing", fit("--eval-predictions", "{d}/nope.jsonl"), 2, "nope.jsonl: file not found"),
    Case("fit eval file FIFO", fit("--eval-predictions", "{d}/e.jsonl"), 2, "e.jsonl: is a FIFO", {"e.jsonl": FIFO}),
    Case("fit eval file bad", fit("--eval-predictions", "{d}/e.jsonl"), 2, "e.jsonl:3: field 'id'",
         {"e.jsonl": _bad_row(id=[1])}),
    Case("fit unknown option", fit("--temperature", "2"), 2, "unrecognized arguments: --temperature"),
    Case("fit disk full", fit(), 2, "no space left on device (disk full)", fault=_raise_in("mkstemp", DISK_FULL)),
    Case("fit disk full on the last file", fit(), 2, "no space left on device",
         fault=_raise_in("mkstemp", DISK_FULL, after=3)),
    Case("fit not permitted", fit(), 2, "permission denied", fault=_raise_in("mkdtemp", errno.EACCES)),
    Case("fit cannot create the folder", fit(), 2, "permission denied", fault=_raise_in("mkdir", errno.EACCES)),
    Case("recalibrate without action", ["recalibrate"], 2, "the following arguments are required: action"),
    Case("recalibrate unknown action", ["recalibrate", "tune"], 2, "argument action: invalid choice: 'tune'"),
    # accepted neighbour: the fit file as the eval file passes with a warning
    Case("fit on its own eval file warns", fit("--eval-predictions", "{d}/good.jsonl"), 0,
         "40 of the 40 evaluation items are also fit items (--eval-predictions is the --predictions file)"),
]

APPLY_CASES = [
    Case("apply calibrator missing", app(cal="{d}/nope.json"), 2, "nope.json: file not found"),
    Case("apply calibrator FIFO", app(cal="{d}/c.json"), 2, "c.json: is a FIFO", {"c.json": FIFO}),
    Case("apply calibrator a folder", app(cal="{d}/c.json"), 2, "c.json: is a folder, expected a file",
         {"c.json": FOLDER}),
    Case("apply calibrator unreadable", app(), 2, "cal.json: cannot read: permission denied",
         fault=_unreadable("cal.json")),
    Case("apply calibrator malformed", app(cal="{d}/c.json"), 2, "c.json:2: malformed JSON", {"c.json": "{\n,"}),
    Case("apply calibrator empty", app(cal="{d}/c.json"), 2, "c.json:1: malformed JSON", {"c.json": ""}),
    Case("apply calibrator deep", app(cal="{d}/c.json"), 2, "c.json: JSON nested deeper than 64",
         {"c.json": _deep(100_000)}),
    Case("apply calibrator a list", app(cal="{d}/c.json"), 2, "c.json: expected a JSON object", {"c.json": "[]"}),
    Case("apply calibrator not UTF-8", app(cal="{d}/c.json"), 2, "c.json: not UTF-8 text",
         {"c.json": b'{"format": "\xff"}'}),
    Case("apply format version 2", app(cal="{d}/c.json"), 2,
         "c.json: field 'format': unsupported calibrator format ('calrl.calibrator/2')",
         {"c.json": _calibrator(format="calrl.calibrator/2")}),
    Case("apply format missing", app(cal="{d}/c.json"), 2, "c.json: field 'format': unsupported calibrator "
         "format (missing)", {"c.json": _calibrator(format=_DROP)}),
    Case("apply format a number", app(cal="{d}/c.json"), 2, "c.json: field 'format'", {"c.json": _calibrator(format=1)}),
    Case("apply unknown method", app(cal="{d}/c.json"), 2, "c.json: field 'method': unknown calibration method",
         {"c.json": _calibrator(method="magic")}),
    Case("apply no params", app(cal="{d}/c.json"), 2, "c.json: field 'params': missing or not an object",
         {"c.json": _calibrator(params=_DROP)}),
    Case("apply negative temperature", app(cal="{d}/c.json"), 2, "c.json: field 'params': temperature must be",
         {"c.json": _calibrator(params={"temperature": -1})}),
    Case("apply temperature text", app(cal="{d}/c.json"), 2, "c.json: field 'params'",
         {"c.json": _calibrator(params={"temperature": "2"})}),
    Case("apply Platt missing b", app(cal="{d}/c.json"), 2, "c.json: field 'params': missing parameter 'b'",
         {"c.json": _calibrator(method="platt", params={"a": 1.0})}),
    Case("apply isotonic decreasing", app(cal="{d}/c.json"), 2, "c.json: field 'params': isotonic knots",
         {"c.json": _calibrator(method="isotonic", params={"x": [0.5, 0.2], "y": [0.1, 0.2]})}),
    Case("apply histogram 10^6 bins", app(cal="{d}/c.json"), 2,
         "c.json: field 'params.n_bins': must be an integer from 1 to 1000, got 1000000",
         {"c.json": _calibrator(method="histogram", params={"n_bins": 1_000_000, "accuracy": [0.5]})}),
    Case("apply histogram short table", app(cal="{d}/c.json"), 2, "c.json: field 'params': accuracy must be",
         {"c.json": _calibrator(method="histogram", params={"n_bins": 3, "accuracy": [0.5]})}),
    Case("apply n text", app(cal="{d}/c.json"), 2, "c.json: field 'n': expected a number", {"c.json": _calibrator(n="x")}),
    Case("apply warnings not a list", app(cal="{d}/c.json"), 2, "c.json: field 'warnings'",
         {"c.json": _calibrator(warnings="x")}),
    Case("apply predictions missing", app(preds="{d}/nope.jsonl"), 2, "nope.jsonl: file not found"),
    Case("apply predictions FIFO", app(preds="{d}/p.jsonl"), 2, "p.jsonl: is a FIFO", {"p.jsonl": FIFO}),
    Case("apply predictions bad line", app(preds="{d}/b.jsonl"), 2, "b.jsonl:3: field 'correct'",
         {"b.jsonl": _bad_row(correct="y")}),
    Case("apply predictions deep line", app(preds="{d}/b.jsonl"), 2, "b.jsonl:2: JSON nested deeper",
         {"b.jsonl": _jsonl(_rows(1)) + _deep(100_000) + "\n"}),
    Case("apply --out exists", app(out="{d}/afile.jsonl"), 2, "afile.jsonl: already exists",
         {"afile.jsonl": "earlier\n"}),
    Case("apply --out is the input", app("--overwrite", out="{d}/good.jsonl"), 2,
         "good.jsonl: --out is this command's input"),
    Case("apply --out the input by another path", app("--overwrite", out="{d}/base/../good.jsonl"), 2,
         "--out is this command's input"),
    Case("apply --out format differs", app(out="{d}/r.csv"), 2, "r.csv: the output must have the input's format (jsonl)"),
    Case("apply --out empty", app(out=""), 2, "argument --out: empty path"),
    Case("apply --out under a file", app(out="{d}/afile.txt/r.jsonl"), 2, "{d}/afile.txt/r.jsonl: afile.txt is a file, not a folder"),
    Case("apply --out a folder", app(out="{d}/o.jsonl"), 2, "o.jsonl: --out is a folder", {"o.jsonl": FOLDER}),
    Case("apply disk full", app(), 2, "no space left on device", fault=_raise_in("mkstemp", DISK_FULL)),
    Case("apply rename fails", app(), 2, "input/output error", fault=_raise_in("replace", errno.EIO)),
    Case("apply unknown option", app("--method", "x"), 2, "unrecognized arguments: --method x"),
    # accepted neighbours
    Case("apply calibrator with BOM", app(cal="{d}/c.json"), 0, "", {"c.json": "\ufeff" + _calibrator()}),
    Case("apply --overwrite replaces the output", app("--overwrite", out="{d}/afile.jsonl"), 0, "",
         {"afile.jsonl": "earlier\n"}, changes=("afile.jsonl",)),
]

CASES = [dataclasses.replace(case, name=f"{group}: {case.name}")
         for group, cases in (("eval", EVAL_CASES), ("compare", COMPARE_CASES), ("fit", FIT_CASES),
                              ("apply", APPLY_CASES))
         for case in cases]


# ----------------------------------------------------------------------------------------- runner
def _make(root: Path, files: dict[str, object]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and not path.is_dir():
            path.unlink()
        if content is FIFO:
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


def test_the_table_is_large_and_names_are_unique():
    assert len(CASES) >= 150
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch):
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
