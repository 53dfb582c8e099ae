"""calrl.io.iter_json_lines (msgspec where it reads the same) gives exactly what iter_lines + loads_json give:
the same values (types included) and the same one-line errors, on awkward lines."""

from __future__ import annotations

import json
import random
import struct

import pytest

from calrl.errors import InputError
from calrl.io import MAX_JSON_DEPTH, iter_json_lines, iter_lines, loads_json

AWKWARD_LINES = [
    b'{"id": 1, "id": 2}', b'{"id": 1, "slice": {"a": "x", "a": "y"}}', b'{"id": 1, "\\u0069d": 2}',
    b'{"id" : 1, "id": 2}', b'{"id"\t: 1}', b'{"a": "q\\":", "b": 1}', b'{"a": "{", "b": {"c": 1}}',
    b'{"c": NaN}', b'{"c": Infinity}', b'{"c": -Infinity}', b'{"c": 1e400}', b'{"c": -1e-400}',
    b'{"n": 123456789012345678901234567890}', b'{"n": -9223372036854775809}', b'{"n": 18446744073709551616}',
    b'{"n": ' + b"7" * 5000 + b"}", b'{"n": 1.' + b"7" * 5000 + b"}", b'{"s": "\\ud800"}', b'{"s": "\\uDC00x"}',
    b'{"s": "\\ud83d\\ude00"}', b'{"s": "\\u00e9 caf\xc3\xa9"}', b'{"s": "\xff"}', b'{"s": "\xed\xa0\x80"}',
    b"[1, 2]", b'"text"', b"3", b"null", b"", b"   ", b"\t\r", "\u3000".encode(), b"\x0c{}", b'{"a": 1} x',
    b'{"a": [1,]}', b'{"a": "\x01"}', b'{"a": 1', b"\xef\xbb\xbf{}", b'{"a": -0, "b": -0.0, "c": 1E+2}',
    b'{"a": [' * 70 + b"]" * 70 + b"}", b'{"a": ' + b"[" * 40 + b"]" * 40 + b', "b": {"c": {"d": 1}}}',
    b'{"slice": {"k": {"deep": 1}}}', b'{"x": [{"k": 1, "k": 2}]}', b'{"a": "\\u0000"}', b'{"": 1, "b": ""}',
    b'{"a": "x\\\\", "b": 2}', b'{"a": 1}\r', b'{"a": true, "b": false, "c": null, "d": [], "e": {}}',
]


def _expected(path) -> list:
    """What iter_lines + loads_json give, as a list of (line, value) and at most one error at the end."""
    out: list = []
    try:
        for line_no, text in iter_lines(path):
            if text.strip():
                out.append((line_no, loads_json(text, path=str(path), line=line_no)))
    except InputError as exc:
        out.append(str(exc))
    return out


def _got(path) -> list:
    out: list = []
    try:
        out.extend(iter_json_lines(path, inner="slice"))
    except InputError as exc:
        out.append(str(exc))
    return out


def _same(a: list, b: list) -> bool:
    return repr(a) == repr(b)  # repr tells 1 from 1.0 and -0.0 from 0.0, and NaN equals itself


@pytest.mark.parametrize("line", AWKWARD_LINES)
def test_each_awkward_line_reads_as_json_does(tmp_path, line):
    good = b'{"id": "a", "slice": {"d": "law"}, "response": "x"}\n'
    path = tmp_path / "p.jsonl"
    path.write_bytes(good * 3 + line + b"\n" + good)
    assert _same(_got(path), _expected(path))
    path.write_bytes(line + b"\n" + good)  # first line: a byte-order mark there is dropped
    assert _same(_got(path), _expected(path))


def _float_text(rng: random.Random) -> str:
    kind = rng.randrange(3)
    if kind == 0:
        return repr(struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0])
    if kind == 1:
        return f"{rng.randrange(10 ** rng.randrange(1, 25))}e{rng.randrange(-340, 320)}"
    return "0." + "".join(rng.choice("0123456789") for _ in range(rng.randrange(1, 30)))


def test_random_lines_and_numbers_read_as_json_does(tmp_path):
    rng = random.Random(0)
    keys = ["id", "response", "slice", "confidence", "x", "\u00e9"]
    lines = []
    for i in range(4000):
        row = {rng.choice(keys): rng.choice([i, "a b", None, True, [1, "x"], {"d": "v"}]) for _ in range(4)}
        text = json.dumps(row, ensure_ascii=rng.random() < 0.5)
        if rng.random() < 0.5:
            number = _float_text(rng)
            if "nan" not in number and "inf" not in number:
                text = text[:-1] + (", " if row else "") + f'"f": {number}}}'
        lines.append(text.encode())
    path = tmp_path / "p.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert _same(_got(path), _expected(path))
    for bad in (b'{"id": 1, "id": 1}', b"{nope}", b'{"a": ' + b"[" * (MAX_JSON_DEPTH + 1) + b"]" * 65 + b"}"):
        path.write_bytes(b"\n".join([*lines[:2500], bad, *lines[2500:]]) + b"\n")
        got = _got(path)
        assert _same(got, _expected(path)) and isinstance(got[-1], str)
