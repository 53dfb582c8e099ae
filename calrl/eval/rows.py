"""A predictions row made a :class:`~calrl.data.records.PredictionRecord`: one row of any format, checked field
by field (:func:`record_from_row`), or a block of JSON lines at a time (:func:`fast_block`), which makes the
same records a few times faster and hands every block it is not sure of to the first.

Every problem is an :class:`~calrl.errors.InputError` naming the file, the line and the field.
"""

from __future__ import annotations

import functools
import math
import sys
from typing import Annotated, Any

from calrl.data.columns import PredictionColumns
from calrl.data.records import PREDICTION_FIELDS, PredictionRecord
from calrl.errors import InputError
from calrl.jsonio import JsonLinesColumns

# Records with equal slices, equal reference lists or equal responses share one object (10^6 items of a few
# slice values or of a few answers, letters or numbers, would otherwise hold 10^6 equal dicts, lists and
# strings); up to this many distinct values are shared, the rest keep their own. Nothing changes them.
MAX_SHARED_VALUES = 1 << 16


class RepeatedId(Exception):
    """An id given twice, found by :func:`fast_block` (which keeps no line numbers: the row reader names them)."""


class ReadState:
    """What the readers of one file keep from row to row: the ids seen, and the values records share."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.shared: tuple[dict[Any, Any], ...] = ({}, {}, {})  # slices, references, responses
        self.kept: dict[str, dict[Any, Any]] = {}  # per field of _SHARED_FIELDS: the value of each text


def share_equal_values(record: PredictionRecord, shared: tuple[dict[Any, Any], ...]) -> None:
    """Point ``record``'s slice, reference and response at the first equal one seen (see
    ``MAX_SHARED_VALUES``)."""
    slices, references, responses = shared
    if record.slice and len(slices) < MAX_SHARED_VALUES:
        record.slice = slices.setdefault(tuple(record.slice.items()), record.slice)
    if record.reference and len(references) < MAX_SHARED_VALUES:
        record.reference = references.setdefault(tuple(record.reference), record.reference)
    if record.response is not None and len(responses) < MAX_SHARED_VALUES:
        record.response = responses.setdefault(record.response, record.response)


@functools.cache
def _row_columns() -> JsonLinesColumns:
    """The fast reader of a predictions line: the keys :func:`record_from_row` reads, typed as it accepts them
    (lists of strings as tuples, the slice raw, read by :func:`loads_json`: each checked by the same functions, once
    per distinct value)."""
    import msgspec  # only a JSON lines file needs it (calrl.jsonio imports it in the reader, likewise)

    unset, opt = msgspec.UnsetType, msgspec.UNSET
    confidence = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
    texts = tuple[str, ...]  # hashable: kept by value
    row = msgspec.defstruct("PredictionRow", [
        ("id", str | int), ("response", str | None | unset, opt), ("question", str | None | unset, opt),
        ("reference", str | texts | None | unset, opt), ("choices", texts | None | unset, opt),
        ("samples", texts | None | unset, opt), ("correct", bool | None | unset, opt),
        ("abstained", bool | None | unset, opt), ("confidence", confidence | None | unset, opt),
        ("slice", msgspec.Raw | unset, opt)], forbid_unknown_fields=True, gc=False)
    return JsonLinesColumns(row)


def _refuse(field: str | None, message: str) -> InputError:
    return InputError(message, field=field)


# the fields whose values records share: what record_from_row makes of a value, and of the key left out (one
# per file, shared by its records as equal values are)
_SHARED_FIELDS = {"reference": (lambda v: _str_or_str_list(v, "reference", _refuse), lambda: None),
                  "choices": (lambda v: _str_list(v, "choices", _refuse), lambda: None),
                  "samples": (lambda v: _str_list(v, "samples", _refuse), lambda: None),
                  "slice": (lambda v: _slice(v, _refuse), dict)}


def fast_block(block: bytes, lines: int, state: ReadState) -> PredictionColumns | None:
    """The records of a block of JSON lines (:func:`calrl.io.iter_line_blocks`), by column, the same as
    :func:`record_from_row` makes of each line; None when a line is not one the fast reader takes (then the
    block is read row by row, which names any error). Raises RepeatedId on an id seen before."""
    reader = _row_columns()
    decoded = reader.decode(block, lines)
    if decoded is None:
        return None
    columns, absent = decoded
    try:
        ids = list(map(str, columns["id"]))  # an int id's text; ValueError past the int-to-text limit
    except ValueError:
        return None
    if not all(map(str.strip, ids)):
        return None
    unset = reader.unset
    raw = {}
    for name, (convert, left_out) in _SHARED_FIELDS.items():
        kept = state.kept.get(name) or state.kept.setdefault(name, {unset: left_out()})
        raw[name] = ([kept[unset]] * lines if absent[name] == lines
                     else reader.values(name, columns[name], convert, kept, limit=MAX_SHARED_VALUES))
        if raw[name] is None:
            return None
    given = {name: _given(columns[name], unset, absent[name])
             for name in ("response", "question", "confidence", "correct", "abstained")}
    responses = given["response"]
    if None in responses and not _usable(responses, given["abstained"], given["correct"], columns["confidence"],
                                         unset):
        return None
    if len(state.shared[2]) < MAX_SHARED_VALUES:
        responses = list(map(state.shared[2].setdefault, responses, responses))
    before = len(state.seen)
    state.seen.update(ids)
    if len(state.seen) != before + len(ids):
        raise RepeatedId
    nothing = [None] * len(ids)
    values = {"id": ids, "response": responses, **given, **raw, "prompt": nothing, "retries": nothing}
    return PredictionColumns({name: values[name] for name in PREDICTION_FIELDS})


def _given(column: list[Any], unset: Any, absent: int) -> list[Any]:
    """The column with None for a key not given (on ``absent`` lines)."""
    if absent == 0:
        return column
    if absent == len(column):
        return [None] * len(column)
    return [None if x is unset else x for x in column]


def _usable(responses: list[Any], abstained: list[Any], correct: list[Any], confidence: list[Any],
            unset: Any) -> bool:
    """Whether every row without a response can still be scored (record_from_row's rule)."""
    return all(abstained[i] is True or (correct[i] is not None and confidence[i] is not unset)
               for i, response in enumerate(responses) if response is None)


def record_from_row(row: dict[str, Any], *, path: str, line: int) -> PredictionRecord:
    """Validate one row (a JSON-like dict) and build the record; raises InputError naming the field."""

    def fail(field: str | None, message: str) -> InputError:
        return InputError(message, path=path, line=line, field=field)

    rid = row.get("id")
    if rid is None:
        raise fail("id", "missing (every prediction needs a unique id)")
    if isinstance(rid, bool) or not isinstance(rid, str | int):
        raise fail("id", f"expected a string, got {type_name(rid)}")
    rid = str(rid)
    if not rid.strip():
        raise fail("id", "empty")

    response = _opt_str(row, "response", fail)
    question = _opt_str(row, "question", fail)
    reference = _str_or_str_list(row.get("reference"), "reference", fail)
    choices = _str_list(row.get("choices"), "choices", fail)
    samples = _str_list(row.get("samples"), "samples", fail)
    correct = _opt_bool(row, "correct", fail)
    abstained = _opt_bool(row, "abstained", fail)
    confidence = _confidence(row.get("confidence"), fail)
    slice_ = _slice(row.get("slice"), fail)

    usable = (response is not None or abstained is True
              or (correct is not None and (confidence is not None or "confidence" in row)))
    if not usable:
        raise fail(None, "neither 'response' nor both 'correct' and 'confidence' are given "
                   "(one of them is needed to score the item)")
    return PredictionRecord(id=rid, response=response, reference=reference, confidence=confidence,
                            correct=correct, abstained=abstained, slice=slice_, samples=samples,
                            question=question, choices=choices)


def type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _opt_str(row: dict[str, Any], field: str, fail) -> str | None:
    value = row.get(field)
    if value is None or isinstance(value, str):
        return value
    raise fail(field, f"expected a string, got {type_name(value)}")


def _opt_bool(row: dict[str, Any], field: str, fail) -> bool | None:
    value = row.get(field)
    if value is None or isinstance(value, bool):
        return value
    raise fail(field, f"expected true, false or null, got {value!r}")


def _str_list(value: Any, field: str, fail) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list):
        raise fail(field, f"expected a list of strings, got {type_name(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise fail(field, f"item {i} is {type_name(item)}, expected a string")
    return value


def _str_or_str_list(value: Any, field: str, fail) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    try:
        return _str_list(value, field, fail)
    except InputError:
        raise fail(field, f"expected a string or a list of strings, got {type_name(value)}") from None


def _confidence(value: Any, fail) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise fail("confidence", f"expected a number in [0, 1] or null, got {value!r}")
    if isinstance(value, int) and not 0 <= value <= 1:  # float() of a 400-digit integer overflows
        raise fail("confidence", f"{value} is outside [0, 1]")
    value = float(value)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise fail("confidence", f"{value:g} is outside [0, 1]")
    return value


def _slice(value: Any, fail) -> dict[str, str]:
    """A slice is a string (key ``slice``) or an object of string to string; null values are dropped."""
    if value is None:
        return {}
    if isinstance(value, str):
        return {"slice": sys.intern(value)}
    if not isinstance(value, dict):
        raise fail("slice", f"expected a string or an object of strings, got {type_name(value)}")
    out: dict[str, str] = {}
    for key, item in value.items():
        if item is None:  # columnar formats fill absent keys of a struct with null
            continue
        if not isinstance(key, str) or not isinstance(item, str):
            raise fail("slice", f"value of {key!r} is {type_name(item)}, expected a string")
        out[sys.intern(key)] = sys.intern(item)
    return out
