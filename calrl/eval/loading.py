"""Read a predictions file (JSONL, CSV, Parquet or a saved ``datasets`` folder) into validated records.

Every problem is reported as an :class:`~calrl.errors.InputError` naming the file, the 1-based line
(JSONL line, CSV data row counted as a file line, or row number for columnar formats) and the field.
"""

from __future__ import annotations

import csv
import functools
import gc
import math
import sys
from array import array
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from calrl.confidence import ConfidenceReader
from calrl.confidence.reading import DEFAULT_PARSER
from calrl.data.readers import check_arrow_table, csv_error, is_saved_dataset, open_saved
from calrl.data.records import PredictionRecord, ResolvedRecord
from calrl.errors import InputError
from calrl.eval.runner import TextMemo, group_records, group_starts, resolve_record, resolved_in_groups
from calrl.grading import DEFAULT_GRADER
from calrl.io import block_lines, check_input, iter_line_blocks, iter_lines, read_text
from calrl.jsonio import JsonLinesColumns, loads_json

SUFFIX_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv",
                  ".parquet": "parquet", ".pq": "parquet"}
# CSV cells of these fields may hold JSON text (a list or an object).
JSON_CELL_FIELDS = ("reference", "slice", "samples", "choices")
TRUE_WORDS, FALSE_WORDS = {"true", "1", "yes"}, {"false", "0", "no"}
# Records with equal slices, equal reference lists or equal responses share one object (10^6 items of a few
# slice values or of a few answers, letters or numbers, would otherwise hold 10^6 equal dicts, lists and
# strings); up to this many distinct values are shared, the rest keep their own. Nothing changes them.
MAX_SHARED_VALUES = 1 << 16


def load_predictions(path: str | Path) -> list[PredictionRecord]:
    """Load and validate a predictions file; the format follows the extension (a folder = ``datasets``)."""
    return [record for _, record in iter_predictions(path)]


def iter_predictions(path: str | Path) -> Iterator[tuple[int, PredictionRecord]]:
    """``(line, record)`` of each prediction, validated as it is read (the file is streamed).

    Raises InputError naming the file (and line and field) on anything wrong, including an empty file.
    """
    for lines, records in iter_prediction_blocks(path):
        yield from zip(lines, records, strict=True)


def iter_prediction_blocks(path: str | Path) -> Iterator[tuple[Sequence[int], list[PredictionRecord]]]:
    """The predictions in blocks, ``(lines, records)``, validated as they are read (see :func:`iter_predictions`).

    A JSON lines file is read a block of lines at a time by :class:`calrl.jsonio.JsonLinesColumns` and
    :func:`fast_block`; a block it cannot take, and every other format, row by row (:func:`iter_records`).
    On any error the file is read again row by row, whose first error is the one raised: the message names
    the same problem, line and field whichever reader met it first.
    """
    p = check_input(path, option="--predictions", allow_dir=True)
    if p.is_dir() or SUFFIX_FORMATS.get(p.suffix.lower()) != "jsonl":
        yield from _blocks_of(iter_records(p, str(path)))
        return
    state = _BlockState()
    try:
        for first, lines, block in iter_line_blocks(p):
            records = fast_block(block, lines, state)
            if records is None:
                pairs = list(_checked_records(_iter_jsonl(p, block_lines(p, first, block)), str(path), state))
                yield [line for line, _ in pairs], [record for _, record in pairs]
            else:
                yield range(first, first + lines), records
        if not state.seen:
            raise InputError("no predictions in the file (empty input)", path=str(path))
    except (InputError, _Repeated):
        for _ in iter_records(p, str(path)):  # raises the first error of the file, named as ever
            pass
        raise


def iter_records(p: Path, path: str) -> Iterator[tuple[int, PredictionRecord]]:
    """``(line, record)`` of each row of any format, validated row by row (:func:`record_from_row`)."""
    lines_seen: dict[str, int] = {}
    yield from _checked_records(_iter_rows(p), path, _BlockState(), lines_seen)
    if not lines_seen:
        raise InputError("no predictions in the file (empty input)", path=path)


