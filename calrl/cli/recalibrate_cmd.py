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
import csv
import dataclasses
import io
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from calrl.cli import options
from calrl.data.records import ResolvedRecord
from calrl.errors import InputError, reports_os_errors
from calrl.formatting import fmt, json_safe
from calrl.io import check_input, check_output
from calrl.recalibration.methods import METHODS
from calrl.recalibration.report import DOC_KEYS, SUMMARY_KEYS, warnings_of

if TYPE_CHECKING:  # torch is imported where it is used, so that `calrl recalibrate --help` starts at once
    import torch


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "recalibrate",
        help="fit or apply a post-hoc confidence calibrator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="action", required=True)
    formatter = argparse.ArgumentDefaultsHelpFormatter

    fit = sub.add_parser("fit", help="fit a calibrator and report ECE before/after on a separate split",
                         formatter_class=formatter)
    fit.add_argument("--predictions", required=True, help="predictions file to fit on")
    fit.add_argument("--method", required=True, help=f"one of: {', '.join(METHODS)}")
    fit.add_argument("--out", required=True, type=options.non_empty_path, help="path of calibrator.json")
    fit.add_argument("--bins", type=options.bins, default=15,
                     help=f"bins for histogram binning and ECE (1 to {options.MAX_BINS})")
    split = fit.add_mutually_exclusive_group()
    split.add_argument(
        "--holdout-fraction",
        type=options.finite_float,
        default=None,
        help="share of the file's scored items held out for the report (0.3 when not given)",
    )
    split.add_argument(
        "--eval-predictions",
        default=None,
        help="a separate predictions file for the report (then all of --predictions fits)",
    )
    fit.add_argument("--report-dir", default=None, type=options.non_empty_path,
                     help="folder of the report (beside --out when not given)")
    fit.add_argument("--seed", type=options.seed, default=0, help="seed of the holdout split")
    options.add_overwrite(fit, "an existing calibrator and report")
    _resolve_options(fit)
    fit.set_defaults(func=run)

    apply = sub.add_parser("apply", help="rewrite the confidences of a predictions file", formatter_class=formatter)
    apply.add_argument("--calibrator", required=True, help="calibrator.json written by `recalibrate fit`")
    apply.add_argument("--predictions", required=True, help="predictions file to recalibrate")
    apply.add_argument("--out", required=True, type=options.non_empty_path,
                       help="output predictions file (same format as the input)")
    options.add_overwrite(apply, "an existing output file")
    _resolve_options(apply)
    apply.set_defaults(func=run)
    p.set_defaults(func=run)


def _resolve_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-hedges", action="store_true", help="do not map hedge phrases to confidences")
    p.add_argument("--grader", default="auto", help="grader used when 'correct' is not given")


@reports_os_errors
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
        import torch

        return cls(
            records,
            torch.tensor([r.confidence for r in records], dtype=torch.float64),
            torch.tensor([r.correct for r in records], dtype=torch.bool),
        )


def run_fit(args: argparse.Namespace) -> int:
    from calrl.recalibration.calibrators import fit_calibrator

    if args.method not in METHODS:
        raise InputError(
            f"unknown method {args.method!r}; choose one of {', '.join(METHODS)}", field="method"
        )
    fraction = 0.3 if args.holdout_fraction is None else args.holdout_fraction
    if args.eval_predictions is None and not 0.0 < fraction < 1.0:
        raise InputError(f"must be in (0, 1), got {fraction}", field="holdout-fraction")
    inputs = [check_input(args.predictions, option="--predictions", allow_dir=True)]
    if args.eval_predictions is not None:
        inputs.append(check_input(args.eval_predictions, option="--eval-predictions", allow_dir=True))
    out = Path(args.out)
    if out.suffix.lower() != ".json":
        raise InputError("the calibrator is written as JSON; give a path ending in .json", path=str(out))
    report_dir = Path(args.report_dir) if args.report_dir else out.parent
    targets = [out] + [report_dir / f"{out.stem}{suffix}" for suffix in REPORT_SUFFIXES]
    for target in targets:
        check_output(target, option="--out" if target == out else "--report-dir", kind="file", inputs=inputs,
                     overwrite=args.overwrite)

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

    try:
        calibrator = fit_calibrator(calib_t.confidence, calib_t.correct, args.method, n_bins=args.bins)
    except InputError as exc:  # names the field, not the file
        raise InputError(str(exc), path=str(args.predictions)) from None
    calib_after = _apply(calibrator, calib_t.confidence)
    held_after = _apply(calibrator, held_t.confidence)
    try:
        before_m = _metrics(held, held_t.confidence, args.bins)
        after_m = _metrics(held, held_after, args.bins)
    except InputError as exc:  # e.g. too many slice values: name the file of the reported items
        if exc.path is not None:
            raise
        raise InputError(str(exc), path=str(args.eval_predictions or args.predictions)) from None
    doc = {
        **calibrator.to_dict(),
        "fit": {
            "predictions": str(args.predictions),
            "n_fit": len(calib),
            "n_skipped": n_skipped,
            "bins": args.bins,
            "split": split,
            "before": _scores(calib_t.confidence, calib_t.correct, args.bins),
            "after": _scores(calib_after, calib_t.correct, args.bins),
        },
        "evaluation": {
            "n_eval": len(held),
            "n_skipped": n_skipped_eval,
            "split": split,
            "before": _summary(before_m),
            "after": _summary(after_m),
            "warnings": _overlap_warnings(calib, held, inputs),
        },
    }
    where = "eval file" if split["kind"] == "file" else "holdout"
    _write_fit_outputs(doc, targets, (before_m, after_m), f"Recalibration on the {where} ({len(held)} items)")
    for warning in warnings_of(doc):
        print(f"calrl recalibrate: warning: {warning}", file=sys.stderr)
    b, a = doc["evaluation"]["before"], doc["evaluation"]["after"]
    print(
        f"fitted {args.method} on {len(calib)} items; on {len(held)} separate items ECE "
        f"{fmt(b['ece'])} -> {fmt(a['ece'])}, Brier {fmt(b['brier'])} -> {fmt(a['brier'])}"
    )
    print(f"wrote {out} and {targets[1]} (.html, _reliability.png)")
    return 0


