"""The one JSON helper and the one number formatter (calrl.formatting)."""

from __future__ import annotations

import json
import math

import numpy as np
import torch

from calrl.formatting import fmt, json_safe


def test_json_safe_replaces_non_finite_and_converts_arrays():
    data = {"a": [float("nan"), torch.tensor(0.5), math.inf], "b": 1, 3: (np.float32(0.25), np.arange(2)),
            "t": torch.tensor([1.0, float("-inf")])}
    safe = json_safe(data)
    assert safe == {"a": [None, 0.5, None], "b": 1, "3": [0.25, [0, 1]], "t": [1.0, None]}
    json.dumps(safe, allow_nan=False)
    assert json_safe(True) is True and json_safe("nan") == "nan"


def test_fmt_numbers_and_missing_values():
    assert fmt(None) == "n/a" and fmt(float("nan")) == "n/a" and fmt(math.inf) == "n/a"
    assert fmt(True) == "yes" and fmt(False) == "no"
    assert fmt(7) == "7" and fmt(np.int64(7)) == "7"
    assert fmt(0.123456) == "0.1235" and fmt(0.123456, 2) == "0.12"
    assert fmt(np.float64(0.5), 3) == "0.500" and fmt(torch.tensor(0.25)) == "0.2500"
    assert fmt("text") == "text"