def _checked_records(rows: Iterable[tuple[int, dict[str, Any]]], path: str, state: _BlockState,
                     lines_seen: dict[str, int] | None = None) -> Iterator[tuple[int, PredictionRecord]]:
    """Records of the rows, each id checked against those seen before (``lines_seen``: where, to name them)."""
    for line, row in rows:
        record = record_from_row(row, path=path, line=line)
        if lines_seen is not None:
            if record.id in lines_seen:
                raise InputError(f"duplicate id {record.id!r} (lines {lines_seen[record.id]} and {line})",
                                 path=path, line=line, field="id")
            lines_seen[record.id] = line
        elif record.id in state.seen:
            raise _Repeated
        state.seen.add(record.id)
        _share_equal_values(record, state.shared)
        yield line, record


def _blocks_of(pairs: Iterable[tuple[int, PredictionRecord]], size: int = 1 << 15,
               ) -> Iterator[tuple[list[int], list[PredictionRecord]]]:
    lines: list[int] = []
    records: list[PredictionRecord] = []
    for line, record in pairs:
        lines.append(line)
        records.append(record)
        if len(records) == size:
            yield lines, records
            lines, records = [], []
    if records:
        yield lines, records


class _Repeated(Exception):
    """An id given twice, found by the block reader (which keeps no line numbers: the row reader names them)."""


class _BlockState:
    """What the readers keep across blocks: the ids seen, and the values shared between records."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.shared: tuple[dict[Any, Any], ...] = ({}, {}, {})  # slices, references, responses
        self.raw: dict[str, dict[Any, Any]] = {}  # per raw field: the value of each text, seeded by fast_block


def _share_equal_values(record: PredictionRecord, shared: tuple[dict[Any, Any], ...]) -> None:
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


# the fields whose values records share: what record_from_row makes of a value, and of the key left out
_SHARED_FIELDS = {"reference": (lambda v: _str_or_str_list(v, "reference", _refuse), None),
               "choices": (lambda v: _str_list(v, "choices", _refuse), None),
               "samples": (lambda v: _str_list(v, "samples", _refuse), None),
               "slice": (lambda v: _slice(v, _refuse), {})}


def fast_block(block: bytes, lines: int, state: _BlockState) -> list[PredictionRecord] | None:
    """The records of a block of JSON lines (:func:`calrl.io.iter_line_blocks`), the same as
    :func:`record_from_row` makes of each line; None when a line is not one the fast reader takes (then the
    block is read row by row, which names any error). Raises _Repeated on an id seen before."""
    reader = _row_columns()
    columns = reader.decode(block, lines)
    if columns is None:
        return None
    try:
        ids = list(map(str, columns["id"]))  # an int id's text; ValueError past the int-to-text limit
    except ValueError:
        return None
    if not all(map(str.strip, ids)):
        return None
    unset = reader.unset
    raw = {}
    for name, (convert, absent) in _SHARED_FIELDS.items():
        kept = state.raw.setdefault(name, {unset: absent})
        raw[name] = reader.values(name, columns[name], convert, kept, limit=MAX_SHARED_VALUES)
        if raw[name] is None:
            return None
    given = {name: _given(columns[name], unset) for name in ("response", "question", "confidence", "correct",
                                                              "abstained")}
    responses = given["response"]
    if None in responses and not _usable(responses, given["abstained"], given["correct"], columns["confidence"],
                                         unset):
        return None
    if len(state.shared[2]) < MAX_SHARED_VALUES:
        responses = list(map(state.shared[2].setdefault, responses, responses))
    before = len(state.seen)
    state.seen.update(ids)
    if len(state.seen) != before + len(ids):
        raise _Repeated
    return list(map(PredictionRecord, ids, responses, raw["reference"], given["confidence"], given["correct"],
                    given["abstained"], raw["slice"], raw["samples"], given["question"], raw["choices"]))


def _given(column: list[Any], unset: Any) -> list[Any]:
    """The column with None for a key not given."""
    absent = column.count(unset)
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


def resolve_predictions_file(path: str | Path, *, use_hedges: bool = True, grader: str = DEFAULT_GRADER,
                             confidence_parser: str = DEFAULT_PARSER,
                             ) -> tuple[list[PredictionRecord], list[ResolvedRecord]]:
    """Load and validate a predictions file, then resolve it (parse, detect abstention, grade) item by
    item, so that an item that cannot be resolved is reported with the file and its line."""
    done = resolve_predictions(path, use_hedges=use_hedges, grader=grader, confidence_parser=confidence_parser)
    return done.records, done.resolved


@dataclass(frozen=True)
class ResolvedPredictions:
    """A predictions file read and resolved: its records, their resolved items and, when they were resolved a
    group at a time, each record's group (:func:`calrl.eval.runner.group_records`; else None)."""

    records: list[PredictionRecord]
    resolved: list[ResolvedRecord]
    groups: list[int] | None


