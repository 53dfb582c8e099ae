"""``calrl recalibrate apply`` as a library call: rewrite the confidences of a predictions file.

:func:`run_apply` rewrites the ``confidence`` field of every answered record that has a confidence (given,
stated or hedged) and copies everything else unchanged; abstentions and answers without any confidence are
left as they are. The output has the input's format (JSONL, CSV, Parquet, or a saved ``datasets`` folder) and
is written to a temporary path renamed into place.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from calrl.data.readers import is_saved_dataset
from calrl.errors import InputError
from calrl.eval.loading import SUFFIX_FORMATS, resolve_predictions_file
from calrl.formatting import fmt
from calrl.grading import DEFAULT_GRADER
from calrl.io import atomic_path, check_input, check_output, iter_lines, read_text, staged_dir, write_text
from calrl.jsonio import loads_json
from calrl.recalibration.calibrators import Calibrator
from calrl.recalibration.report import DOC_KEYS


@dataclass(frozen=True)
class ApplyResult:
    """What :func:`run_apply` did: how many records it recalibrated and their mean confidence before/after."""

    method: str
    out: Path
    n_records: int
    n_recalibrated: int
    n_abstained: int  # left untouched
    n_missing: int  # answers without a confidence, left untouched
    mean_before: float | None  # None when no record was recalibrated
    mean_after: float | None

    def summary_line(self) -> str:
        """What ``calrl recalibrate apply`` prints."""
        return (
            f"recalibrated {self.n_recalibrated} of {self.n_records} records with {self.method} "
            f"(untouched: {self.n_abstained} abstentions, {self.n_missing} answers without confidence); "
            f"mean confidence {fmt(self.mean_before)} -> {fmt(self.mean_after)}; wrote {self.out}"
        )


def load_calibrator(path: str | Path) -> tuple[Calibrator, dict[str, Any]]:
    """Read calibrator.json and rebuild the calibrator; InputError names the file and the field."""
    p = check_input(path, option="--calibrator")
    doc = loads_json(read_text(p), path=str(path))
    if not isinstance(doc, dict):
        raise InputError("expected a JSON object", path=str(path))
    try:
        calibrator = Calibrator.from_dict({k: v for k, v in doc.items() if k not in DOC_KEYS})
    except InputError as exc:  # names the field, not the file
        raise InputError(str(exc), path=str(path)) from None
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise InputError(f"invalid calibrator: {exc!r}", path=str(path)) from None
    return calibrator, doc


def run_apply(
    calibrator: str | Path,
    predictions: str | Path,
    out: str | Path,
    *,
    overwrite: bool = False,
    use_hedges: bool = True,
    grader: str = DEFAULT_GRADER,
) -> ApplyResult:
    """Recalibrate ``predictions`` with the calibrator file ``calibrator`` into ``out`` (the input's format)."""
    fitted, doc = load_calibrator(calibrator)
    src = check_input(predictions, option="--predictions", allow_dir=True)
    out = Path(out)
    if src.is_dir() and not is_saved_dataset(src):
        raise InputError("not a saved datasets folder (no dataset_info.json, dataset_dict.json or state.json)",
                         path=str(src))
    fmt_in = "dataset" if src.is_dir() else SUFFIX_FORMATS.get(src.suffix.lower())
    out_fmt = "dataset" if not out.suffix else SUFFIX_FORMATS.get(out.suffix.lower())
    if fmt_in is not None and out_fmt != fmt_in:
        raise InputError(
            f"the output must have the input's format ({fmt_in}); got {out.suffix or 'a folder'!r}",
            path=str(out),
        )
    check_output(out, option="--out", kind="tree" if fmt_in == "dataset" else "file",
                 inputs=[src, Path(calibrator)], overwrite=overwrite)
    resolved = resolve_predictions_file(src, use_hedges=use_hedges, grader=grader)[1]

    targets = [r for r in resolved if not r.abstained and r.confidence is not None]
    before = torch.tensor([r.confidence for r in targets], dtype=torch.float64)
    after = fitted.apply(before) if targets else before
    new_conf = {r.id: float(c) for r, c in zip(targets, after.tolist(), strict=True)}
    REWRITERS[fmt_in](src, out, new_conf)
    return ApplyResult(
        method=doc["method"],
        out=out,
        n_records=len(resolved),
        n_recalibrated=len(targets),
        n_abstained=sum(r.abstained for r in resolved),
        n_missing=sum(not r.abstained and r.confidence is None for r in resolved),
        mean_before=before.mean().item() if targets else None,
        mean_after=after.mean().item() if targets else None,
    )


def _row_id(row: dict[str, Any]) -> str:
    return str(row.get("id"))


def _rewrite_jsonl(src: Path, out: Path, new_conf: dict[str, float]) -> None:
    """Each non-blank line with its confidence replaced, streamed into a temporary file renamed onto ``out``."""
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for line_no, raw in iter_lines(src):
            if not raw.strip():
                continue
            row = loads_json(raw, path=str(src), line=line_no)  # already validated by load_predictions
            if _row_id(row) in new_conf:
                row["confidence"] = new_conf[_row_id(row)]
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _rewrite_csv(src: Path, out: Path, new_conf: dict[str, float]) -> None:
    reader = csv.DictReader(read_text(src).splitlines(keepends=True))
    fields = list(reader.fieldnames or [])
    if "confidence" not in fields:
        fields.append("confidence")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in reader:
        if all((v or "").strip() == "" for v in row.values()):
            continue
        if _row_id(row) in new_conf:
            row["confidence"] = repr(new_conf[_row_id(row)])
        writer.writerow(row)
    write_text(out, buf.getvalue())


def _confidence_column(ids: list[str], old: list[Any], new_conf: dict[str, float]) -> list[float | None]:
    return [new_conf.get(i, o if o is None else float(o)) for i, o in zip(ids, old, strict=True)]


def _rewrite_parquet(src: Path, out: Path, new_conf: dict[str, float]) -> None:
    # lazy: pyarrow takes 0.2 s to import and only Parquet files need it
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(src)
    ids = [str(i) for i in table.column("id").to_pylist()]
    old = table.column("confidence").to_pylist() if "confidence" in table.column_names else [None] * len(ids)
    column = pa.array(_confidence_column(ids, old, new_conf), type=pa.float64())
    if "confidence" in table.column_names:
        table = table.set_column(table.column_names.index("confidence"), "confidence", column)
    else:
        table = table.append_column("confidence", column)
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)


def _rewrite_dataset(src: Path, out: Path, new_conf: dict[str, float]) -> None:
    import datasets  # lazy: 0.9 s to import, and only saved datasets folders need it

    ds = datasets.load_from_disk(str(src))
    if isinstance(ds, datasets.DatasetDict):
        ds = next(iter(ds.values()))  # load_predictions accepted it, so it has a single split
    ids = [str(i) for i in ds["id"]]
    old = ds["confidence"] if "confidence" in ds.column_names else [None] * len(ids)
    values = _confidence_column(ids, list(old), new_conf)
    if "confidence" in ds.column_names:
        ds = ds.remove_columns("confidence")
    ds = ds.add_column("confidence", values, feature=datasets.Value("float64"))
    with staged_dir(out) as tmp:
        ds.save_to_disk(str(tmp / "dataset"))
        for item in (tmp / "dataset").iterdir():
            shutil.move(str(item), tmp / item.name)
        (tmp / "dataset").rmdir()


REWRITERS = {"jsonl": _rewrite_jsonl, "csv": _rewrite_csv, "parquet": _rewrite_parquet, "dataset": _rewrite_dataset}
