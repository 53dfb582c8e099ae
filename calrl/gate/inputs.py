"""The two sides of ``calrl compare``: resolved records read from an eval output folder or a predictions file.

A side is an eval output folder holding ``resolved.jsonl`` (records already parsed and graded) or
``predictions.jsonl`` (or a ``metrics.json`` naming the predictions file it was computed from), or a
predictions file (JSONL, CSV, Parquet, a saved ``datasets`` folder) that is resolved here. Every problem is
an InputError naming the file, the line and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from calrl.data.records import ResolvedRecord
from calrl.errors import InputError
from calrl.eval.loading import resolve_predictions_file
from calrl.grading import DEFAULT_GRADER
from calrl.io import check_input, iter_lines, read_text
from calrl.jsonio import loads_json

RESOLVED_NAME = "resolved.jsonl"
PREDICTIONS_NAME = "predictions.jsonl"
METRICS_NAME = "metrics.json"


def load_side(
    path: str | Path,
    *,
    use_hedges: bool = True,
    grader: str = DEFAULT_GRADER,
) -> tuple[list[ResolvedRecord], str]:
    """Resolved records of one side and a description of where they came from."""
    p = Path(path)
    if not p.exists():
        raise InputError("not found (expected an eval output folder or a predictions file)", path=str(path))
    if p.is_dir():
        if (p / RESOLVED_NAME).exists():
            return read_resolved(p / RESOLVED_NAME), str(p / RESOLVED_NAME)
        if (p / PREDICTIONS_NAME).exists():
            p = p / PREDICTIONS_NAME
        elif (p / METRICS_NAME).exists():
            p = _predictions_named_by_metrics(p / METRICS_NAME)
        elif not (p / "dataset_info.json").is_file() and not (p / "dataset_dict.json").is_file():
            raise InputError(
                f"no {RESOLVED_NAME}, {PREDICTIONS_NAME} or {METRICS_NAME} here: the gate needs "
                "item-level records to match by id (run `calrl eval` into this folder, or pass "
                "the predictions file)",
                path=str(path),
            )
    return resolve_predictions_file(p, use_hedges=use_hedges, grader=grader)[1], str(p)


def _predictions_named_by_metrics(metrics_path: Path) -> Path:
    """The predictions file an eval folder was computed from (``source`` in its metrics.json).

    ``calrl eval --predictions FILE`` records FILE as given on its command line; a relative path is
    tried from the current folder, then from the eval folder's parent.
    """
    doc = loads_json(read_text(check_input(metrics_path, option="metrics.json")), path=str(metrics_path))
    source = doc.get("source") if isinstance(doc, dict) else None
    if not isinstance(source, str) or not source:
        raise InputError(
            f"no item-level records: metrics.json names no predictions file and there is no "
            f"{RESOLVED_NAME} or {PREDICTIONS_NAME} beside it",
            path=str(metrics_path),
            field="source",
        )
    for candidate in (Path(source), metrics_path.parent.parent / source):
        if candidate.exists():
            return candidate
    raise InputError(
        f"the predictions file it was computed from ({source!r}) is not found; pass that file directly",
        path=str(metrics_path),
        field="source",
    )


_RESOLVED_FIELDS = {"id": str, "abstained": bool, "correct": bool, "confidence_source": str, "hedged": bool}
_OPTIONAL_TEXT = ("answer", "response")


def read_resolved(path: str | Path) -> list[ResolvedRecord]:
    """Read ``resolved.jsonl`` (one ResolvedRecord per line, as ``ResolvedRecord.to_json`` writes it)."""
    check_input(path, option=RESOLVED_NAME)
    records: list[ResolvedRecord] = []
    seen: set[str] = set()
    for line_no, raw in iter_lines(path):
        if raw.strip():
            record = _resolved_row(loads_json(raw, path=str(path), line=line_no), str(path), line_no)
            if record.id in seen:
                raise InputError(f"duplicate id {record.id!r}", path=str(path), line=line_no, field="id")
            seen.add(record.id)
            records.append(record)
    if not records:
        raise InputError("no records (empty input)", path=str(path))
    return records


def _resolved_row(row: Any, path: str, line: int) -> ResolvedRecord:
    def fail(message: str, field: str | None = None) -> InputError:
        return InputError(message, path=path, line=line, field=field)

    if not isinstance(row, dict):
        raise fail("expected a JSON object per line")
    for name, kind in _RESOLVED_FIELDS.items():
        if not isinstance(row.get(name), kind):
            raise fail(f"expected {kind.__name__}, got {row.get(name)!r}", name)
    conf = row.get("confidence")
    if conf is not None and (
        isinstance(conf, bool) or not isinstance(conf, int | float) or not 0.0 <= conf <= 1.0
    ):
        raise fail(f"expected a number in [0, 1] or null, got {conf!r}", "confidence")
    slice_ = row.get("slice") or {}
    if not isinstance(slice_, dict) or not all(isinstance(v, str) for v in slice_.values()):
        raise fail("expected an object of strings", "slice")
    samples, reference = row.get("samples"), row.get("reference")
    for name, value in (("samples", samples), ("reference", reference)):
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise fail("expected a list of strings or null", name)
    for name in _OPTIONAL_TEXT:
        if row.get(name) is not None and not isinstance(row[name], str):
            raise fail("expected a string or null", name)
    return ResolvedRecord(
        id=row["id"],
        abstained=row["abstained"],
        correct=row["correct"],
        confidence=None if conf is None else float(conf),
        confidence_source=row["confidence_source"],
        hedged=row["hedged"],
        slice=dict(slice_),
        samples=samples,
        answer=row.get("answer"),
        response=row.get("response"),
        reference=reference,
    )
