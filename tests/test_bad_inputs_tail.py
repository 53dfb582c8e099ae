"""The bad-input tail (issue 20, point 8): hostile inputs to every command, one table per family.

Each row is checked by ``bad_input_helpers.check_case`` like the rows of ``test_bad_inputs.py``: exit code 2, one
stderr line under 300 characters naming the file, line, field or option, no traceback, every earlier file
unchanged and none added (or, for an accepted neighbour, exit 0). The families: lone surrogates and other
encodings, byte-order marks, line endings, NUL and control bytes, NaN and Infinity literals, huge numbers and
huge values, duplicate keys, wrong types, empty and truncated files, folders and special files, permissions,
saved ``datasets`` folders, options out of range for every command, and more slice values than an evaluation
reports. Recipe (YAML) errors are in ``test_bad_train_inputs.py``.
"""

from __future__ import annotations

import datetime
import errno
import io
import json
import tempfile
from pathlib import Path

import pyarrow as pa
import pytest
from bad_input_helpers import (
    _DROP,
    FIFO,
    FOLDER,
    Case,
    Link,
    _bad_row,
    _calibrator,
    _jsonl,
    _raise_in,
    _resolved,
    _rows,
    _unreadable,
    app,
    check_case,
    cmp,
    ev,
    ev_p,
    fit,
)

BIG = 1180591620717411303424  # 2^70: the seed of issue 20
LONG = "9" * 5000  # an integer of 5000 digits
HUGE = 5_000_000  # characters of a value that must not be echoed whole


def _line(**fields) -> str:
    """One JSONL line of a scorable item with ``fields`` added or replaced."""
    return json.dumps({"id": "x", "correct": True, "confidence": 0.5, **fields})


def _raw(text: str) -> str:
    """good rows 1-2, then ``text`` (JSON written by hand: escapes and literals json.dumps would not write)."""
    return _jsonl(_rows(2)) + text + "\n"


def _csv(*rows: str) -> str:
    return "".join(r + "\n" for r in rows)


def _parquet(table_rows: list[dict] | None = None, *, columns: dict | None = None) -> bytes:
    import pyarrow.parquet as pq

    table = pa.table(columns) if columns is not None else pa.Table.from_pylist(table_rows)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def _bad_utf8_parquet() -> bytes:
    """A Parquet file whose string column ``response`` holds bytes that are not UTF-8 (Arrow does not check)."""
    offsets = pa.py_buffer(bytes([0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0]))
    response = pa.Array.from_buffers(pa.string(), 2, [None, offsets, pa.py_buffer(b"\xffx")])
    return _parquet(columns={"id": pa.array(["a", "b"]), "response": response, "reference": pa.array(["x", "y"])})


ARROW = "data-00000-of-00001.arrow"  # the one data file of a small saved dataset


def _saved(rows: list[dict], folder: str = "ds", edits: dict[str, bytes | str | None] | None = None
           ) -> dict[str, object]:
    """A ``datasets.save_to_disk`` folder of ``rows`` as files under ``folder``; ``edits`` replace (or, None,
    drop) files by name (``state.json``, ``ARROW``...)."""
    import datasets

    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory() as tmp:
        datasets.Dataset.from_list(rows).save_to_disk(tmp)
        files: dict[str, object] = {f"{folder}/{p.name}": p.read_bytes() for p in Path(tmp).iterdir()}
    for name, content in (edits or {}).items():
        files.pop(f"{folder}/{name}", None)
        if content is not None:
            files[f"{folder}/{name}"] = content
    return files


def _good_saved_arrow() -> bytes:
    return next(v for k, v in _saved(_rows(3)).items() if k.endswith(".arrow"))


def dat(*args: str, inp: str = "{d}/pairs.jsonl", out: str = "{d}/kept.jsonl") -> list[str]:
    """``calrl data filter-preferences``: the input is read (and refused) before any reward model loads."""
    return ["data", "filter-preferences", "--input", inp, "--out", out, "--reward-model", "{d}/no-rm", *args]


def gen(*args: str, dataset: str = "{d}/h.jsonl") -> list[str]:
    """``calrl eval --model``: the held-out items are read (and refused) before the model loads."""
    return ["eval", "--model", "{d}/no-model", "--dataset", dataset, "--out", "{d}/out", *args]


PAIR = {"prompt": "p", "chosen": "a", "rejected": "b"}
EMPTY_STATE = json.dumps({"_data_files": [], "_fingerprint": "0", "_format_columns": None, "_format_kwargs": {},
                          "_format_type": None, "_output_all_columns": False, "_split": None})
HELD = {"id": "h1", "question": "q?", "reference": "a"}
SUR = "\\ud800"  # a lone high surrogate, as JSON escapes it

