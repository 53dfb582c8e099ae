"""Property-based fuzzing of the readers and of the one error formatter (``hypothesis``, derandomized, small).

Whatever bytes or JSON values a user file holds, a reader returns rows or raises the one-line ``InputError``
(``ConfigError`` for recipes), never another exception, and nothing it returns holds text that could not be
written back as UTF-8. The formatter turns any message into one line under 300 characters. Then the cases the
issue named by hand: slice grouping equal to a per-value count, the slice cap at its boundary, YAML merge keys.
"""

from __future__ import annotations

import json
import math
import random
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calrl import limits
from calrl.config import load_yaml
from calrl.data.readers import read_rows
from calrl.data.records import ResolvedRecord
from calrl.errors import MAX_ERROR_LINE, ConfigError, InputError, error_line
from calrl.eval.loading import iter_predictions, record_from_row
from calrl.eval.runner import compute_results
from calrl.jsonio import loads_json

FUZZ = settings(max_examples=60, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])
FIELDS = ("id", "response", "reference", "confidence", "correct", "abstained", "slice", "samples", "question",
          "choices")

# JSON values with the awkward corners: NaN and infinities, integers far past 64 bits, any text (surrogates too)
scalars = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=True, allow_infinity=True),
                    st.integers(min_value=-(10**400), max_value=10**400), st.text(max_size=20))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=12)
rows = st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), json_values, max_size=8)


def _dump(value: Any) -> str:
    """JSON text of ``value`` as a user's tool might write it (NaN allowed, any text escaped or not)."""
    return json.dumps(value, ensure_ascii=random.Random(len(repr(value))).random() < 0.5)


