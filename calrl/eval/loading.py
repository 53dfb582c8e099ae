"""Read a predictions file (JSONL, CSV, Parquet or a saved ``datasets`` folder) into validated records.

Every problem is reported as an :class:`~calrl.errors.InputError` naming the file, the 1-based line
(JSONL line, CSV data row counted as a file line, or row number for columnar formats) and the field.
"""

from __future__ import annotations

import csv
import gc
import itertools
from array import array
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calrl.confidence import ConfidenceReader
from calrl.confidence.reading import DEFAULT_PARSER
from calrl.data.columns import GroupedResolved, PredictionColumns
from calrl.data.readers import check_arrow_table, csv_error, is_saved_dataset, open_saved
from calrl.data.records import PredictionRecord, ResolvedRecord
from calrl.errors import InputError
from calrl.eval.resolving import TextMemo, group_records, resolve_record
from calrl.eval.rows import (  # record_from_row: also imported from here
    ReadState,
    RepeatedId,
    fast_block,
    record_from_row,
    share_equal_values,
    type_name,
)
from calrl.grading import DEFAULT_GRADER
from calrl.io import block_lines, check_input, iter_line_blocks, iter_lines, read_text
from calrl.jsonio import loads_json

SUFFIX_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv",
                  ".parquet": "parquet", ".pq": "parquet"}
# CSV cells of these fields may hold JSON text (a list or an object).
JSON_CELL_FIELDS = ("reference", "slice", "samples", "choices")
TRUE_WORDS, FALSE_WORDS = {"true", "1", "yes"}, {"false", "0", "no"}


def load_predictions(path: str | Path) -> list[PredictionRecord]:
    """Load and validate a predictions file; the format follows the extension (a folder = ``datasets``)."""
    return [record for _, record in iter_predictions(path)]


def iter_predictions(path: str | Path) -> Iterator[tuple[int, PredictionRecord]]:
    """``(line, record)`` of each prediction, validated as it is read (the file is streamed).

    Raises InputError naming the file (and line and field) on anything wrong, including an empty file.
    """
    for lines, block in iter_prediction_blocks(path):
        yield from zip(lines, block.records(), strict=True)


def iter_prediction_blocks(path: str | Path) -> Iterator[tuple[Sequence[int], PredictionColumns]]:
    """The predictions in blocks, ``(lines, records by column)``, validated as they are read (see
    :func:`iter_predictions`).

    A JSON lines file is read a block of lines at a time by :func:`calrl.eval.rows.fast_block`; a block it
    does not take, and every other format, row by row (:func:`iter_records`). On any error the file is read
    again row by row, whose first error is the one raised: the message names the same problem, line and field
    whichever reader met it first.
    """
    p = check_input(path, option="--predictions", allow_dir=True)
    if p.is_dir() or SUFFIX_FORMATS.get(p.suffix.lower()) != "jsonl":
        yield from _blocks_of(iter_records(p, str(path)))
        return
    state = ReadState()
    try:
        for first, lines, block in iter_line_blocks(p):
            columns = fast_block(block, lines, state)
            if columns is None:
                yield from _blocks_of(_checked_records(_iter_jsonl(p, block_lines(p, first, block)), str(path),
                                                       state))
            else:
                yield range(first, first + lines), columns
        if not state.seen:
            raise InputError("no predictions in the file (empty input)", path=str(path))
    except (InputError, RepeatedId):
        for _ in iter_records(p, str(path)):  # raises the first error of the file, named as ever
            pass
        raise


def iter_records(p: Path, path: str) -> Iterator[tuple[int, PredictionRecord]]:
    """``(line, record)`` of each row of any format, validated row by row (:func:`record_from_row`)."""
    lines_seen: dict[str, int] = {}
    yield from _checked_records(_iter_rows(p), path, ReadState(), lines_seen)
    if not lines_seen:
        raise InputError("no predictions in the file (empty input)", path=path)


def _checked_records(rows: Iterable[tuple[int, dict[str, Any]]], path: str, state: ReadState,
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
            raise RepeatedId
        state.seen.add(record.id)
        share_equal_values(record, state.shared)
        yield line, record


def _blocks_of(pairs: Iterable[tuple[int, PredictionRecord]], size: int = 1 << 15,
               ) -> Iterator[tuple[list[int], PredictionColumns]]:
    pairs = iter(pairs)
    while chunk := list(itertools.islice(pairs, size)):
        yield [line for line, _ in chunk], PredictionColumns.of([record for _, record in chunk])


def resolve_predictions_file(path: str | Path, *, use_hedges: bool = True, grader: str = DEFAULT_GRADER,
                             confidence_parser: str = DEFAULT_PARSER,
                             ) -> tuple[list[PredictionRecord], list[ResolvedRecord]]:
    """Load and validate a predictions file, then resolve it (parse, detect abstention, grade) item by
    item, so that an item that cannot be resolved is reported with the file and its line."""
    done = resolve_predictions(path, use_hedges=use_hedges, grader=grader, confidence_parser=confidence_parser)
    return done.table.records(), list(done.resolved)


@dataclass(frozen=True)
class ResolvedPredictions:
    """A predictions file read (``table``: its records by column) and resolved (``resolved``, a list, or a
    :class:`~calrl.data.columns.GroupedResolved` when resolved a group at a time: then ``groups`` is each
    record's group, named by its first record, see :func:`calrl.eval.resolving.group_records`)."""

    table: PredictionColumns
    resolved: Sequence[ResolvedRecord]
    groups: list[int] | None


def resolve_predictions(path: str | Path, *, use_hedges: bool = True, grader: str = DEFAULT_GRADER,
                        confidence_parser: str = DEFAULT_PARSER) -> ResolvedPredictions:
    """:func:`resolve_predictions_file`, by column: records equal but for their id, question and prompt are
    resolved once (with calrl's own graders, whose grades are kept; a registered grader grades each record)."""
    lines, table = array("q"), PredictionColumns()  # an array: 10^6 line numbers as ints would take 32 MB more
    with gc_paused():
        for block_lines_, block in iter_prediction_blocks(path):  # all validated before any item resolves
            lines.extend(block_lines_)
            table.extend(block)
        memo = _at_line(path, lines[0], lambda: TextMemo(ConfidenceReader(confidence_parser, purpose="eval",
                                                                          use_hedges=use_hedges), grader))
        try:
            grouped = memo.keeps_grades()
        except InputError:  # an unknown grader: reported at the first item graded, as each item is resolved
            grouped = False
        if not grouped:
            resolved = [_at_line(path, line, resolve_record, record, memo=memo)
                        for line, record in zip(lines, table.records(), strict=True)]
            return ResolvedPredictions(table, resolved, None)
        groups = group_records(table)
        firsts = {g: _at_line(path, lines[g], resolve_record, table.record(g), memo=memo)
                  for g in dict.fromkeys(groups)}  # each group at its first record, in order
        return ResolvedPredictions(table, GroupedResolved(table["id"], groups, firsts), groups)


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
            raise InputError(f"expected a JSON object per line, got {type_name(row)}", path=str(p), line=line_no)
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


