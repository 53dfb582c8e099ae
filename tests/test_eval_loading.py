"""Loading predictions files: every format, and every kind of bad input named by file, line and field."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from calrl.data.records import PredictionRecord
from calrl.errors import InputError
from calrl.eval.loading import load_predictions

ROWS = [
    {"id": "a", "response": "Paris. Confidence: 8", "reference": "Paris",
     "slice": {"domain": "geo", "difficulty": "easy"}, "samples": ["Paris", "Lyon"]},
    {"id": "b", "correct": True, "confidence": 0.25, "slice": "math"},
    {"id": "c", "response": "I don't know.", "reference": ["4", "four"], "abstained": True},
]
EXPECTED = [
    PredictionRecord(id="a", response="Paris. Confidence: 8", reference=["Paris"],
                     slice={"domain": "geo", "difficulty": "easy"}, samples=["Paris", "Lyon"]),
    PredictionRecord(id="b", correct=True, confidence=0.25, slice={"slice": "math"}),
    PredictionRecord(id="c", response="I don't know.", reference=["4", "four"], abstained=True),
]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_jsonl(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", ROWS)
    assert load_predictions(path) == EXPECTED


def test_jsonl_skips_blank_lines_and_keeps_line_numbers(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n\n" + '{"id": "x", "confidence": 2, "correct": true}\n')
    with pytest.raises(InputError) as err:
        load_predictions(path)
    assert str(err.value) == f"{path}:3: field 'confidence': 2 is outside [0, 1]"


def test_csv_with_json_cells_and_slice_columns(tmp_path):
    path = tmp_path / "p.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "response", "reference", "confidence", "correct", "abstained", "slice.domain",
                    "slice.difficulty", "samples"])
        w.writerow(["a", "Paris. Confidence: 8", "Paris", "", "", "", "geo", "easy", '["Paris", "Lyon"]'])
        w.writerow(["b", "", "", "0.25", "true", "", "", "", ""])
        w.writerow(["c", "I don't know.", '["4", "four"]', "", "", "TRUE", "", "", ""])
    records = load_predictions(path)
    assert records[0] == EXPECTED[0]
    assert records[1] == PredictionRecord(id="b", correct=True, confidence=0.25)
    assert records[2] == EXPECTED[2]


def test_csv_slice_column_as_json_or_plain(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text('id,response,reference,slice\na,x,y,"{""domain"": ""geo""}"\nb,x,y,math\n')
    records = load_predictions(path)
    assert [r.slice for r in records] == [{"domain": "geo"}, {"slice": "math"}]


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = [dict(r) for r in ROWS]
    rows[1]["slice"] = {"domain": "math"}  # one struct type across rows in a columnar file
    rows[2]["slice"] = {"difficulty": "hard"}
    rows[0]["reference"] = ["Paris"]
    keys = sorted({k for r in rows for k in r})  # from_pylist takes its columns from the first row
    rows = [{k: r.get(k) for k in keys} for r in rows]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    records = load_predictions(tmp_path / "p.parquet")
    assert records[0] == EXPECTED[0]
    assert records[1] == PredictionRecord(id="b", correct=True, confidence=0.25, slice={"domain": "math"})
    assert records[2].slice == {"difficulty": "hard"} and records[2].abstained is True


def test_datasets_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [dict(r) for r in ROWS]
    for r in rows:
        r["slice"] = json.dumps(r.get("slice"))  # keep it simple for arrow: one string column
        r["reference"] = [r["reference"]] if isinstance(r.get("reference"), str) else r.get("reference")
    rows = [{"id": r["id"], "response": r.get("response"), "reference": r["reference"],
             "confidence": r.get("confidence"), "correct": r.get("correct")} for r in rows]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    records = load_predictions(tmp_path / "ds")
    assert [r.id for r in records] == ["a", "b", "c"]
    assert records[0].reference == ["Paris"] and records[1].confidence == 0.25
    assert records[2].reference == ["4", "four"]


@pytest.mark.parametrize(("content", "message"), [
    ('{"id": "a", "response": "x", "reference": "x"}\n{"id": "b", "response": \n',
     "{path}:2: malformed JSON"),
    ('["a", "b"]\n', "{path}:1: expected a JSON object per line, got a list"),
    ('{"id": "a", "response": "x"}\n{"id": "b", "response": "y"}\n{"id": "a", "response": "z"}\n',
     "{path}:3: field 'id': duplicate id 'a' (lines 1 and 3)"),
    ('{"response": "x"}\n', "{path}:1: field 'id': missing"),
    ('{"id": "a", "reference": "x"}\n',
     "{path}:1: neither 'response' nor both 'correct' and 'confidence' are given"),
    ('{"id": "a", "correct": true}\n',
     "{path}:1: neither 'response' nor both 'correct' and 'confidence' are given"),
    ('{"id": "a", "response": "x", "confidence": 1.5}\n', "{path}:1: field 'confidence': 1.5 is outside [0, 1]"),
    ('{"id": "a", "response": "x", "confidence": -0.1}\n',
     "{path}:1: field 'confidence': -0.1 is outside [0, 1]"),
    ('{"id": "a", "response": "x", "confidence": "high"}\n',
     "{path}:1: field 'confidence': expected a number in [0, 1] or null, got 'high'"),
    ('{"id": "a", "response": "x", "confidence": true}\n', "{path}:1: field 'confidence': expected a number"),
    ('{"id": "a", "response": "x", "correct": "yes"}\n',
     "{path}:1: field 'correct': expected true, false or null, got 'yes'"),
    ('{"id": "a", "response": "x", "correct": 1}\n', "{path}:1: field 'correct': expected true, false or null"),
    ('{"id": "a", "response": "x", "slice": {"domain": 3}}\n',
     "{path}:1: field 'slice': value of 'domain' is a number, expected a string"),
    ('{"id": "a", "response": "x", "slice": ["geo"]}\n',
     "{path}:1: field 'slice': expected a string or an object of strings, got a list"),
    ('{"id": "a", "response": "x", "samples": "y"}\n',
     "{path}:1: field 'samples': expected a list of strings, got a string"),
    ('{"id": "a", "response": "x", "samples": ["y", 2]}\n',
     "{path}:1: field 'samples': item 1 is a number, expected a string"),
    ('{"id": "a", "response": "x", "reference": 4}\n',
     "{path}:1: field 'reference': expected a string or a list of strings, got a number"),
    ('{"id": "a", "response": "x", "reference": ["4", null]}\n',
     "{path}:1: field 'reference': expected a string or a list of strings"),
    ('{"id": "a", "response": 7}\n', "{path}:1: field 'response': expected a string, got a number"),
    ('{"id": ["a"], "response": "x"}\n', "{path}:1: field 'id': expected a string, got a list"),
    ("", "{path}: no predictions in the file (empty input)"),
    ("\n  \n", "{path}: no predictions in the file (empty input)"),
])
def test_bad_jsonl(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError) as err:
        load_predictions(path)
    assert str(err.value).startswith(message.format(path=path))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("content", "message"), [
    ("id,response,confidence\na,x,0.5\nb,y,high\n",
     "{path}:3: field 'confidence': expected a number in [0, 1] or null, got 'high'"),
    ("id,response,confidence\na,x,1.2\n", "{path}:2: field 'confidence': 1.2 is outside [0, 1]"),
    ("id,response,correct\na,x,maybe\n", "{path}:2: field 'correct': expected true, false or null"),
    ("id,response,samples\na,x,y\n", "{path}:2: field 'samples': expected a JSON list of strings"),
    ('id,response,samples\na,x,"[1, 2]"\n', "{path}:2: field 'samples': item 0 is a number"),
    ('id,response,reference\na,x,"[""4"""\n', "{path}:2: field 'reference': malformed JSON in CSV cell"),
    ("id,response\na,x\na,y\n", "{path}:3: field 'id': duplicate id 'a' (lines 2 and 3)"),
    ("response,reference\nx,y\n", "{path}:2: field 'id': missing"),
    ("id,response\n", "{path}: no predictions in the file (empty input)"),
    ("id,response\na,x,extra\n", "{path}:2: more cells than header columns"),
])
def test_bad_csv(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError) as err:
        load_predictions(path)
    assert str(err.value).startswith(message.format(path=path))


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(InputError, match=r"nope\.jsonl: file not found"):
        load_predictions(tmp_path / "nope.jsonl")
    (tmp_path / "p.txt").write_text("x")
    with pytest.raises(InputError, match="unknown format '.txt'"):
        load_predictions(tmp_path / "p.txt")
    (tmp_path / "folder").mkdir()
    with pytest.raises(InputError, match="not a saved datasets folder"):
        load_predictions(tmp_path / "folder")