def resolve_predictions(path: str | Path, *, use_hedges: bool = True, grader: str = DEFAULT_GRADER,
                        confidence_parser: str = DEFAULT_PARSER) -> ResolvedPredictions:
    """:func:`resolve_predictions_file`, with the groups: records equal but for their id, question and prompt
    are resolved once (with calrl's own graders, whose grades are kept; a registered grader grades each)."""
    lines, records = array("q"), []  # an array: 10^6 line numbers as ints would take 32 MB more
    with gc_paused():
        for block_lines_, block_records in iter_prediction_blocks(path):  # all validated before any resolves
            lines.extend(block_lines_)
            records.extend(block_records)
        memo = _at_line(path, lines[0], lambda: TextMemo(ConfidenceReader(confidence_parser, purpose="eval",
                                                                          use_hedges=use_hedges), grader))
        try:
            grouped = memo.keeps_grades()
        except InputError:  # an unknown grader: reported at the first item graded, as each item is resolved
            grouped = False
        if not grouped:
            resolved = [_at_line(path, line, resolve_record, record, memo=memo)
                        for line, record in zip(lines, records, strict=True)]
            return ResolvedPredictions(records, resolved, None)
        groups = group_records(records)
        firsts = [_at_line(path, lines[i], resolve_record, records[i], memo=memo) for i in group_starts(groups)]
        return ResolvedPredictions(records, resolved_in_groups(records, firsts, groups), groups)


