"""``calrl recalibrate``: post-hoc recalibration of stated confidence (never of answers).

``fit`` fits a calibrator on the answered items of a predictions file that carry a confidence and
measures ECE and Brier before and after on a separate split: a seeded holdout of the same file
(``--holdout-fraction``) or another file (``--eval-predictions``). It writes ``calibrator.json`` and,
beside it (or in ``--report-dir``), ``<stem>_report.md``, ``<stem>_report.html`` and
``<stem>_reliability.png``.

``apply`` rewrites the ``confidence`` field of every answered record that has a confidence (given,
stated or hedged) and copies everything else unchanged; abstentions and answers without any
confidence are left as they are. The output has the input's format (JSONL, CSV, Parquet, or a saved
``datasets`` folder).
"""

from __future__ import annotations

import argparse
import base64
import csv
import dataclasses
import html
import io
import json
import math
import shutil
from pathlib import Path
from typing import Any

import torch

from calrl.errors import InputError
from calrl.eval.calibrators import METHODS
from calrl.eval.records import ResolvedRecord

# keys calrl recalibrate adds to the calibrator's own dict (Calibrator.to_dict) in calibrator.json
DOC_KEYS = ("fit", "evaluation")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "recalibrate",
        help="fit or apply a post-hoc confidence calibrator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="action", required=True)

    fit = sub.add_parser("fit", help="fit a calibrator and report ECE before/after on a separate split")
    fit.add_argument("--predictions", required=True, help="predictions file to fit on")
    fit.add_argument("--method", required=True, help=f"one of: {', '.join(METHODS)}")
    fit.add_argument("--out", required=True, help="path of calibrator.json")
    fit.add_argument("--bins", type=int, default=15, help="bins for histogram binning and ECE (default 15)")
    split = fit.add_mutually_exclusive_group()
    split.add_argument(
        "--holdout-fraction",
        type=float,
        default=None,
        help="share of the file's scored items held out for the report (default 0.3)",
    )
    split.add_argument(
        "--eval-predictions",
        default=None,
        help="a separate predictions file for the report (then all of --predictions fits)",
    )
    fit.add_argument("--report-dir", default=None, help="folder of the report (default: beside --out)")
    fit.add_argument("--seed", type=int, default=0, help="seed of the holdout split")
    _resolve_options(fit)
    fit.set_defaults(func=run)

    apply = sub.add_parser("apply", help="rewrite the confidences of a predictions file")
    apply.add_argument("--calibrator", required=True, help="calibrator.json written by `recalibrate fit`")
    apply.add_argument("--predictions", required=True, help="predictions file to recalibrate")
    apply.add_argument("--out", required=True, help="output predictions file (same format as the input)")
    _resolve_options(apply)
    apply.set_defaults(func=run)
    p.set_defaults(func=run)


def _resolve_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-hedges", action="store_true", help="do not map hedge phrases to confidences")
    p.add_argument("--grader", default="auto", help="grader used when 'correct' is not given (default auto)")


def run(args: argparse.Namespace) -> int:
    return run_fit(args) if args.action == "fit" else run_apply(args)


# --------------------------------------------------------------------------------------------- fit
@dataclasses.dataclass
class _Split:
    """Scored records (answered, with a confidence) and their tensors."""

    records: list[ResolvedRecord]
    confidence: torch.Tensor
    correct: torch.Tensor

    @classmethod
    def of(cls, records: list[ResolvedRecord]) -> _Split:
        return cls(
            records,
            torch.tensor([r.confidence for r in records], dtype=torch.float64),
            torch.tensor([r.correct for r in records], dtype=torch.bool),
        )


