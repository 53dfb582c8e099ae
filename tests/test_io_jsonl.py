"""The JSONL writers of calrl.io write exactly what ``json.dumps(row, ensure_ascii=False)`` writes, faster."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import pytest

from calrl.jsonio import JsonRows, jsonl_lines, write_jsonl

AWKWARD_TEXTS = ["", "\x00", 'a"b\\c', "Zürich ✓", "\ud800", "line\nbreak\ttab", ', "\\u0000", ', "x" * 300]
AWKWARD_NUMBERS = [0.1, 1e-7, 1e22, float("nan"), float("inf"), float("-inf"), -0.0, 3, 10**30, 0.30000000000000004]


def _value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice(AWKWARD_NUMBERS)
    if kind in (3, 4):
        return rng.choice(AWKWARD_TEXTS)
    if kind == 5:
        return rng.randrange(-5, 5)
    if kind in (6, 7):
        return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(["a", "\x00", "k", "ü"]): _value(rng, depth + 1) for _ in range(rng.randrange(4))}


def _rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"id": i, "v": _value(rng), "w": _value(rng)} for i in range(n)]


def test_jsonl_lines_equal_json_dumps_per_row_on_awkward_values():
    rows = _rows(6000)
    assert "".join(jsonl_lines(rows)) == "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def test_a_row_holding_the_chunk_separator_is_still_one_line(tmp_path):
    rows = [{"id": 1, "reference": ["a", "\x00", "b"]}, {"id": 2, "slice": {"k": "\x00", "j": "x"}}, {"id": 3}]
    write_jsonl(tmp_path / "rows.jsonl", rows)
    assert (tmp_path / "rows.jsonl").read_text(encoding="utf-8") == "".join(
        json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def test_unserialisable_rows_fail_as_json_dumps_does(tmp_path):
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_jsonl(tmp_path / "rows.jsonl", [{"id": 1}, {"id": object()}])
    assert not (tmp_path / "rows.jsonl").exists()  # nothing half-written


KINDS = ("unique", "text", "flag", "number", "shared", "listed", "listed_twice")


def test_json_rows_lines_equal_json_dumps_of_their_dicts_whatever_the_values(tmp_path):
    rng = random.Random(1)
    shared = [{"domain": "law"}, ["Paris", "paris"], None]
    columns = [(f"c{i}", f"r.c{i}", kind) for i, kind in enumerate(KINDS * 2)]
    rows = JsonRows("r", columns)
    objects = []
    for _ in range(3000):
        values = {f"c{i}": (rng.choice(shared) if rng.random() < 0.3 else _value(rng)) for i in range(len(columns))}
        objects.append(SimpleNamespace(**values))
    expected = [json.dumps(rows.row(o), ensure_ascii=False) + "\n" for o in objects]
    assert list(rows.lines((o,) for o in objects)) == expected  # lone surrogates too (no file can hold them)
    plain = [o for o, line in zip(objects, expected, strict=True) if "\ud800" not in line]
    rows.write(tmp_path / "rows.jsonl", ((o,) for o in plain))
    assert (tmp_path / "rows.jsonl").read_text(encoding="utf-8") == "".join(
        json.dumps(rows.row(o), ensure_ascii=False) + "\n" for o in plain)
    assert list(rows.row(objects[0])) == [key for key, _, _ in columns]


def test_json_rows_take_several_params_and_refuse_unknown_kinds():
    rows = JsonRows("a, b", [("x", "a.x", "unique"), ("y", "b", "number")])
    assert list(rows.lines([(SimpleNamespace(x="é"), 0.5)])) == ['{"x": "é", "y": 0.5}\n']
    with pytest.raises(ValueError, match="unknown column kinds"):
        JsonRows("a", [("x", "a", "float")])


@pytest.mark.parametrize("seed", range(6))
def test_grouped_rows_are_written_as_lines_writes_them(tmp_path, seed):
    """write_grouped: the head columns given by column (all strings, all ints, all null, or mixed values), the
    rest once per group, each line exactly what lines() makes of the whole row."""
    rng = random.Random(seed)
    kinds = KINDS * 2
    head = rng.randint(1, 5)
    columns = [(f"c{i}", f"r.c{i}", kind) for i, kind in enumerate(kinds)]
    rows = JsonRows("r", columns, group_from=columns[head][0])
    n, n_groups = rng.choice([1, 7, 3000]), rng.randint(1, 20)
    group_values = [{f"c{i}": _value(rng) for i in range(head, len(columns))} for _ in range(n_groups)]
    plain = {f"c{i}": rng.choice(["str", "int", "none", "mixed"]) for i in range(head)}
    makers = {"str": lambda k: f"s{k}\u00e9\"", "int": lambda k: k, "none": lambda k: None,
              "mixed": lambda k: _value(rng)}
    pairs = [(SimpleNamespace(**{name: makers[how](k) for name, how in plain.items()}, **group_values[g]), g)
             for k, g in enumerate(rng.randrange(n_groups) for _ in range(n))]
    pairs = [(o, g) for o, g in pairs if "\ud800" not in json.dumps(rows.row(o), ensure_ascii=False)]  # not UTF-8
    objects, groups = [o for o, _ in pairs], [g for _, g in pairs]
    first = {g: o for o, g in reversed(pairs)}
    heads = [[getattr(o, f"c{i}") for o in objects] for i in range(head)]
    rows.write_grouped(tmp_path / "grouped.jsonl", heads, groups, lambda g: (first[g],))
    assert (tmp_path / "grouped.jsonl").read_text(encoding="utf-8") == "".join(rows.lines((o,) for o in objects))
