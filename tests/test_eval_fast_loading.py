"""The block reader of JSON lines predictions (msgspec, a block of lines at a time) gives exactly what the
row reader (json, a line at a time) gives: the same records, or the same error, on seeded files full of what
the two parsers could read differently (keys given twice, escapes, blank lines, long integers, NaN...)."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest

from calrl.errors import InputError
from calrl.eval.loading import iter_predictions, iter_records
from calrl.eval.rows import ReadState, fast_block
from calrl.io import iter_line_blocks


def _read(reader, path: Path):
    try:
        return [(line, dataclasses.astuple(record)) for line, record in reader()]
    except InputError as exc:
        return str(exc)


def _row(i: int, rng: random.Random) -> dict:
    row: dict = {"id": rng.choice([f"q{i}", i, f"é{i}", f"id: {i}"])}
    if rng.random() < 0.9:
        row["response"] = rng.choice(["Paris. Confidence: 8", "I don't know", "B", f"answer {i}: 0.4",
                                      "a\\u003a b", "\u2028 x", "Zürich \"quoted\" \\ back"])
    if rng.random() < 0.5:
        row["reference"] = rng.choice(["Paris", ["Paris", "paris"], [], "B", ["1:2"]])
    if rng.random() < 0.2:
        row["choices"] = ["A", "B", "C:D"]
    if rng.random() < 0.2:
        row["samples"] = rng.sample(["Paris", "Lyon", "42", "x:y"], rng.randint(0, 3))
    for key, values in (("confidence", [None, 0, 1, 0.5, -0.0, 0.0, 1e-300, 0.1 + 0.2]),
                        ("correct", [None, True, False]), ("abstained", [None, True, False]),
                        ("question", [None, "Where?", "q: where?"])):
        if rng.random() < 0.2:
            row[key] = rng.choice(values)
    if rng.random() < 0.5:
        row["slice"] = rng.choice(["law", {"domain": "law", "hard": "yes"}, {"a:b": "c:d"}, {"k": None}, {}, None])
    return row


# text edits applied to a line (a JSON object); each keeps or breaks what a reader accepts
_EDITS = [
    lambda s, rng: s.replace('"id": ', '"id": "dup", "id": ', 1),  # a key twice
    lambda s, rng: s.replace('"id": ', '"id" : null, "id": ', 1),
    lambda s, rng: s.replace('{', '{"response": null, ', 1),
    lambda s, rng: s.replace('"domain": "law"', '"domain": "law", "domain": "x"', 1),
    lambda s, rng: s.replace('"id"', '"\\u0069d"', 1),  # a key written with an escape
    lambda s, rng: s.replace('"Paris"', '"Pa\\u003aris"', 1),  # an escaped colon
    lambda s, rng: s.replace('"Paris"', '"\\ud800"', 1),  # a lone surrogate
    lambda s, rng: s.replace('"Paris"', '"\\ud83d\\ude00"', 1),  # a pair
    lambda s, rng: s[:-1] + ', "extra": {"deep": [1, 2, 3]}}',  # a key the reader does not read
    lambda s, rng: s[:-1] + ', "confidence": NaN}',
    lambda s, rng: s[:-1] + ', "confidence": 1e400}',
    lambda s, rng: s[:-1] + f', "confidence": 0.{"9" * rng.randint(15, 30)}}}',
    lambda s, rng: s.replace('"id": ', '"id": ' + "1" * rng.choice([19, 25, 4300, 4301]) + ', "x": ', 1),
    lambda s, rng: "{" + s[1:].replace('"id": ', '"id": 12345678901234567890123, "_": ', 1),
    lambda s, rng: s + " ",
    lambda s, rng: " " + s,
    lambda s, rng: s + "\r",
    lambda s, rng: s + "\n",  # a blank line after
    lambda s, rng: s + "\n  \t",
    lambda s, rng: s + s,  # two objects on a line
    lambda s, rng: s.replace(", ", ",\n", 1),  # an object over two lines
    lambda s, rng: s.replace('"id": ', '"slice": ' + "[" * 70 + "]" * 70 + ', "id": ', 1),
    lambda s, rng: s.replace('"id": ', '"slice": ' + "[" * 63 + '"x"' + "]" * 63 + ', "id": ', 1),
    lambda s, rng: s.replace('"id": ', '"id": "", "_id": ', 1),
    lambda s, rng: s.replace('"id": ', '"id": true, "_id": ', 1),
    lambda s, rng: s.replace('"Paris"', '"Pa\tris"', 1),  # a raw control character
    lambda s, rng: s.replace("{", "{\x0c", 1),
    lambda s, rng: s.replace("{", "{\r", 1),
]


def _file(path: Path, rng: random.Random, n: int, edit_rate: float, answered: bool = False) -> Path:
    lines = []
    for i in range(n):
        row = _row(i, rng)
        if answered:
            row["response"] = row.get("response") or "Paris"
        text = json.dumps(row, ensure_ascii=rng.random() < 0.3,
                          separators=rng.choice([(", ", ": "), (",", ":"), (" , ", " : ")]))
        if rng.random() < edit_rate:
            text = rng.choice(_EDITS)(text, rng)
        lines.append(text)
    data = "\n".join(lines) + ("\n" if rng.random() < 0.8 else "")
    raw = data.encode("utf-8", "surrogatepass")
    if rng.random() < 0.05:
        raw = b"\xef\xbb\xbf" + raw
    if rng.random() < 0.03:
        raw = raw.replace(b"Paris", b"Pa\xffris", 1)
    path.write_bytes(raw)
    return path


@pytest.mark.parametrize("seed", range(200))
def test_block_reader_reads_what_the_row_reader_reads(tmp_path, monkeypatch, seed):
    rng = random.Random(seed)
    monkeypatch.setattr("calrl.io.LINE_BLOCK_BYTES", rng.choice([64, 512, 1 << 16]))
    path = _file(tmp_path / "p.jsonl", rng, rng.randint(1, 60), edit_rate=rng.choice([0.0, 0.02, 0.02, 0.2]),
                 answered=rng.random() < 0.8)
    fast = _read(lambda: iter_predictions(path), path)
    rows = _read(lambda: iter_records(path, str(path)), path)
    assert fast == rows


def test_the_block_reader_takes_plain_files_whole(tmp_path):
    """The fast path is taken (not every block handed to the row reader), with nulls, lists and duplicates
    of values across lines."""
    rng = random.Random(7)
    path = _file(tmp_path / "p.jsonl", rng, 300, edit_rate=0.0, answered=True)
    path.write_bytes(path.read_bytes().replace(b"a\\\\u003a b", b"a b"))  # an escaped colon: refused
    state = ReadState()
    taken = [fast_block(block, lines, state) is not None for _, lines, block in iter_line_blocks(path)]
    assert all(taken)
    assert _read(lambda: iter_predictions(path), path) == _read(lambda: iter_records(path, str(path)), path)


def test_a_key_given_twice_is_refused_by_the_block_reader(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "response": "x"}\n{"id": "b", "response": null, "response": "y"}\n')
    state = ReadState()
    assert [fast_block(block, lines, state) for _, lines, block in iter_line_blocks(path)] == [None]
    with pytest.raises(InputError, match=r"p.jsonl:2: field 'response': duplicate key"):
        list(iter_predictions(path))
