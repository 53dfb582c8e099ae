"""Read a predictions file (JSONL, CSV, Parquet or a saved ``datasets`` folder) into validated records.

Every problem is reported as an :class:`~calrl.errors.InputError` naming the file, the 1-based line
(JSONL line, CSV data row counted as a file line, or row number for columnar formats) and the field.
"""

from __future__ import annotations

import csv
import gc
import math
import sys
from array import array
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from calrl.confidence import ConfidenceReader
from calrl.confidence.reading import DEFAULT_PARSER
from calrl.data.readers import check_arrow_table, csv_error, is_saved_dataset, open_saved
from calrl.data.records import PredictionRecord, ResolvedRecord
from calrl.errors import InputError
from calrl.eval.runner import TextMemo, resolve_record
from calrl.grading import DEFAULT_GRADER
from calrl.io import check_input, iter_lines, read_text
from calrl.jsonio import loads_json

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
    p = check_input(path, option="--predictions", allow_dir=True)
    seen: dict[str, int] = {}
    shared: tuple[dict[Any, Any], ...] = ({}, {}, {})  # slices, references, responses
    for line, row in _iter_rows(p):
        record = record_from_row(row, path=str(path), line=line)
        if record.id in seen:
            raise InputError(f"duplicate id {record.id!r} (lines {seen[record.id]} and {line})",
                             path=str(path), line=line, field="id")
        seen[record.id] = line
        _share_equal_values(record, shared)
        yield line, record
    if not seen:
        raise InputError("no predictions in the file (empty input)", path=str(path))


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


def resolve_predictions_file(path: str | Path, *, use_hedges: bool = True, grader: str = DEFAULT_GRADER,
                             confidence_parser: str = DEFAULT_PARSER,
                             ) -> tuple[list[PredictionRecord], list[ResolvedRecord]]:
    """Load and validate a predictions file, then resolve it (parse, detect abstention, grade) item by
    item, so that an item that cannot be resolved is reported with the file and its line."""
    lines, records = array("q"), []  # an array: 10^6 line numbers as ints would take 32 MB more
    memo: TextMemo | None = None
    resolved: list[ResolvedRecord] = []
    with gc_paused():
        for line, record in iter_predictions(path):  # the whole file is validated before any item resolves
            lines.append(line)
            records.append(record)
        for line, record in zip(lines, records, strict=True):
            try:  # the reader is made here, once: an unknown parser is reported as before, at the first item
                memo = memo or TextMemo(ConfidenceReader(confidence_parser, purpose="eval",
                                                         use_hedges=use_hedges), grader)
                resolved.append(resolve_record(record, memo=memo))
            except InputError as exc:
                if exc.path is not None:
                    raise
                raise InputError(str(exc), path=str(path), line=line) from None
    return records, resolved


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


def _iter_jsonl(p: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of a JSONL file, streamed; a byte-order mark at the start is skipped, blank lines too."""
    for line_no, raw in iter_lines(p):
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