def run_fit(args: argparse.Namespace) -> int:
    from calrl.eval.calibrators import fit_calibrator

    if args.method not in METHODS:
        raise InputError(
            f"unknown method {args.method!r}; choose one of {', '.join(METHODS)}", field="method"
        )
    if args.bins < 1:
        raise InputError(f"must be >= 1, got {args.bins}", field="bins")
    out = Path(args.out)
    if out.suffix.lower() != ".json":
        raise InputError("the calibrator is written as JSON; give a path ending in .json", path=str(out))
    fraction = 0.3 if args.holdout_fraction is None else args.holdout_fraction
    if args.eval_predictions is None and not 0.0 < fraction < 1.0:
        raise InputError(f"must be in (0, 1), got {fraction}", field="holdout-fraction")

    opts = {"use_hedges": not args.no_hedges, "grader": args.grader}
    records, n_skipped = _scored_records(args.predictions, **opts)
    if args.eval_predictions is not None:
        calib = records
        held, n_skipped_eval = _scored_records(args.eval_predictions, **opts)
        split = {"kind": "file", "eval_predictions": str(args.eval_predictions)}
    else:
        calib, held = _holdout_split(records, fraction, args.seed, args.predictions)
        n_skipped_eval = 0
        split = {"kind": "holdout", "holdout_fraction": fraction, "seed": args.seed}
    calib_t, held_t = _Split.of(calib), _Split.of(held)

    calibrator = fit_calibrator(calib_t.confidence, calib_t.correct, args.method, n_bins=args.bins)
    calib_after = _apply(calibrator, calib_t.confidence)
    held_after = _apply(calibrator, held_t.confidence)

    fit_stats = {
        "predictions": str(args.predictions),
        "n_fit": len(calib),
        "n_skipped": n_skipped,
        "bins": args.bins,
        "split": split,
        "before": _scores(calib_t.confidence, calib_t.correct, args.bins),
        "after": _scores(calib_after, calib_t.correct, args.bins),
    }
    before_m = _metrics(held, held_t.confidence, args.bins)
    after_m = _metrics(held, held_after, args.bins)
    evaluation = {
        "n_eval": len(held),
        "n_skipped": n_skipped_eval,
        "split": split,
        "before": _summary(before_m),
        "after": _summary(after_m),
    }
    doc = {
        **calibrator.to_dict(),
        "fit": fit_stats,
        "evaluation": evaluation,
    }

    from calrl.eval.plots import render_reliability
    from calrl.io import write_bytes, write_json, write_text

    report_dir = Path(args.report_dir) if args.report_dir else out.parent
    stem = out.stem
    png = render_reliability(
        [before_m, after_m],
        labels=["before", f"after ({args.method})"],
        title=f"Recalibration on the {'eval file' if split['kind'] == 'file' else 'holdout'}"
        f" ({len(held)} items)",
    )
    png_name = f"{stem}_reliability.png"
    write_bytes(report_dir / png_name, png)
    write_text(report_dir / f"{stem}_report.md", _report_markdown(doc, png_name))
    write_text(report_dir / f"{stem}_report.html", _report_html(doc, png))
    write_json(out, _json_safe(doc))
    b, a = evaluation["before"], evaluation["after"]
    print(
        f"fitted {args.method} on {len(calib)} items; on {len(held)} separate items ECE "
        f"{_fmt(b['ece'])} -> {_fmt(a['ece'])}, Brier {_fmt(b['brier'])} -> {_fmt(a['brier'])}"
    )
    print(f"wrote {out} and {report_dir / (stem + '_report.md')} (.html, _reliability.png)")
    return 0


def _scored_records(path: str, *, use_hedges: bool, grader: str) -> tuple[list[ResolvedRecord], int]:
    """Answered records with a confidence, and how many answered records had none."""
    resolved = _resolve_file(path, use_hedges=use_hedges, grader=grader)
    answered = [r for r in resolved if not r.abstained]
    scored = [r for r in answered if r.confidence is not None]
    if not scored:
        raise InputError("no answered item with a confidence to fit or evaluate on", path=str(path))
    return scored, len(answered) - len(scored)


def _resolve_file(path: str | Path, *, use_hedges: bool, grader: str) -> list[ResolvedRecord]:
    from calrl.eval.loading import load_predictions
    from calrl.eval.runner import resolve_records

    try:
        return resolve_records(load_predictions(path), use_hedges=use_hedges, grader=grader)
    except InputError as exc:
        if exc.path is None:
            raise InputError(str(exc), path=str(path)) from None
        raise