REPORT_SUFFIXES = ("_report.md", "_report.html", "_reliability.png")


def _write_fit_outputs(doc: dict[str, Any], targets: list[Path], metrics: tuple[dict, dict], title: str) -> None:
    """calibrator.json and its report (``targets``: calibrator, .md, .html, .png), built in staging
    folders and renamed into place only once all four are complete."""
    from calrl.eval.plots import render_reliability
    from calrl.io import staged_files, write_bytes, write_json, write_text
    from calrl.recalibration.report import render_html, render_markdown

    png = render_reliability(list(metrics), labels=["before", f"after ({doc['method']})"], title=title)
    with staged_files(targets) as (cal_tmp, md_tmp, html_tmp, png_tmp):
        write_bytes(png_tmp, png)
        write_text(md_tmp, render_markdown(doc, targets[3].name))
        write_text(html_tmp, render_html(doc, png))
        write_json(cal_tmp, json_safe(doc))


def _overlap_warnings(calib: list[ResolvedRecord], held: list[ResolvedRecord], inputs: list[Path]) -> list[str]:
    """A warning when the evaluation split shares items (ids) with the fit split: its numbers are not
    separate-split numbers then (e.g. ``--eval-predictions`` is the fit file itself)."""
    fit_ids = {r.id for r in calib}
    shared = sum(r.id in fit_ids for r in held)
    if not shared:
        return []
    same = len(inputs) == 2 and inputs[0].resolve() == inputs[1].resolve()
    why = "--eval-predictions is the --predictions file" if same else "the two files share ids"
    return [(f"{shared} of the {len(held)} evaluation items are also fit items ({why}): the 'after' numbers "
            "are measured on data the calibrator was fitted to and overstate the improvement")]


def _scored_records(path: str, *, use_hedges: bool, grader: str) -> tuple[list[ResolvedRecord], int]:
    """Answered records with a confidence, and how many answered records had none."""
    resolved = _resolve_file(path, use_hedges=use_hedges, grader=grader)
    answered = [r for r in resolved if not r.abstained]
    scored = [r for r in answered if r.confidence is not None]
    if not scored:
        raise InputError("no answered item with a confidence to fit or evaluate on", path=str(path))
    return scored, len(answered) - len(scored)


def _resolve_file(path: str | Path, *, use_hedges: bool, grader: str) -> list[ResolvedRecord]:
    from calrl.eval.loading import resolve_predictions_file

    return resolve_predictions_file(path, use_hedges=use_hedges, grader=grader)[1]


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
    import torch

    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    held = sorted(order[:n_held])
    fit = sorted(order[n_held:])
    return [records[i] for i in fit], [records[i] for i in held]


def _apply(calibrator: Any, confidence: torch.Tensor) -> torch.Tensor:
    import torch

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


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics.get(k) for k in SUMMARY_KEYS}


# ------------------------------------------------------------------------------------------ apply
def load_calibrator(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """Read calibrator.json and rebuild the calibrator; InputError names the file and the field."""
    from calrl.io import loads_json, read_text
    from calrl.recalibration.calibrators import Calibrator

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


def run_apply(args: argparse.Namespace) -> int:
    import torch

    from calrl.data.readers import is_saved_dataset
    from calrl.eval.loading import SUFFIX_FORMATS

    calibrator, doc = load_calibrator(args.calibrator)
    src = check_input(args.predictions, option="--predictions", allow_dir=True)
    out = Path(args.out)
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
                 inputs=[src, Path(args.calibrator)], overwrite=args.overwrite)
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
    }[fmt_in]
    writer(src, out, new_conf)
    n_abst = sum(r.abstained for r in resolved)
    n_missing = sum(not r.abstained and r.confidence is None for r in resolved)
    print(
        f"recalibrated {len(targets)} of {len(resolved)} records with {doc['method']} "
        f"(untouched: {n_abst} abstentions, {n_missing} answers without confidence); "
        f"mean confidence {fmt(before.mean().item() if targets else None)} -> "
        f"{fmt(after.mean().item() if targets else None)}; wrote {out}"
    )
    return 0


def _row_id(row: dict[str, Any]) -> str:
    return str(row.get("id"))


def _rewrite_jsonl(src: Path, out: Path, new_conf: dict[str, float]) -> None:
    """Each non-blank line with its confidence replaced, streamed into a temporary file renamed onto ``out``."""
    import json

    from calrl.io import atomic_path, iter_lines, loads_json

    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for line_no, raw in iter_lines(src):
            if not raw.strip():
                continue
            row = loads_json(raw, path=str(src), line=line_no)  # already validated by load_predictions
            if _row_id(row) in new_conf:
                row["confidence"] = new_conf[_row_id(row)]
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _rewrite_csv(src: Path, out: Path, new_conf: dict[str, float]) -> None:
    from calrl.io import read_text, write_text

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