def _at_line(path: str | Path, line: int, make: Any, *args: Any, **kwargs: Any) -> Any:
    """``make(*args, **kwargs)``, an InputError without a file named as ``path`` at ``line``."""
    try:
        return make(*args, **kwargs)
    except InputError as exc:
        if exc.path is not None:
            raise
        raise InputError(str(exc), path=str(path), line=line) from None


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: the records are acyclic (reference counting frees them), and
    while millions of them are built every full collection walks all of those made so far (9-16% of a
    10^6-row eval's time). Collection resumes afterwards, as it was."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _iter_rows(p: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    if p.is_dir():
        return _iter_dataset(p)
    fmt = SUFFIX_FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise InputError(f"unknown format {p.suffix or '(no extension)'!r}; expected .jsonl, .csv, .parquet "
                         "or a folder written by datasets' save_to_disk", path=str(p))
    return {"jsonl": _iter_jsonl, "csv": _iter_csv, "parquet": _iter_parquet}[fmt](p)


def _iter_jsonl(p: Path, lines: Iterable[tuple[int, str]] | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of a JSONL file (or of ``lines`` of it), streamed; a byte-order mark at the start is skipped, blank
    lines too."""
    for line_no, raw in iter_lines(p) if lines is None else lines:
        if not raw.strip():
            continue
        row = loads_json(raw, path=str(p), line=line_no)
        if not isinstance(row, dict):
            raise InputError(f"expected a JSON object per line, got {_type_name(row)}", path=str(p), line=line_no)
        yield line_no, row


def _iter_csv(p: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(read_text(p).splitlines(keepends=True), strict=True)  # strict: a cut file fails
    try:
        names = reader.fieldnames
    except csv.Error as exc:
        raise csv_error(exc, p, reader.line_num) from None
    if names is None:
        return
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise InputError("duplicate column (the header names it twice)", path=str(p), line=1, field=twice)
    try:
        for row in reader:
            line_no = reader.line_num  # physical line where this row ended (1-based, header = line 1)
            if None in row:
                raise InputError("more cells than header columns", path=str(p), line=line_no)
            if all((v or "").strip() == "" for v in row.values()):
                continue
            yield line_no, _csv_row(row, path=str(p), line=line_no)
    except csv.Error as exc:
        raise csv_error(exc, p, reader.line_num) from None


def _csv_row(row: dict[str, str | None], *, path: str, line: int) -> dict[str, Any]:
    """Turn CSV text cells into JSON-like values: empty = null, JSON text for list/object fields.

    Columns named ``slice.KEY`` are gathered into the ``slice`` object.
    """
    out: dict[str, Any] = {}
    slice_cols: dict[str, str] = {}
    for key, cell in row.items():
        value = None if cell is None or cell.strip() == "" else cell
        if key.startswith("slice.") and len(key) > len("slice."):
            if value is not None:
                slice_cols[key[len("slice."):]] = value
            continue
        if value is not None and key in JSON_CELL_FIELDS and value.lstrip()[:1] in "[{":
            value = loads_json(value, path=path, line=line, field=key, what="JSON in CSV cell")
        elif value is not None and key == "samples":
            raise InputError("expected a JSON list of strings", path=path, line=line, field=key)
        elif value is not None and key in ("correct", "abstained"):
            word = value.strip().lower()
            value = True if word in TRUE_WORDS else False if word in FALSE_WORDS else value
        elif value is not None and key == "confidence":
            value = _number_or_text(value)
        out[key] = value
    if slice_cols:
        if out.get("slice") is not None:
            raise InputError("give either a 'slice' column or 'slice.KEY' columns, not both", path=path,
                             line=line, field="slice")
        out["slice"] = slice_cols
    return out


def _number_or_text(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _iter_parquet(p: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    # pyarrow (0.1 s): only Parquet predictions need it, not calrl eval/compare/recalibrate of a JSONL file
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(p)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"cannot read Parquet: {exc}", path=str(p)) from None
    yield from enumerate(check_arrow_table(table, p).to_pylist(), start=1)


def _iter_dataset(p: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    import datasets  # 0.7 s: only saved datasets folders need it, not a JSONL/CSV/Parquet predictions file

    if not is_saved_dataset(p):
        raise InputError("not a saved datasets folder (no dataset_info.json, dataset_dict.json or state.json)",
                         path=str(p))
    ds = open_saved(p)
    if isinstance(ds, datasets.DatasetDict):
        if len(ds) != 1:
            raise InputError(f"a DatasetDict with splits {sorted(ds)}; save a single split", path=str(p))
        ds = next(iter(ds.values()))
    check_arrow_table(ds.data.table, p)
    yield from enumerate(ds, start=1)


def record_from_row(row: dict[str, Any], *, path: str, line: int) -> PredictionRecord:
    """Validate one row (a JSON-like dict) and build the record; raises InputError naming the field."""

    def fail(field: str | None, message: str) -> InputError:
        return InputError(message, path=path, line=line, field=field)

    rid = row.get("id")
    if rid is None:
        raise fail("id", "missing (every prediction needs a unique id)")
    if isinstance(rid, bool) or not isinstance(rid, str | int):
        raise fail("id", f"expected a string, got {_type_name(rid)}")
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


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _opt_str(row: dict[str, Any], field: str, fail) -> str | None:
    value = row.get(field)
    if value is None or isinstance(value, str):
        return value
    raise fail(field, f"expected a string, got {_type_name(value)}")


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
        raise fail(field, f"expected a list of strings, got {_type_name(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise fail(field, f"item {i} is {_type_name(item)}, expected a string")
    return value


def _str_or_str_list(value: Any, field: str, fail) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    try:
        return _str_list(value, field, fail)
    except InputError:
        raise fail(field, f"expected a string or a list of strings, got {_type_name(value)}") from None


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
        raise fail("slice", f"expected a string or an object of strings, got {_type_name(value)}")
    out: dict[str, str] = {}
    for key, item in value.items():
        if item is None:  # columnar formats fill absent keys of a struct with null
            continue
        if not isinstance(key, str) or not isinstance(item, str):
            raise fail("slice", f"value of {key!r} is {_type_name(item)}, expected a string")
        out[sys.intern(key)] = sys.intern(item)
    return out