def _utf8_clean(value: Any) -> bool:
    """Every string (and key) in ``value`` encodes as UTF-8: no lone surrogate got through."""
    if isinstance(value, str):
        return all(not "\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, dict):
        return all(_utf8_clean(k) and _utf8_clean(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_utf8_clean(v) for v in value)
    return True


# ------------------------------------------------------------------------------------------ formatter
@FUZZ
@given(prefix=st.text(max_size=40), message=st.text(max_size=3000), suffix=st.text(max_size=30))
def test_error_line_is_one_short_printable_line(prefix, message, suffix):
    prefix, suffix = prefix.replace("\n", " "), suffix.replace("\n", " ")
    line = error_line(prefix, message, suffix)
    body = line[len(prefix):len(line) - len(suffix)]
    assert line.startswith(prefix) and line.endswith(suffix)
    assert len(body) <= max(40, MAX_ERROR_LINE - len(prefix) - len(suffix))
    assert not any(c in body for c in "\n\r\x00\u2028") and _utf8_clean(body)


@pytest.mark.parametrize("size", [121, 5_000_000])
def test_error_line_cuts_a_huge_value_and_counts_what_it_cut(size):
    line = error_line("calrl eval: error: ", f"x.jsonl:3: field 'correct': got '{'y' * size}'")
    assert len(line) < 300 and "x.jsonl:3: field 'correct': got 'yyyy" in line and line.endswith("yyy'")
    cut = int(line.split("...(")[1].split(" more characters")[0].replace(",", ""))
    assert cut == len(f"x.jsonl:3: field 'correct': got '{'y' * size}'") - (len(line) - len("calrl eval: error: ")) + \
        len(f"...({cut:,} more characters)...")


def test_error_line_shortens_paths_before_the_words():
    path = "/tmp/" + "deep/" * 40 + "run"
    line = error_line("calrl train-rm: error: ", f"{path}: key 'training.output_dir': {path} holds an earlier run; "
                                                 "--resume latest continues it, --overwrite replaces it")
    assert len(line) < 300 and line.endswith("--resume latest continues it, --overwrite replaces it")
    assert line.count("more characters") == 2 and "/run: key 'training.output_dir': /tmp/deep" in line


# ------------------------------------------------------------------------------------------ JSON
@FUZZ
@given(text=st.one_of(st.text(max_size=200), json_values.map(_dump),
                      st.tuples(json_values.map(_dump), st.integers(0, 200), st.text(max_size=3)).map(
                          lambda t: t[0][:t[1]] + t[2] + t[0][t[1]:])))
def test_loads_json_returns_clean_values_or_one_input_error(text):
    try:
        value = loads_json(text, path="f.jsonl", line=1)
    except InputError as exc:
        assert str(exc).startswith("f.jsonl:1: ")
        return
    assert _utf8_clean(value)


@FUZZ
@given(row=rows)
def test_record_from_row_validates_any_row(row):
    try:
        record = record_from_row(row, path="f.jsonl", line=7)
    except InputError as exc:
        assert str(exc).startswith("f.jsonl:7: ")
        return
    assert isinstance(record.id, str) and record.id.strip()
    assert record.confidence is None or 0.0 <= record.confidence <= 1.0
    assert record.correct in (None, True, False) and all(isinstance(v, str) for v in record.slice.values())


# ------------------------------------------------------------------------------------------ files
file_bytes = st.one_of(
    st.binary(max_size=300),
    st.lists(rows.map(_dump), max_size=5).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass")),
    st.lists(st.lists(st.text(max_size=6), min_size=1, max_size=4), max_size=5).map(
        lambda table: "\n".join(",".join(cells) for cells in table).encode("utf-8", "surrogatepass")))


@FUZZ
@given(data=file_bytes, suffix=st.sampled_from([".jsonl", ".csv", ".json", ".parquet"]))
def test_predictions_reader_never_raises_anything_else(data, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"p{suffix}"
        path.write_bytes(data)
        try:
            records = [r for _, r in iter_predictions(path)]
        except InputError as exc:
            assert str(path) in str(exc)
            return
    assert records and all(_utf8_clean([r.id, r.response, r.question, r.reference, r.slice, r.samples])
                           for r in records)


@FUZZ
@given(data=file_bytes, suffix=st.sampled_from([".jsonl", ".csv", ".json", ".parquet"]))
def test_generic_reader_never_raises_anything_else(data, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"d{suffix}"
        path.write_bytes(data)
        try:
            out = read_rows(path)
        except InputError as exc:
            assert str(path) in str(exc)
            return
    assert isinstance(out, list) and _utf8_clean(out)


yaml_text = st.one_of(
    st.text(max_size=200),
    st.lists(st.tuples(st.sampled_from(["training", "model", "data", "  seed", "  lr", "- x", "&a", "*a", "<<",
                                        "\t", "'", '"\\ud800"', "[", "{"]),
                       st.text(max_size=10)), max_size=8).map(lambda parts: "\n".join(f"{k}: {v}" for k, v in parts)))


@FUZZ
@given(text=yaml_text)
def test_recipe_reader_returns_a_mapping_or_one_config_error(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.yaml"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        try:
            data = load_yaml(path)
        except InputError as exc:  # ConfigError is an InputError
            assert str(path) in str(exc)
            return
    assert isinstance(data, dict) and _utf8_clean(data)


def test_yaml_merge_keys_override_without_a_duplicate_error(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("base: &b {lr: 1, seed: 2}\ntraining:\n  <<: *b\n  lr: 3\n")
    assert {k: v for k, v in load_yaml(path)["training"].items() if k != "__lines__"} == {"lr": 3, "seed": 2}
    path.write_text("training:\n  <<: {lr: 1}\n  lr: 3\n  lr: 4\n")
    with pytest.raises(ConfigError, match="r.yaml:4: invalid YAML: duplicate key 'lr' \\(also on line 3\\)"):
        load_yaml(path)


# ------------------------------------------------------------------------------------------ slices
def _records(n: int, values: int, seed: int = 0) -> list[ResolvedRecord]:
    rng = random.Random(seed)
    return [ResolvedRecord(id=f"q{i}", abstained=rng.random() < 0.1, correct=rng.random() < 0.6,
                           confidence=rng.choice([None, 0.2, 0.5, 0.9]), confidence_source="given", hedged=False,
                           slice={"k": f"v{rng.randrange(values)}", **({"other": "o"} if i % 3 == 0 else {})})
            for i in range(n)]


def test_slice_groups_equal_a_count_per_value():
    records = _records(2000, 150)
    results = compute_results(records, n_boot=0)
    for key in ("k", "other"):
        expected: dict[str, list[ResolvedRecord]] = {}
        for r in records:
            if key in r.slice:
                expected.setdefault(r.slice[key], []).append(r)
        assert sorted(results.slices[key]) == sorted(expected)
        for value, members in expected.items():
            got = results.slices[key][value]
            assert got.n == len(members)
            accuracy = sum(r.correct and not r.abstained for r in members) / len(members)
            assert math.isclose(got.accuracy, accuracy, rel_tol=1e-12)


def test_slice_cap_holds_at_its_boundary(monkeypatch):
    monkeypatch.setattr(limits, "MAX_SLICE_VALUES", 9)
    records = _records(200, 8)  # 8 values of "k" and 1 of "other": 9 in all
    assert len(compute_results(records, n_boot=0).slices["k"]) == 8
    records[0].slice = {**records[0].slice, "k": "a ninth value"}
    with pytest.raises(InputError, match=r"field 'slice': 10 distinct slice values \(key 'k': 9\), more than the 9"):
        compute_results(records, n_boot=0)


# ------------------------------------------------------------------------------------------ the command
answer_text = st.one_of(st.text(max_size=40), st.sampled_from(
    ["Paris. Confidence: 8", "Confidence: 1e999", "Confidence: 99999999999999999999%", "I don't know.",
     "8/10", "confidence 0.8", "Confidence: -3", "Confidence: NaN", "I'm 1e308% confident", "\x00", "\u202e42"]))
prediction_rows = st.fixed_dictionaries(
    {"id": st.one_of(st.text(min_size=1, max_size=6), st.integers(-(10**30), 10**30))},
    optional={"response": answer_text, "reference": st.one_of(st.text(max_size=10), st.lists(st.text(max_size=5))),
              "confidence": st.one_of(st.none(), st.floats(0, 1), st.floats()), "correct": st.booleans(),
              "abstained": st.booleans(), "slice": st.one_of(st.text(max_size=4), st.dictionaries(
                  st.text(max_size=3), st.text(max_size=3), max_size=2)),
              "samples": st.lists(answer_text, max_size=2), "choices": st.lists(st.text(max_size=3), max_size=3)})


@settings(max_examples=15, derandomize=True, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(prediction_rows, min_size=1, max_size=6))
def test_eval_command_answers_any_file_with_results_or_one_line(lines):
    import contextlib
    import io

    from calrl.cli.main import main

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.jsonl"
        path.write_bytes("".join(json.dumps(r) + "\n" for r in lines).encode("utf-8", "surrogatepass"))
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["eval", "--predictions", str(path), "--out", str(Path(tmp) / "out"), "--bootstrap", "0"])
    assert code in (0, 2) and "Traceback" not in err.getvalue()
    if code == 2:
        assert err.getvalue().count("\n") == 1 and len(err.getvalue()) < 300