# ------------------------------------------------------------------------------------------ families
SURROGATES = [  # lone UTF-16 surrogates escaped in JSON: not Unicode text, no output could hold them
    Case("in id", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'id': lone UTF-16 surrogate \\ud800",
         {"b.jsonl": _raw(f'{{"id": "{SUR}", "correct": true, "confidence": 0.5}}')}),
    Case("in response", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'response': lone UTF-16 surrogate",
         {"b.jsonl": _raw(f'{{"id": "x", "response": "Paris{SUR}. Confidence: 8", "reference": "Paris"}}')}),
    Case("in slice", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'slice': lone UTF-16 surrogate",
         {"b.jsonl": _raw(f'{{"id": "x", "correct": true, "confidence": 0.5, "slice": "{SUR}"}}')}),
    Case("in a slice value", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'slice.domain': lone UTF-16 surrogate",
         {"b.jsonl": _raw(f'{{"id": "x", "correct": true, "confidence": 0.5, "slice": {{"domain": "{SUR}"}}}}')}),
    Case("in a slice key", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'slice.",
         {"b.jsonl": _raw(f'{{"id": "x", "correct": true, "confidence": 0.5, "slice": {{"{SUR}": "a"}}}}')}),
    Case("in a reference", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'reference[1]': lone UTF-16 surrogate",
         {"b.jsonl": _raw(f'{{"id": "x", "response": "a", "reference": ["a", "{SUR}"]}}')}),
    Case("in samples", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'samples[0]'",
         {"b.jsonl": _raw(f'{{"id": "x", "correct": true, "confidence": 0.5, "samples": ["{SUR}"]}}')}),
    Case("low surrogate alone", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'question': lone UTF-16 surrogate \\udfff",
         {"b.jsonl": _raw('{"id": "x", "correct": true, "confidence": 0.5, "question": "\\udfff"}')}),
    Case("pair in the wrong order", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'response': lone UTF-16 surrogate",
         {"b.jsonl": _raw('{"id": "x", "correct": true, "confidence": 0.5, "response": "\\ude00\\ud83d"}')}),
    Case("high surrogate then a letter", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'id'",
         {"b.jsonl": _raw('{"id": "\\ud83dx", "correct": true, "confidence": 0.5}')}),
    Case("in a CSV JSON cell", ev_p("p.csv"), 2, "p.csv:2: field 'slice.k': lone UTF-16 surrogate",
         {"p.csv": _csv("id,correct,confidence,slice", f'q1,true,0.5,"{{""k"": ""{SUR}""}}"')}),
    Case("in compare's resolved.jsonl", cmp(), 2, "cand/resolved.jsonl:1: field 'id': lone UTF-16 surrogate",
         {"cand/resolved.jsonl": f'{{"id": "{SUR}"}}\n'}),
    Case("in compare's candidate predictions", ["compare", "--baseline", "{d}/base", "--candidate", "{d}/b.jsonl",
                                                "--out", "{d}/g"], 2, "b.jsonl:3: field 'slice'",
         {"b.jsonl": _raw(f'{{"id": "q2", "correct": true, "confidence": 0.5, "slice": "{SUR}"}}')}),
    Case("in the calibrator", app(cal="{d}/c.json"), 2, "c.json: field 'method': lone UTF-16 surrogate",
         {"c.json": _calibrator().replace('"temperature"', f'"temperature{SUR}"', 1)}),
    Case("in fit's predictions", fit(preds="{d}/b.jsonl"), 2, "b.jsonl:3: field 'id': lone",
         {"b.jsonl": _raw(f'{{"id": "{SUR}", "correct": true, "confidence": 0.5}}')}),
    Case("in preference pairs", dat(), 2, "pairs.jsonl:1: field 'chosen': lone UTF-16 surrogate",
         {"pairs.jsonl": f'{{"prompt": "p", "chosen": "{SUR}", "rejected": "b"}}\n'}),
    Case("in a held-out question", gen(), 2, "h.jsonl:1: field 'question': lone UTF-16 surrogate",
         {"h.jsonl": f'{{"id": "h1", "question": "{SUR}", "reference": "a"}}\n'}),
    Case("in a metrics.json source", ["compare", "--baseline", "{d}/m", "--candidate", "{d}/cand", "--out", "{d}/g"],
         2, "m/metrics.json: field 'source': lone UTF-16 surrogate", {"m/metrics.json": f'{{"source": "{SUR}"}}'}),
    Case("bytes not UTF-8 in a path argument", ev("--predictions", "{d}/\udcff.jsonl", "--out", "{d}/o"), 2,
         "is not valid text (bytes that are not UTF-8)"),
    Case("bytes not UTF-8 in --title", ev_p("good.jsonl", "--title", "a\udcffb"), 2,
         "argument 'a\\udcffb' is not valid text"),
    # accepted neighbour: an escaped pair is one character (an emoji)
    Case("escaped pair is read", ev_p("e.jsonl", "--bootstrap", "0"), 0, "",
         {"e.jsonl": _jsonl(_rows()) + '{"id": "\\ud83d\\ude00", "correct": true, "confidence": 0.5, '
                                       '"response": "\\ud83d\\ude00"}\n'}),
]

