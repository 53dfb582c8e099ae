"""The usual-row step of calrl.eval.loading gives exactly record_from_row's record (values shared the same way),
or leaves the row to it: never a record record_from_row would refuse."""

from __future__ import annotations

import random

import pytest

from calrl.errors import InputError
from calrl.eval.loading import _share_equal_values, _usual_record, record_from_row

VALUES = [None, True, False, 0, 1, 2, 0.5, 1.5, float("nan"), 10**30, "", " ", "x", "Paris", [], ["a"], ["a", 1],
          [["a"]], {}, {"d": "law"}, {"d": None}, {"d": 1}, {"d": ["x"]}, {1: "x"}]
FIELDS = ["id", "response", "question", "reference", "choices", "samples", "correct", "abstained", "confidence",
          "slice", "other"]


USUAL = {"id": ["a", "b", " "], "response": ["Paris", "Lyon. Confidence: 3", None], "question": ["Where?", None],
         "reference": ["Paris", ["Paris", "Lyon"], [], None], "choices": [["A", "B"], None],
         "samples": [["x", "y"], [], None], "correct": [True, False, None], "abstained": [True, False, None],
         "confidence": [0, 1, 0.25, None], "slice": ["law", {"d": "law", "e": "x"}, {"d": "law", "e": None}, {}],
         "other": [[{"k": 1}], 3]}


def _row(rng: random.Random, i: int) -> dict:
    row = {}
    for field in FIELDS:
        if rng.random() < 0.7:
            row[field] = rng.choice(USUAL[field]) if rng.random() < 0.93 else rng.choice(VALUES)
    if row.get("id") in ("a", "b"):
        row["id"] = f"{row['id']}-{i}"
    return row


@pytest.mark.parametrize("seed", range(3))
def test_usual_rows_make_record_from_rows_records(seed):
    rng = random.Random(seed)
    fast_shared: tuple[dict, ...] = ({}, {}, {})
    slow_shared: tuple[dict, ...] = ({}, {}, {})
    taken = 0
    for i in range(20000):
        row = _row(rng, i)
        try:
            expected = record_from_row(row, path="p.jsonl", line=i)
        except InputError:
            expected = None
        got = _usual_record(row, fast_shared)
        if got is None:
            continue
        taken += 1
        assert expected is not None, row  # the usual step never takes a row record_from_row refuses
        _share_equal_values(expected, slow_shared)
        assert repr(got) == repr(expected), row
        for name in ("slice", "reference", "response"):
            value = getattr(got, name)
            if value:  # shared: one object per distinct value, as _share_equal_values keeps them
                assert value is getattr(expected, name) or value == getattr(expected, name)
    assert taken > 1000