def _holdout_split(
    records: list[ResolvedRecord],
    fraction: float,
    seed: int,
    path: str,
) -> tuple[list[ResolvedRecord], list[ResolvedRecord]]:
    n = len(records)
    n_held = round(fraction * n)
    if n_held < 1 or n - n_held < 1:
        raise InputError(
            f"{n} scored items cannot be split with holdout fraction {fraction:g} "
            "(each split needs at least one item)",
            path=str(path),
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    held = sorted(order[:n_held])
    fit = sorted(order[n_held:])
    return [records[i] for i in fit], [records[i] for i in held]


def _apply(calibrator: Any, confidence: torch.Tensor) -> torch.Tensor:
    out = torch.as_tensor(calibrator.apply(confidence), dtype=torch.float64)
    return out.clamp(0.0, 1.0)


def _scores(conf: torch.Tensor, correct: torch.Tensor, n_bins: int) -> dict[str, float]:
    from calrl.metrics import brier_score, expected_calibration_error

    return {
        "ece": float(expected_calibration_error(conf, correct, n_bins=n_bins)),
        "brier": float(brier_score(conf, correct)),
    }


def _metrics(records: list[ResolvedRecord], confidence: torch.Tensor, n_bins: int) -> dict[str, Any]:
    """``compute_metrics`` of the records with their confidences replaced (same conventions as eval)."""
    from calrl.eval.runner import compute_metrics

    swapped = [
        dataclasses.replace(r, confidence=float(c), confidence_source="given")
        for r, c in zip(records, confidence.tolist(), strict=True)
    ]
    return compute_metrics(swapped, n_bins=n_bins, n_boot=0)


# key of the metrics dict -> label in the report
SUMMARY_LABELS = {
    "n_scored": "scored items",
    "accuracy_answered": "accuracy (answered)",
    "ece": "ECE",
    "mce": "MCE",
    "brier": "Brier",
    "auroc": "AUROC",
    "mean_confidence": "mean confidence",
    "overconfident_error_rate": "overconfident error rate",
}
SUMMARY_KEYS = tuple(SUMMARY_LABELS)


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics.get(k) for k in SUMMARY_KEYS}