def test_bad_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"id": "a", "response": "x", "confidence": 0.2},
                                         {"id": "b", "response": "y", "confidence": 3.0}]), tmp_path / "p.parquet")
    with pytest.raises(InputError, match=r"p\.parquet:2: field 'confidence': 3 is outside"):
        load_predictions(tmp_path / "p.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputError, match="cannot read Parquet"):
        load_predictions(tmp_path / "junk.parquet")


def test_byte_order_mark_is_skipped_in_jsonl_as_in_csv(tmp_path):
    plain = write_jsonl(tmp_path / "plain.jsonl", ROWS)
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    assert load_predictions(bom) == load_predictions(plain) == EXPECTED
    # only at the start of the file: elsewhere U+FEFF is not whitespace JSON allows
    bom.write_bytes(plain.read_bytes() + "\ufeff".encode() + json.dumps({"id": "z", "abstained": True}).encode())
    with pytest.raises(InputError, match=r"bom\.jsonl:4: malformed JSON"):
        load_predictions(bom)


def test_nesting_limit_names_file_and_line(tmp_path):
    from calrl.jsonio import MAX_JSON_DEPTH

    ok = {"id": "a", "correct": True, "confidence": 0.5, "meta": json.loads("[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1))}
    path = write_jsonl(tmp_path / "deep.jsonl", [ok])
    assert [r.id for r in load_predictions(path)] == ["a"]  # the limit itself is accepted
    for depth in (MAX_JSON_DEPTH + 1, 100_000):
        path.write_text(json.dumps(ok) + "\n" + "[" * depth + "]" * depth + "\n")
        with pytest.raises(InputError, match=rf"deep\.jsonl:2: JSON nested deeper than {MAX_JSON_DEPTH} levels"):
            load_predictions(path)


def test_resolve_errors_name_the_file_and_line(tmp_path):
    from calrl.eval.loading import resolve_predictions_file

    path = write_jsonl(tmp_path / "p.jsonl", ROWS[:2] + [{"id": "x", "response": "Paris. Confidence: 9"}])
    with pytest.raises(InputError) as err:
        resolve_predictions_file(path)
    assert str(err.value).startswith(f"{path}:3: id 'x': no 'reference' to grade the response")