ENCODINGS = [  # byte-order marks and encodings other than UTF-8
    Case("UTF-16 LE without BOM (NUL-padded ASCII)", ev_p("u.jsonl"), 2, "u.jsonl:1: malformed JSON",
         {"u.jsonl": _jsonl(_rows(2)).encode("utf-16-le")}),
    Case("UTF-16 BE with BOM", ev_p("u.jsonl"), 2, "u.jsonl:1: not UTF-8 text",
         {"u.jsonl": b"\xfe\xff" + _jsonl(_rows(2)).encode("utf-16-be")}),
    Case("UTF-32", ev_p("u.jsonl"), 2, "u.jsonl:1: not UTF-8 text", {"u.jsonl": _jsonl(_rows(2)).encode("utf-32")}),
    Case("two UTF-8 BOMs", ev_p("u.jsonl"), 2, "u.jsonl:1: malformed JSON: a byte-order mark (U+FEFF) inside",
         {"u.jsonl": "\ufeff\ufeff" + _jsonl(_rows(2))}),
    Case("BOM on line 3", ev_p("u.jsonl"), 2, "u.jsonl:3: malformed JSON: a byte-order mark (U+FEFF) inside",
         {"u.jsonl": _raw("\ufeff" + _line())}),
    Case("overlong UTF-8", ev_p("u.jsonl"), 2, "u.jsonl:3: not UTF-8 text (invalid start byte",
         {"u.jsonl": _jsonl(_rows(2)).encode() + b'{"id": "\xc0\xaf"}\n'}),
    Case("CESU-8 surrogate bytes", ev_p("u.jsonl"), 2, "u.jsonl:1: not UTF-8 text",
         {"u.jsonl": b'{"id": "\xed\xa0\x80", "correct": true, "confidence": 0.5}\n'}),
    Case("Windows-1252 quotes", ev_p("u.jsonl"), 2, "u.jsonl:2: not UTF-8 text",
         {"u.jsonl": _jsonl(_rows(1)).encode() + b'{"id": "\x93q\x94"}\n'}),
    Case("file cut inside a character", ev_p("u.jsonl"), 2, "u.jsonl:3: not UTF-8 text (unexpected end of data",
         {"u.jsonl": _jsonl(_rows(2)).encode() + b'{"id": "\xe2\x82'}),
    Case("gzip named .jsonl", ev_p("z.jsonl"), 2, "z.jsonl:1: not UTF-8 text",
         {"z.jsonl": b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xab\xae\x05\x00\x43\xbf\xa6\xa3\x02\x00\x00\x00"}),
    Case("CSV in UTF-16", ev_p("p.csv"), 2, "p.csv: not UTF-8 text", {"p.csv": "id,correct\nq,true\n".encode("utf-16")}),
    Case("calibrator in UTF-16", app(cal="{d}/c.json"), 2, "c.json: not UTF-8 text",
         {"c.json": _calibrator().encode("utf-16")}),
    Case("resolved.jsonl in Latin-1", cmp(), 2, "cand/resolved.jsonl:1: not UTF-8 text",
         {"cand/resolved.jsonl": '{"id": "caf\xe9"}\n'.encode("latin-1")}),
    Case("preference pairs in Latin-1", dat(), 2, "pairs.jsonl:1: not UTF-8 text",
         {"pairs.jsonl": '{"prompt": "caf\xe9"}\n'.encode("latin-1")}),
    Case("held-out CSV in Latin-1", gen(dataset="{d}/h.csv"), 2, "h.csv: not UTF-8 text",
         {"h.csv": "id,question,reference\nh1,caf\xe9,a\n".encode("latin-1")}),
    Case("metrics.json in UTF-16", ["compare", "--baseline", "{d}/m", "--candidate", "{d}/cand", "--out", "{d}/g"], 2,
         "m/metrics.json: not UTF-8 text", {"m/metrics.json": '{"source": "x"}'.encode("utf-16")}),
    # accepted neighbours
    Case("CSV with BOM is read", ev_p("p.csv", "--bootstrap", "0"), 0, "",
         {"p.csv": "\ufeff" + _csv("id,correct,confidence", *(f"q{i},{'true' if i % 2 else 'false'},0.{i + 1}"
                                                                for i in range(8)))}),
    Case("held-out JSONL with BOM is read, then the model is missing", gen(), 2, "no-model: model folder not found",
         {"h.jsonl": "\ufeff" + json.dumps(HELD) + "\n"}),
]

LINE_ENDINGS = [
    Case("CRLF line 2 bad", ev_p("c.jsonl"), 2, "c.jsonl:2: field 'confidence': 7 is outside [0, 1]",
         {"c.jsonl": _line(id="a") + "\r\n" + _line(id="b", confidence=7) + "\r\n"}),
    Case("CR-only line ends", ev_p("c.jsonl"), 2, "c.jsonl:1: malformed JSON: Extra data",
         {"c.jsonl": _line(id="a") + "\r" + _line(id="b") + "\r"}),
    Case("CRLF CSV row 3 bad", ev_p("p.csv"), 2, "p.csv:3: field 'correct'",
         {"p.csv": "id,correct,confidence\r\nq1,true,0.5\r\nq2,maybe,0.5\r\n"}),
    Case("CSV quoted line break then bad row", ev_p("p.csv"), 2, "p.csv:4: field 'confidence'",
         {"p.csv": 'id,correct,confidence,response\nq1,true,0.5,"two\nlines"\nq2,true,9,x\n'}),
    Case("line separator U+2028 splits nothing", ev_p("c.jsonl"), 2, "c.jsonl:2: field 'id': duplicate id 'a\\u2028b'",
         {"c.jsonl": _line(id="a\u2028b") + "\n" + _line(id="a\u2028b") + "\n"}),
    # accepted neighbours
    Case("CRLF JSONL is read", ev_p("c.jsonl", "--bootstrap", "0"), 0, "",
         {"c.jsonl": _jsonl(_rows()).replace("\n", "\r\n")}),
    Case("CRLF CSV is read", ev_p("p.csv", "--bootstrap", "0"), 0, "",
         {"p.csv": "id,correct,confidence\r\n" + "".join(f"q{i},{i % 2 == 0},0.{i + 1}\r\n" for i in range(9))}),
    Case("no newline at the end is read", ev_p("c.jsonl", "--bootstrap", "0"), 0, "",
         {"c.jsonl": _jsonl(_rows()).rstrip("\n")}),
    Case("form-feed line is blank", ev_p("c.jsonl", "--bootstrap", "0"), 0, "",
         {"c.jsonl": _jsonl(_rows(20)) + "\f\n" + _jsonl(_rows()[20:])}),
]

NUL_AND_CONTROL = [
    Case("NUL between tokens", ev_p("n.jsonl"), 2, "n.jsonl:3: malformed JSON", {"n.jsonl": _raw('{"id": "x",\x00}')}),
    Case("raw NUL inside a string", ev_p("n.jsonl"), 2, "n.jsonl:3: malformed JSON: Invalid control character",
         {"n.jsonl": _raw('{"id": "a\x00b", "correct": true, "confidence": 0.5}')}),
    Case("raw escape character in a string", ev_p("n.jsonl"), 2, "n.jsonl:3: malformed JSON: Invalid control",
         {"n.jsonl": _raw('{"id": "a\x1b[31m", "correct": true, "confidence": 0.5}')}),
    Case("line of NUL bytes", ev_p("n.jsonl"), 2, "n.jsonl:3: malformed JSON", {"n.jsonl": _raw("\x00" * 100)}),
    Case("NUL in a CSV cell", ev_p("p.csv"), 2, "p.csv:3: field 'confidence'",
         {"p.csv": "id,correct,confidence\nq\x001,true,0.5\nq2,true,5\n"}),
    Case("escaped NUL id shown escaped", ev_p("n.jsonl"), 2, "n.jsonl:2: field 'id': duplicate id 'a\\x00'",
         {"n.jsonl": _line(id="a\u0000") + "\n" + _line(id="a\u0000") + "\n"}),
    Case("terminal escapes in a value are shown escaped", ev_p("n.jsonl"), 2, "got '\\x1b[2J\\x1b[H'",
         {"n.jsonl": _raw(_line(correct="\u001b[2J\u001b[H"))}),
    Case("line breaks in a value stay on one line", ev_p("n.jsonl"), 2, "field 'correct'",
         {"n.jsonl": _raw(_line(correct="a\nb\r\nc\u2029d"))}),
    Case("NUL in the calibrator", app(cal="{d}/c.json"), 2, "c.json:1: malformed JSON",
         {"c.json": _calibrator().replace(",", ",\x00", 1)}),
]

JSON_LITERALS = [  # NaN and Infinity (Python's json reads them; they are numbers, never text or booleans)
    Case("id NaN", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'id': expected a string, got a number",
         {"b.jsonl": _raw('{"id": NaN, "correct": true, "confidence": 0.5}')}),
    Case("id Infinity", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'id': expected a string, got a number",
         {"b.jsonl": _raw('{"id": Infinity, "correct": true, "confidence": 0.5}')}),
    Case("correct NaN", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'correct': expected true, false or null, got nan",
         {"b.jsonl": _raw('{"id": "x", "correct": NaN, "confidence": 0.5}')}),
    Case("slice value -Infinity", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'slice': value of 'domain' is a number",
         {"b.jsonl": _raw('{"id": "x", "correct": true, "confidence": 0.5, "slice": {"domain": -Infinity}}')}),
    Case("samples [NaN]", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'samples': item 0 is a number",
         {"b.jsonl": _raw('{"id": "x", "correct": true, "confidence": 0.5, "samples": [NaN]}')}),
    Case("reference NaN", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'reference': expected a string or a list",
         {"b.jsonl": _raw('{"id": "x", "response": "a", "reference": NaN}')}),
    Case("-NaN is not JSON", ev_p("b.jsonl"), 2, "b.jsonl:3: malformed JSON",
         {"b.jsonl": _raw('{"id": "x", "correct": true, "confidence": -NaN}')}),
    Case("lower-case nan is not JSON", ev_p("b.jsonl"), 2, "b.jsonl:3: malformed JSON",
         {"b.jsonl": _raw('{"id": "x", "correct": true, "confidence": nan}')}),
    Case("CSV confidence inf", ev_p("p.csv"), 2, "p.csv:2: field 'confidence': inf is outside [0, 1]",
         {"p.csv": "id,correct,confidence\nq1,true,inf\n"}),
    Case("CSV confidence 1e309", ev_p("p.csv"), 2, "p.csv:2: field 'confidence': inf is outside",
         {"p.csv": "id,correct,confidence\nq1,true,1e309\n"}),
    Case("calibrator temperature NaN", app(cal="{d}/c.json"), 2, "c.json: field 'params'",
         {"c.json": _calibrator().replace('"temperature": 2.0', '"temperature": NaN')}),
    Case("calibrator temperature Infinity", app(cal="{d}/c.json"), 2, "c.json: field 'params'",
         {"c.json": _calibrator().replace('"temperature": 2.0', '"temperature": Infinity')}),
    Case("resolved confidence Infinity", cmp(), 2, "cand/resolved.jsonl:1: field 'confidence'",
         {"cand/resolved.jsonl": '{"id": "q0", "abstained": false, "correct": true, "confidence": Infinity, '
                                 '"confidence_source": "given", "hedged": false}\n'}),
]

HUGE_VALUES = [  # numbers past what Python reads, and values too long to echo
    Case("id of 5000 digits", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'id': an integer of 5,000 digits",
         {"b.jsonl": _raw(f'{{"id": {LONG}, "correct": true, "confidence": 0.5}}')}),
    Case("confidence of 5000 digits", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'confidence': an integer of 5,000",
         {"b.jsonl": _raw(f'{{"id": "x", "correct": true, "confidence": {LONG}}}')}),
    Case("negative slice value of 5000 digits", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'slice.k': an integer",
         {"b.jsonl": _raw(f'{{"id": "x", "correct": true, "confidence": 0.5, "slice": {{"k": -{LONG}}}}}')}),
    Case("sample of 5000 digits", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'samples[1]': an integer of 5,000",
         {"b.jsonl": _raw(f'{{"id": "x", "correct": true, "confidence": 0.5, "samples": ["a", {LONG}]}}')}),
    Case("confidence of 400 digits", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'confidence': 1000",
         {"b.jsonl": _raw(f'{{"id": "x", "correct": true, "confidence": 1{"0" * 400}}}')}),
    Case("confidence -1e400", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'confidence': -inf is outside",
         {"b.jsonl": _raw('{"id": "x", "correct": true, "confidence": -1e400}')}),
    Case("5 MB value is cut", ev_p("b.jsonl"), 2, "more characters)",
         {"b.jsonl": _raw(_line(correct="y" * HUGE))}),
    Case("5 MB value of words is cut", ev_p("b.jsonl"), 2, "field 'confidence': expected a number",
         {"b.jsonl": _raw(_line(confidence="a " * (HUGE // 2)))}),
    Case("10 MB duplicate id is cut", ev_p("b.jsonl"), 2, "b.jsonl:2: field 'id': duplicate id 'zzzz",
         {"b.jsonl": _line(id="z" * 2 * HUGE) + "\n" + _line(id="z" * 2 * HUGE) + "\n"}),
    Case("5 MB resolved value is cut", cmp(), 2, "cand/resolved.jsonl:1: field 'abstained'",
         {"cand/resolved.jsonl": json.dumps({"id": "q0", "abstained": "n" * HUGE}) + "\n"}),
    Case("calibrator n_bins of 5000 digits", app(cal="{d}/c.json"), 2, "c.json: field 'params.n_bins': an integer",
         {"c.json": _calibrator(method="histogram").replace('{"temperature": 2.0}', f'{{"n_bins": {LONG}}}')}),
    Case("calibrator temperature of 400 digits", app(cal="{d}/c.json"), 2, "c.json: field 'params'",
         {"c.json": _calibrator().replace('"temperature": 2.0', f'"temperature": 1{"0" * 400}')}),
    Case("resolved confidence of 400 digits", cmp(), 2, "cand/resolved.jsonl:1: field 'confidence'",
         {"cand/resolved.jsonl": json.dumps({"id": "q0", "abstained": False, "correct": True,
                                             "confidence": 10**400, "confidence_source": "given",
                                             "hedged": False}) + "\n"}),
    Case("unknown option of 100,000 characters", ev_p("good.jsonl", "--" + "x" * 100_000), 2,
         "unrecognized arguments: --xxxx"),
    Case("grader name of 100,000 characters", ev_p("good.jsonl", "--grader", "g" * 100_000), 2,
         "field 'grader': unknown grader 'gggg"),
    Case("choice of 100,000 characters", ev_p("good.jsonl", "--missing-confidence", "m" * 100_000), 2,
         "argument --missing-confidence: invalid choice"),
    Case("file name too long", ev_p("n" * 300 + ".jsonl"), 2, "name too long"),
    Case("path of 5000 characters", ev("--predictions", "{d}/" + "a/" * 2500 + "p.jsonl", "--out", "{d}/o"), 2,
         "p.jsonl: cannot read: name too long"),
]

DUPLICATE_KEYS = [
    Case("confidence twice", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'confidence': duplicate key",
         {"b.jsonl": _raw('{"id": "x", "correct": true, "confidence": 0.9, "confidence": 0.1}')}),
    Case("id twice", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'id': duplicate key",
         {"b.jsonl": _raw('{"id": "x", "id": "y", "correct": true, "confidence": 0.5}')}),
    Case("slice key twice", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'd': duplicate key",
         {"b.jsonl": _raw('{"id": "x", "correct": true, "confidence": 0.5, "slice": {"d": "a", "d": "b"}}')}),
    Case("CSV column twice", ev_p("p.csv"), 2, "p.csv:1: field 'confidence': duplicate column",
         {"p.csv": "id,correct,confidence,confidence\nq1,true,0.9,0.1\n"}),
    Case("resolved key twice", cmp(), 2, "cand/resolved.jsonl:1: field 'correct': duplicate key",
         {"cand/resolved.jsonl": '{"id": "q0", "correct": true, "correct": false}\n'}),
    Case("calibrator method twice", app(cal="{d}/c.json"), 2, "c.json: field 'method': duplicate key",
         {"c.json": _calibrator().replace('"method": "temperature"', '"method": "temperature", "method": "platt"')}),
    Case("metrics.json source twice", ["compare", "--baseline", "{d}/m", "--candidate", "{d}/cand", "--out", "{d}/g"],
         2, "m/metrics.json: field 'source': duplicate key", {"m/metrics.json": '{"source": "a", "source": "b"}'}),
    Case("preference pair key twice", dat(), 2, "pairs.jsonl:1: field 'chosen': duplicate key",
         {"pairs.jsonl": '{"prompt": "p", "chosen": "a", "chosen": "c", "rejected": "b"}\n'}),
    Case("held-out key twice", gen(), 2, "h.jsonl:1: field 'reference': duplicate key",
         {"h.jsonl": '{"id": "h", "question": "q", "reference": "a", "reference": "b"}\n'}),
    Case("same id in a saved dataset", ev_p("ds"), 2, "ds:3: field 'id': duplicate id 'q0' (lines 1 and 3)",
         _saved([*_rows(2), _rows(1)[0]])),
]

WRONG_TYPES = [
    Case("id float", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'id': expected a string, got a number",
         {"b.jsonl": _bad_row(id=1.5)}),
    Case("reference object", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'reference': expected a string or a list",
         {"b.jsonl": _bad_row(correct=_DROP, response="a", reference={"a": 1})}),
    Case("reference [null]", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'reference'", {"b.jsonl": _bad_row(reference=[None])}),
    Case("reference nested list", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'reference'",
         {"b.jsonl": _bad_row(reference=[["a"]])}),
    Case("samples [null]", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'samples': item 0 is null",
         {"b.jsonl": _bad_row(samples=[None])}),
    Case("choices [1, 2]", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'choices': item 0 is a number",
         {"b.jsonl": _bad_row(choices=[1, 2])}),
    Case("question list", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'question': expected a string, got a list",
         {"b.jsonl": _bad_row(question=["q"])}),
    Case("response object", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'response': expected a string, got an object",
         {"b.jsonl": _bad_row(response={"text": "a"})}),
    Case("response true", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'response': expected a string, got a boolean",
         {"b.jsonl": _bad_row(response=True)}),
    Case("slice true", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'slice': expected a string or an object",
         {"b.jsonl": _bad_row(slice=True)}),
    Case("slice value list", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'slice': value of 'domain' is a list",
         {"b.jsonl": _bad_row(slice={"domain": ["a"]})}),
    Case("abstained 1", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'abstained': expected true, false or null, got 1",
         {"b.jsonl": _bad_row(abstained=1)}),
    Case("correct 'true' as text", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'correct': expected true, false or null",
         {"b.jsonl": _bad_row(correct="true")}),
    Case("confidence '0.5' as text", ev_p("b.jsonl"), 2, "b.jsonl:3: field 'confidence': expected a number",
         {"b.jsonl": _bad_row(confidence="0.5")}),
    Case("Parquet confidence as a date", ev_p("p.parquet"), 2, "p.parquet:1: field 'confidence': expected a number",
         {"p.parquet": _parquet(columns={"id": ["a"], "correct": [True],
                                         "confidence": [datetime.date(2024, 1, 1)]})}),
    Case("Parquet id as bytes", ev_p("p.parquet"), 2, "p.parquet:1: field 'id': expected a string, got bytes",
         {"p.parquet": _parquet([{"id": b"a", "correct": True, "confidence": 0.5}])}),
    Case("Parquet slice as a map", ev_p("p.parquet"), 2, "p.parquet:1: field 'slice'",
         {"p.parquet": _parquet(columns={"id": ["a"], "correct": [True], "confidence": [0.5],
                                         "slice": pa.array([[("k", "v")]], pa.map_(pa.string(), pa.string()))})}),
    Case("calibrator params a list", app(cal="{d}/c.json"), 2, "c.json: field 'params': missing or not an object",
         {"c.json": _calibrator(params=[2.0])}),
    Case("calibrator isotonic knots text", app(cal="{d}/c.json"), 2, "c.json: field 'params'",
         {"c.json": _calibrator(method="isotonic", params={"x": "0,1", "y": [0, 1]})}),
    Case("preference chosen a number", dat(), 2, "pairs.jsonl: field 'chosen': row 0: expected a string or a list",
         {"pairs.jsonl": '{"prompt": "p", "chosen": 5, "rejected": "b"}\n'}),
    Case("held-out question an object", gen(), 2, "h.jsonl:1: field 'question': expected a string, got dict",
         {"h.jsonl": '{"id": "h", "question": {"q": 1}, "reference": "a"}\n'}),
    # accepted neighbour: a null slice value is dropped (columnar formats fill absent keys with null)
    Case("slice value null is dropped", ev_p("s.jsonl", "--bootstrap", "0"), 0, "",
         {"s.jsonl": _jsonl([{**r, "slice": {"domain": None, "k": "v"}} for r in _rows()])}),
]

EMPTY_AND_TRUNCATED = [
    Case("only {}", ev_p("e.jsonl"), 2, "e.jsonl:1: field 'id': missing", {"e.jsonl": "{}\n"}),
    Case("only []", ev_p("e.jsonl"), 2, "e.jsonl:1: expected a JSON object per line, got a list", {"e.jsonl": "[]\n"}),
    Case("a JSON array file named .json", ev_p("e.json"), 2, "e.json:1: expected a JSON object per line, got a list",
         {"e.json": json.dumps(_rows(3))}),
    Case("pretty-printed object", ev_p("e.jsonl"), 2, "e.jsonl:1: malformed JSON",
         {"e.jsonl": json.dumps(_rows(1)[0], indent=2)}),
    Case("tabs and spaces only", ev_p("e.jsonl"), 2, "e.jsonl: no predictions", {"e.jsonl": " \t\n\t \n"}),
    Case("CSV of 0 bytes", ev_p("e.csv"), 2, "e.csv: no predictions", {"e.csv": ""}),
    Case("CSV header with BOM only", ev_p("e.csv"), 2, "e.csv: no predictions", {"e.csv": "\ufeffid,correct\n"}),
    Case("CSV of empty rows", ev_p("e.csv"), 2, "e.csv: no predictions", {"e.csv": "id,correct\n,\n,\n"}),
    Case("CSV unterminated quote", ev_p("e.csv"), 2, "e.csv:2: malformed CSV: a quoted cell is not closed",
         {"e.csv": 'id,correct,confidence\nq1,true,"0.5\n'}),
    Case("Parquet of 0 rows", ev_p("e.parquet"), 2, "e.parquet: no predictions",
         {"e.parquet": _parquet(columns={"id": pa.array([], "string")})}),
    Case("Parquet cut in half", ev_p("t.parquet"), 2, "t.parquet: cannot read Parquet",
         {"t.parquet": _parquet(_rows(5))[:300]}),
    Case("Parquet magic only", ev_p("t.parquet"), 2, "t.parquet: cannot read Parquet", {"t.parquet": b"PAR1"}),
    Case("Parquet without its footer", ev_p("t.parquet"), 2, "t.parquet: cannot read Parquet",
         {"t.parquet": _parquet(_rows(5))[:-8]}),
    Case("Parquet text not UTF-8", ev_p("t.parquet"), 2, "t.parquet: field 'response': invalid column data",
         {"t.parquet": _bad_utf8_parquet()}),
    Case("calibrator cut in half", app(cal="{d}/c.json"), 2, "c.json:1: malformed JSON",
         {"c.json": _calibrator()[:40]}),
    Case("calibrator null", app(cal="{d}/c.json"), 2, "c.json: expected a JSON object", {"c.json": "null"}),
    Case("resolved.jsonl cut mid-line", cmp(), 2, "cand/resolved.jsonl:40: malformed JSON",
         {"cand/resolved.jsonl": _resolved()[:-30]}),
    Case("resolved.jsonl of blank lines", cmp(), 2, "cand/resolved.jsonl: no records", {"cand/resolved.jsonl": "\n\n"}),
    Case("preference pairs empty", dat(), 2, "pairs.jsonl", {"pairs.jsonl": ""}),
    Case("held-out file empty", gen(), 2, "h.jsonl", {"h.jsonl": ""}),
    Case("summary.json empty (demo --readme-table)", ["demo", "--readme-table", "--out", "{d}/dm"], 2,
         "dm/summary.json:1: malformed JSON", {"dm/summary.json": ""}),
    Case("summary.json {} (demo --readme-table)", ["demo", "--readme-table", "--out", "{d}/dm"], 2,
         "dm/summary.json: not a summary written by calrl demo", {"dm/summary.json": "{}"}),
    Case("summary.json a list (demo --readme-table)", ["demo", "--readme-table", "--out", "{d}/dm"], 2,
         "dm/summary.json: not a summary written by calrl demo", {"dm/summary.json": "[1]"}),
    Case("summary.json not UTF-8 (demo --readme-table)", ["demo", "--readme-table", "--out", "{d}/dm"], 2,
         "dm/summary.json: not UTF-8 text", {"dm/summary.json": b"{\xff}"}),
]

FOLDERS_AND_SPECIAL_FILES = [
    Case("fit on a plain folder", fit(preds="{d}/dir"), 2, "dir: not a saved datasets folder", {"dir": FOLDER}),
    Case("apply on a plain folder", app(preds="{d}/dir"), 2, "dir: not a saved datasets folder", {"dir": FOLDER}),
    Case("compare candidate /dev/null", ["compare", "--baseline", "{d}/base", "--candidate", "/dev/null", "--out",
                                         "{d}/g"], 2, "/dev/null: is a character device"),
    Case("calibrator /dev/zero", app(cal="/dev/zero"), 2, "/dev/zero: is a character device"),
    Case("pairs a plain folder", dat(inp="{d}/dir"), 2, "dir: is a folder but not a saved datasets folder",
         {"dir": FOLDER}),
    Case("pairs a FIFO", dat(inp="{d}/p.jsonl"), 2, "p.jsonl: is a FIFO", {"p.jsonl": FIFO}),
    Case("pairs missing", dat(inp="{d}/nope.jsonl"), 2, "nope.jsonl: file not found"),
    Case("held-out set a FIFO", gen(), 2, "h.jsonl: is a FIFO", {"h.jsonl": FIFO}),
    Case("dangling symbolic link", ev_p("l.jsonl"), 2, "l.jsonl: file not found", {"l.jsonl": Link("gone.jsonl")}),
    Case("symbolic link loop", ev_p("l.jsonl"), 2, "l.jsonl: cannot read: too many levels of symbolic links",
         {"l.jsonl": Link("m.jsonl"), "m.jsonl": Link("l.jsonl")}),
    Case("link to a FIFO", ev_p("l.jsonl"), 2, "l.jsonl: is a FIFO", {"l.jsonl": Link("f.jsonl"), "f.jsonl": FIFO}),
    Case("--out a link to a file", ev("--predictions", "{d}/good.jsonl", "--out", "{d}/o"), 2,
         "o: --out must be a folder, but this is a file", {"o": Link("afile.txt")}),
    Case("recipe a folder", ["train-grpo", "--config", "{d}/dir", "--dry-run"], 2, "dir: is a folder, expected a file",
         {"dir": FOLDER}),
    Case("recipe a FIFO", ["train-grpo", "--config", "{d}/r.yaml", "--dry-run"], 2, "r.yaml: is a FIFO",
         {"r.yaml": FIFO}),
    Case("demo --out a file", ["demo", "--readme-table", "--out", "{d}/afile.txt"], 2,
         "afile.txt: exists and is not a folder"),
]

PERMISSIONS = [  # in-process faults: root reads anything
    Case("compare candidate unreadable", cmp(), 2, "cand/resolved.jsonl: cannot read: permission denied",
         fault=_unreadable("cand/resolved.jsonl")),
    Case("fit predictions unreadable", fit(), 2, "good.jsonl: cannot read: permission denied",
         fault=_unreadable("good.jsonl")),
    Case("apply predictions I/O error", app(), 2, "good.jsonl: cannot read: input/output error",
         fault=_unreadable("good.jsonl", errno.EIO)),
    Case("CSV unreadable", ev_p("p.csv"), 2, "p.csv: cannot read: permission denied",
         {"p.csv": "id,correct,confidence\nq,true,0.5\n"}, fault=_unreadable("p.csv")),
    Case("state.json unreadable", ev_p("ds"), 2, "ds/state.json: cannot read: permission denied",
         _saved(_rows(3)), fault=_unreadable("ds/state.json")),
    Case("metrics.json unreadable", ["compare", "--baseline", "{d}/m", "--candidate", "{d}/cand", "--out", "{d}/g"],
         2, "m/metrics.json: cannot read: permission denied", {"m/metrics.json": "{}"},
         fault=_unreadable("m/metrics.json")),
    Case("pairs unreadable", dat(), 2, "pairs.jsonl: cannot read: permission denied",
         {"pairs.jsonl": json.dumps(PAIR) + "\n"}, fault=_unreadable("pairs.jsonl")),
    Case("held-out file unreadable", gen(), 2, "h.jsonl: cannot read: permission denied",
         {"h.jsonl": json.dumps(HELD) + "\n"}, fault=_unreadable("h.jsonl")),
    Case("recipe unreadable", ["train-grpo", "--config", "{d}/r.yaml", "--dry-run"], 2,
         "r.yaml: cannot read: permission denied", {"r.yaml": "method: grpo\n"}, fault=_unreadable("r.yaml")),
    Case("summary.json unreadable", ["demo", "--readme-table", "--out", "{d}/dm"], 2,
         "dm/summary.json: cannot read: permission denied", {"dm/summary.json": "{}"},
         fault=_unreadable("dm/summary.json")),
    Case("disk full writing the recalibrated file", app(), 2, "no space left on device",
         fault=_raise_in("mkstemp", errno.ENOSPC)),
]

SAVED_DATASETS = [
    Case("saved with no rows", ev_p("ds"), 2, "ds: holds no rows (state.json lists no data files",
         _saved(_rows(1), edits={"state.json": EMPTY_STATE, ARROW: None})),
    Case("state.json {}", ev_p("ds"), 2, "ds/state.json: not written by datasets' save_to_disk",
         _saved(_rows(3), edits={"state.json": "{}"})),
    Case("state.json a list", ev_p("ds"), 2, "ds/state.json: not written by datasets' save_to_disk",
         _saved(_rows(3), edits={"state.json": "[]"})),
    Case("state.json null", ev_p("ds"), 2, "ds/state.json: not written by datasets'", _saved(_rows(3), edits={"state.json": "null"})),
    Case("state.json malformed", ev_p("ds"), 2, "ds/state.json:1: malformed JSON", _saved(_rows(3), edits={"state.json": "{"})),
    Case("dataset_info.json a list", ev_p("ds"), 2, "ds/dataset_info.json: not written by datasets'",
         _saved(_rows(3), edits={"dataset_info.json": "[]"})),
    Case("arrow file missing", ev_p("ds"), 2, "ds: not a readable saved datasets folder",
         _saved(_rows(3), edits={ARROW: None})),
    Case("arrow file truncated", ev_p("ds"), 2, "ds: not a readable saved datasets folder",
         _saved(_rows(3), edits={ARROW: _good_saved_arrow()[:200]})),
    Case("arrow file garbage", ev_p("ds"), 2, "ds: not a readable saved datasets folder",
         _saved(_rows(3), edits={ARROW: b"garbage"})),
    Case("features do not match the data", ev_p("ds"), 2, "ds: not a readable saved datasets folder",
         _saved(_rows(3), edits={"dataset_info.json": json.dumps({"features": {"id": {"dtype": "int64",
                                                                                     "_type": "Value"}}})})),
    Case("dataset_dict.json without splits", ev_p("ds"), 2, "ds/dataset_dict.json: not written by datasets'",
         {**_saved(_rows(3), folder="ds/train"), "ds/dataset_dict.json": '{"splits": "train"}'}),
    Case("dataset_dict.json names a missing split", ev_p("ds"), 2, "ds: not a readable saved datasets folder",
         {**_saved(_rows(3), folder="ds/train"), "ds/dataset_dict.json": '{"splits": ["train", "test"]}'}),
    Case("split name with a slash", ev_p("ds"), 2, "ds/dataset_dict.json: field 'splits'",
         {**_saved(_rows(3), folder="ds/train"), "ds/dataset_dict.json": '{"splits": ["../x"]}'}),
    Case("confidence 7 in row 2", ev_p("ds"), 2, "ds:2: field 'confidence': 7 is outside [0, 1]",
         _saved([_rows(1)[0], {**_rows(2)[1], "confidence": 7.0}])),
    Case("saved candidate with state.json {}", ["compare", "--baseline", "{d}/base", "--candidate", "{d}/ds",
                                                "--out", "{d}/g"], 2, "ds/state.json: not written by datasets'",
         _saved(_rows(3), edits={"state.json": "{}"})),
    Case("saved pairs with state.json []", dat(inp="{d}/ds"), 2, "ds/state.json: not written by datasets'",
         _saved([PAIR], edits={"state.json": "[]"})),
]

OPTIONS = [  # integer and number options of every command: bounds with a clear message
    Case("eval --bootstrap 1000000000", ev_p("good.jsonl", "--bootstrap", "1000000000"), 2,
         "argument --bootstrap: must be from 0 to 10000, got 1000000000"),
    Case("eval --bootstrap 10001", ev_p("good.jsonl", "--bootstrap", "10001"), 2, "argument --bootstrap: must be"),
    Case("eval --bootstrap 1e3", ev_p("good.jsonl", "--bootstrap", "1e3"), 2,
         "argument --bootstrap: expected an integer, got '1e3'"),
    Case("eval --bootstrap empty", ev_p("good.jsonl", "--bootstrap", ""), 2, "argument --bootstrap: expected an integer"),
    Case("eval --seed 2^70", ev_p("good.jsonl", "--seed", str(BIG)), 2,
         f"argument --seed: must be from 0 to 4294967295, got {BIG}"),
    Case("eval --seed -1", ev_p("good.jsonl", "--seed", "-1"), 2, "argument --seed: must be from 0 to 4294967295"),
    Case("eval --seed of 5000 digits", ev_p("good.jsonl", "--seed", LONG), 2,
         "argument --seed: must be from 0 to 4294967295, got a number of 5,000 digits"),
    Case("eval --seed Arabic digits", ev_p("good.jsonl", "--seed", "\u0663"), 2, "argument --seed: expected an integer"),
    Case("eval --min-slice-size 10^10", ev_p("good.jsonl", "--min-slice-size", str(10**10)), 2,
         "argument --min-slice-size: must be from 0 to 1000000000"),
    Case("eval --bins of 5000 digits", ev_p("good.jsonl", "--bins", LONG), 2, "argument --bins: must be from 1 to 1000"),
    Case("eval --limit 0", gen("--limit", "0"), 2, "argument --limit: must be from 1 to 1000000000, got 0"),
    Case("eval --limit 10^10", gen("--limit", str(10**10)), 2, "argument --limit: must be from 1"),
    Case("eval --sample-seed 2^70", gen("--limit", "5", "--sample-seed", str(BIG)), 2,
         "argument --sample-seed: must be from 0 to 4294967295"),
    Case("eval --batch-size 0", gen("--batch-size", "0"), 2, "argument --batch-size: must be from 1 to 65536, got 0"),
    Case("eval --batch-size 10^6", gen("--batch-size", str(10**6)), 2, "argument --batch-size: must be from 1 to 65536"),
    Case("eval --max-new-tokens 0", gen("--max-new-tokens", "0"), 2, "argument --max-new-tokens: must be from 1"),
    Case("eval --max-new-tokens 2^70", gen("--max-new-tokens", str(BIG)), 2, "argument --max-new-tokens: must be"),
    Case("eval --num-samples 1001", gen("--num-samples", "1001"), 2, "argument --num-samples: must be from 0 to 1000"),
    Case("eval --confidence-retries 101", gen("--confidence-retries", "101"), 2,
         "argument --confidence-retries: must be from 0 to 100, got 101"),
    Case("eval --temperature nan", gen("--temperature", "nan"), 2, "argument --temperature: must be a finite number"),
    Case("eval --temperature inf", gen("--temperature", "inf"), 2, "argument --temperature: must be a finite number"),
    Case("eval --temperature 0", gen("--temperature", "0"), 2, "argument --temperature: must be > 0, got 0.0"),
    Case("eval --temperature hot", gen("--temperature", "hot"), 2, "argument --temperature: expected a number"),
    Case("compare --bootstrap 1000000000", cmp("--bootstrap", "1000000000"), 2,
         "argument --bootstrap: must be from 0 to 10000"),
    Case("compare --seed 2^70", cmp("--seed", str(BIG)), 2, "argument --seed: must be from 0 to 4294967295"),
    Case("compare --seed -1", cmp("--seed", "-1"), 2, "argument --seed: must be from 0 to 4294967295, got -1"),
    Case("compare --min-slice-size 10^10", cmp("--min-slice-size", str(10**10)), 2,
         "argument --min-slice-size: must be from 1 to 1000000000"),
    Case("compare --max-accuracy-drop 1e999", cmp("--max-accuracy-drop", "1e999"), 2,
         "argument --max-accuracy-drop: must be a finite number"),
    Case("fit --seed 2^70", fit("--seed", str(BIG)), 2, "argument --seed: must be from 0 to 4294967295"),
    Case("fit --seed -3", fit("--seed", "-3"), 2, "argument --seed: must be from 0 to 4294967295, got -3"),
    Case("fit --bins 10^6", fit("--bins", str(10**6)), 2, "argument --bins: must be from 1 to 1000"),
    Case("fit --holdout-fraction inf", fit("--holdout-fraction", "inf"), 2,
         "argument --holdout-fraction: must be a finite number"),
    Case("data --batch-size 0", dat("--batch-size", "0"), 2, "argument --batch-size: must be from 1 to 65536, got 0"),
    Case("data --batch-size 2^70", dat("--batch-size", str(BIG)), 2, "argument --batch-size: must be from 1 to 65536"),
    Case("data --keep-fraction nan", dat("--keep-fraction", "nan"), 2, "argument --keep-fraction: must be a finite"),
    Case("data --keep-fraction 1.5", dat("--keep-fraction", "1.5"), 2, "--keep-fraction must be in (0, 1], got 1.5",
         {"pairs.jsonl": json.dumps(PAIR) + "\n"}),
    Case("demo --jobs 0", ["demo", "--jobs", "0"], 2, "argument --jobs: must be from 1 to 64, got 0"),
    Case("demo --jobs -1", ["demo", "--jobs", "-1"], 2, "argument --jobs: must be from 1 to 64, got -1"),
    Case("demo --jobs 10^6", ["demo", "--jobs", str(10**6)], 2, "argument --jobs: must be from 1 to 64"),
    Case("demo --jobs two", ["demo", "--jobs", "two"], 2, "argument --jobs: expected an integer, got 'two'"),
    Case("demo --seeds 2^70", ["demo", "--seeds", str(BIG), "--out", "{d}/dm"], 2,
         "--seeds must be comma-separated integers from 0 to 4294967295"),
    Case("demo --seeds -1", ["demo", "--seeds", "0,-1", "--out", "{d}/dm"], 2, "got -1"),
    Case("demo --seeds of 5000 digits", ["demo", "--seeds", LONG, "--out", "{d}/dm"], 2,
         "got a number of 5,000 digits"),
    Case("demo --seeds twice the same", ["demo", "--seeds", "1,1", "--out", "{d}/dm"], 2, "each once"),
    Case("demo --policies misspelt", ["demo", "--policies", "sft,ppo,ppo_n", "--out", "{d}/dm"], 2, "ppo_n"),
]


def _slices(n_values: int, key: str = "domain") -> str:
    return _jsonl([{"id": f"s{i}", "correct": i % 2 == 0, "confidence": 0.5, "slice": {key: f"v{i}"}}
                   for i in range(n_values)])


SLICES = [  # more distinct slice values than an evaluation reports: one line, before the per-slice work
    Case("1001 slice values", ev_p("s.jsonl", "--bootstrap", "0"), 2,
         "s.jsonl: field 'slice': 1,001 distinct slice values (key 'domain': 1,001), more than the 1,000",
         {"s.jsonl": _slices(1001)}),
    Case("600 keys of 2 values", ev_p("s.jsonl", "--bootstrap", "0"), 2, "field 'slice': 1,200 distinct slice values",
         {"s.jsonl": _jsonl([{"id": f"s{i}", "correct": True, "confidence": 0.5,
                               "slice": {f"k{j}": f"v{i}" for j in range(600)}} for i in range(2)])}),
    Case("compare with 1001 slice values", ["compare", "--baseline", "{d}/s.jsonl", "--candidate", "{d}/s.jsonl",
                                            "--out", "{d}/g", "--bootstrap", "0"], 2,
         "field 'slice': 1,001 distinct slice values", {"s.jsonl": _slices(1001)}),
    Case("held-out set of 1001 slice values, before any generation", gen(dataset="{d}/h.jsonl"), 2,
         "dataset '{d}/h.jsonl': field 'slice': 1,001 distinct slice values",
         {"h.jsonl": "".join(json.dumps({**HELD, "id": f"h{i}", "slice": f"s{i}"}) + "\n" for i in range(1001))}),
    Case("fit reported on 1001 slice values", fit("--eval-predictions", "{d}/s.jsonl"), 2,
         "s.jsonl: field 'slice': 1,001 distinct",
         {"s.jsonl": _slices(1001)}),
]

FAMILIES = {
    "lone surrogates": SURROGATES, "encodings and BOMs": ENCODINGS, "line endings": LINE_ENDINGS,
    "NUL and control bytes": NUL_AND_CONTROL, "NaN and Infinity": JSON_LITERALS, "huge numbers and values": HUGE_VALUES,
    "duplicate keys": DUPLICATE_KEYS, "wrong types": WRONG_TYPES, "empty and truncated files": EMPTY_AND_TRUNCATED,
    "folders and special files": FOLDERS_AND_SPECIAL_FILES, "permissions": PERMISSIONS,
    "saved datasets folders": SAVED_DATASETS, "options out of range": OPTIONS, "slice values": SLICES,
}
CASES = [Case(f"{family}: {c.name}", c.argv, c.code, c.expect, c.files, c.fault, c.changes)
         for family, cases in FAMILIES.items() for c in cases]


def test_the_families_are_large_and_names_are_unique():
    assert len(CASES) >= 200 and all(len(cases) >= 4 for cases in FAMILIES.values())
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_tail(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch):
    check_case(case, tmp_path, capsys, monkeypatch)