# ------------------------------------------------------------------------------------------ apply
def load_calibrator(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """Read calibrator.json and rebuild the calibrator; InputError names the file and the field."""
    from calrl.eval.calibrators import Calibrator

    p = Path(path)
    if not p.is_file():
        raise InputError("file not found", path=str(path))
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text ({exc.reason})", path=str(path)) from None
    except json.JSONDecodeError as exc:
        raise InputError(
            f"malformed JSON: {exc.msg} (column {exc.colno})", path=str(path), line=exc.lineno
        ) from None
    if not isinstance(doc, dict):
        raise InputError("expected a JSON object", path=str(path))
    try:
        calibrator = Calibrator.from_dict({k: v for k, v in doc.items() if k not in DOC_KEYS})
    except InputError as exc:  # names the field, not the file
        raise InputError(str(exc), path=str(path)) from None
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise InputError(f"invalid calibrator: {exc!r}", path=str(path)) from None
    return calibrator, doc


def run_apply(args: argparse.Namespace) -> int:
    from calrl.eval.loading import SUFFIX_FORMATS

    calibrator, doc = load_calibrator(args.calibrator)
    src, out = Path(args.predictions), Path(args.out)
    if not src.exists():
        raise InputError("file not found", path=str(src))
    fmt = "dataset" if src.is_dir() else SUFFIX_FORMATS.get(src.suffix.lower())
    out_fmt = "dataset" if not out.suffix else SUFFIX_FORMATS.get(out.suffix.lower())
    if fmt is not None and out_fmt != fmt:
        raise InputError(
            f"the output must have the input's format ({fmt}); got {out.suffix or 'a folder'!r}",
            path=str(out),
        )
    if out.resolve() == src.resolve():
        raise InputError("the output would overwrite the input; choose another --out", path=str(out))
    resolved = _resolve_file(src, use_hedges=not args.no_hedges, grader=args.grader)

    targets = [r for r in resolved if not r.abstained and r.confidence is not None]
    before = torch.tensor([r.confidence for r in targets], dtype=torch.float64)
    after = _apply(calibrator, before) if targets else before
    new_conf = {r.id: float(c) for r, c in zip(targets, after.tolist(), strict=True)}

    writer = {
        "jsonl": _rewrite_jsonl,
        "csv": _rewrite_csv,
        "parquet": _rewrite_parquet,
        "dataset": _rewrite_dataset,
    }[fmt]
    writer(src, out, new_conf)
    n_abst = sum(r.abstained for r in resolved)
    n_missing = sum(not r.abstained and r.confidence is None for r in resolved)
    print(
        f"recalibrated {len(targets)} of {len(resolved)} records with {doc['method']} "
        f"(untouched: {n_abst} abstentions, {n_missing} answers without confidence); "
        f"mean confidence {_fmt(before.mean().item() if targets else None)} -> "
        f"{_fmt(after.mean().item() if targets else None)}; wrote {out}"
    )
    return 0


def _row_id(row: dict[str, Any]) -> str:
    return str(row.get("id"))


def _rewrite_jsonl(src: Path, out: Path, new_conf: dict[str, float]) -> None:
    from calrl.io import write_text

    lines = []
    for raw in src.read_text(encoding="utf-8").splitlines():
        if not raw.strip():
            continue
        row = json.loads(raw)  # already validated by load_predictions
        if _row_id(row) in new_conf:
            row["confidence"] = new_conf[_row_id(row)]
        lines.append(json.dumps(row, ensure_ascii=False))
    write_text(out, "\n".join(lines) + "\n")


def _rewrite_csv(src: Path, out: Path, new_conf: dict[str, float]) -> None:
    from calrl.io import write_text

    reader = csv.DictReader(src.read_text(encoding="utf-8-sig").splitlines(keepends=True))
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
    import pyarrow as pa
    import pyarrow.parquet as pq

    from calrl.io import atomic_path

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
    import datasets

    from calrl.io import staged_dir

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


# ----------------------------------------------------------------------------------------- report
def _fmt(value: Any) -> str:
    return (
        "n/a"
        if value is None or (isinstance(value, float) and not math.isfinite(value))
        else (f"{value:.4f}" if isinstance(value, float) else str(value))
    )


def _report_rows(doc: dict[str, Any]) -> list[list[str]]:
    b, a = doc["evaluation"]["before"], doc["evaluation"]["after"]
    return [[label, _fmt(b.get(k)), _fmt(a.get(k))] for k, label in SUMMARY_LABELS.items()]


def _report_intro(doc: dict[str, Any]) -> list[str]:
    fit, ev = doc["fit"], doc["evaluation"]
    split = ev["split"]
    where = (
        f"a {split['holdout_fraction']:.0%} holdout of the same file (seed {split['seed']})"
        if split["kind"] == "holdout"
        else f"the separate file `{split['eval_predictions']}`"
    )
    return [
        (
            f"Method: {doc['method']}; fitted on {fit['n_fit']} answered items with a confidence from "
            f"`{fit['predictions']}` (ECE on the fit split {_fmt(fit['before']['ece'])} -> "
            f"{_fmt(fit['after']['ece'])})."
        ),
        (
            f"Evaluated on {ev['n_eval']} separate items: {where}. Answers are never changed; only "
            "the stated confidence is mapped."
        ),
    ]


def _report_markdown(doc: dict[str, Any], png_name: str) -> str:
    lines = ["# Recalibration report", ""] + _report_intro(doc) + [""]
    lines += ["| metric (separate split) | before | after |", "|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in _report_rows(doc)]
    params = json.dumps({k: v for k, v in doc.items() if k not in DOC_KEYS}, default=str)
    lines += ["", f"![reliability before and after]({png_name})", "", "## Calibrator", "", f"`{params}`", ""]
    return "\n".join(lines)


def _report_html(doc: dict[str, Any], png: bytes) -> str:
    e = html.escape
    rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in _report_rows(doc))
    intro = "".join(f"<p>{e(p)}</p>" for p in _report_intro(doc))
    params = e(json.dumps({k: v for k, v in doc.items() if k not in DOC_KEYS}, default=str))
    b64 = base64.b64encode(png).decode("ascii")
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>calrl recalibration report</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:900px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}</style></head><body>"
        f"<h1>Recalibration report</h1>{intro}<table><tr><th>metric (separate split)</th><th>before</th>"
        f"<th>after</th></tr>{rows}</table><img alt='reliability before and after' "
        f"src='data:image/png;base64,{b64}' style='max-width:100%'><h2>Calibrator</h2><code>{params}</code>"
        "</body></html>"
    )


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _json_safe(obj.tolist())
    return obj
