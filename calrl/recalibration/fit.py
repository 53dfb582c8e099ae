"""``calrl recalibrate fit`` as a library call: fit a calibrator and measure it on a separate split.

:func:`run_fit` fits a calibrator on the answered items of a predictions file that carry a confidence and
measures ECE and Brier before and after on a separate split: a seeded holdout of the same file
(``holdout_fraction``) or another file (``eval_predictions``). It writes ``calibrator.json`` and, beside it
(or in ``report_dir``), ``<stem>_report.md``, ``<stem>_report.html`` and ``<stem>_reliability.png``, all four
renamed into place only once all are complete. Every check on the arguments and paths runs before any work.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from calrl.data.records import ResolvedRecord
from calrl.errors import InputError
from calrl.eval.loading import resolve_predictions_file
from calrl.eval.plots import render_reliability
from calrl.eval.runner import compute_metrics
from calrl.formatting import fmt, json_safe
from calrl.grading import DEFAULT_GRADER
from calrl.io import check_input, check_output, staged_files, write_bytes, write_text
from calrl.jsonio import write_json
from calrl.limits import DEFAULT_BINS
from calrl.metrics import brier_score, expected_calibration_error
from calrl.recalibration.calibrators import fit_calibrator
from calrl.recalibration.methods import METHODS
from calrl.recalibration.report import SUMMARY_KEYS, render_html, render_markdown, warnings_of

REPORT_SUFFIXES = ("_report.md", "_report.html", "_reliability.png")
HOLDOUT_FRACTION = 0.3  # share of the scored items held out when neither a fraction nor an eval file is given


@dataclass(frozen=True)
class FitResult:
    """What :func:`run_fit` wrote: calibrator.json's content and the four paths (calibrator, .md, .html, .png)."""

    doc: dict[str, Any]
    targets: tuple[Path, Path, Path, Path]

    @property
    def warnings(self) -> list[str]:
        """The calibrator's own warnings and the evaluation's (fit and evaluation items overlap)."""
        return warnings_of(self.doc)

    def summary_lines(self) -> list[str]:
        """What ``calrl recalibrate fit`` prints."""
        fit, ev = self.doc["fit"], self.doc["evaluation"]
        b, a = ev["before"], ev["after"]
        scores = (f"fitted {self.doc['method']} on {fit['n_fit']} items; on {ev['n_eval']} separate items ECE "
                  f"{fmt(b['ece'])} -> {fmt(a['ece'])}, Brier {fmt(b['brier'])} -> {fmt(a['brier'])}")
        return [scores, f"wrote {self.targets[0]} and {self.targets[1]} (.html, _reliability.png)"]


@dataclass(frozen=True)
class Split:
    """Scored records (answered, with a confidence) and their tensors."""

    records: list[ResolvedRecord]
    confidence: torch.Tensor
    correct: torch.Tensor

    @classmethod
    def of(cls, records: list[ResolvedRecord]) -> Split:
        return cls(
            records,
            torch.tensor([r.confidence for r in records], dtype=torch.float64),
            torch.tensor([r.correct for r in records], dtype=torch.bool),
        )


def run_fit(
    predictions: str | Path,
    method: str,
    out: str | Path,
    *,
    bins: int = DEFAULT_BINS,
    holdout_fraction: float | None = None,
    eval_predictions: str | Path | None = None,
    report_dir: str | Path | None = None,
    seed: int = 0,
    overwrite: bool = False,
    use_hedges: bool = True,
    grader: str = DEFAULT_GRADER,
) -> FitResult:
    """Fit ``method`` on ``predictions`` and write calibrator.json (``out``) and its report (see the module)."""
    fraction = HOLDOUT_FRACTION if holdout_fraction is None else holdout_fraction
    inputs, targets = _check_fit_paths(predictions, method, out, fraction, eval_predictions, report_dir, overwrite)
    records, n_skipped = scored_records(predictions, use_hedges=use_hedges, grader=grader)
    if eval_predictions is not None:
        calib = records
        held, n_skipped_eval = scored_records(eval_predictions, use_hedges=use_hedges, grader=grader)
        split: dict[str, Any] = {"kind": "file", "eval_predictions": str(eval_predictions)}
    else:
        calib, held = holdout_split(records, fraction, seed, predictions)
        n_skipped_eval = 0
        split = {"kind": "holdout", "holdout_fraction": fraction, "seed": seed}
    calib_t, held_t = Split.of(calib), Split.of(held)
    try:
        calibrator = fit_calibrator(calib_t.confidence, calib_t.correct, method, n_bins=bins)
    except InputError as exc:  # names the field, not the file
        raise InputError(str(exc), path=str(predictions)) from None
    try:
        before_m = _metrics(held, held_t.confidence, bins)
        after_m = _metrics(held, calibrator.apply(held_t.confidence), bins)
    except InputError as exc:  # e.g. too many slice values: name the file of the reported items
        if exc.path is not None:
            raise
        raise InputError(str(exc), path=str(eval_predictions or predictions)) from None
    doc = {
        **calibrator.to_dict(),
        "fit": {
            "predictions": str(predictions),
            "n_fit": len(calib),
            "n_skipped": n_skipped,
            "bins": bins,
            "split": split,
            "before": _scores(calib_t.confidence, calib_t.correct, bins),
            "after": _scores(calibrator.apply(calib_t.confidence), calib_t.correct, bins),
        },
        "evaluation": {
            "n_eval": len(held),
            "n_skipped": n_skipped_eval,
            "split": split,
            "before": _summary(before_m),
            "after": _summary(after_m),
            "warnings": overlap_warnings(calib, held, inputs),
        },
    }
    where = "eval file" if split["kind"] == "file" else "holdout"
    write_fit_outputs(doc, targets, (before_m, after_m), f"Recalibration on the {where} ({len(held)} items)")
    return FitResult(doc, targets)


def _check_fit_paths(
    predictions: str | Path,
    method: str,
    out: str | Path,
    fraction: float,
    eval_predictions: str | Path | None,
    report_dir: str | Path | None,
    overwrite: bool,
) -> tuple[list[Path], tuple[Path, Path, Path, Path]]:
    """The checked inputs and the four output paths; one-line InputErrors before any work."""
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}", field="method")
    if eval_predictions is None and not 0.0 < fraction < 1.0:
        raise InputError(f"must be in (0, 1), got {fraction}", field="holdout-fraction")
    inputs = [check_input(predictions, option="--predictions", allow_dir=True)]
    if eval_predictions is not None:
        inputs.append(check_input(eval_predictions, option="--eval-predictions", allow_dir=True))
    out = Path(out)
    if out.suffix.lower() != ".json":
        raise InputError("the calibrator is written as JSON; give a path ending in .json", path=str(out))
    folder = Path(report_dir) if report_dir else out.parent
    md, html, png = (folder / f"{out.stem}{suffix}" for suffix in REPORT_SUFFIXES)
    targets = (out, md, html, png)
    for target in targets:
        check_output(target, option="--out" if target == out else "--report-dir", kind="file", inputs=inputs,
                     overwrite=overwrite)
    return inputs, targets


def write_fit_outputs(doc: dict[str, Any], targets: tuple[Path, ...], metrics: tuple[dict, dict], title: str) -> None:
    """calibrator.json and its report (``targets``: calibrator, .md, .html, .png), built in staging
    folders and renamed into place only once all four are complete."""
    png = render_reliability(list(metrics), labels=["before", f"after ({doc['method']})"], title=title)
    with staged_files(targets) as (cal_tmp, md_tmp, html_tmp, png_tmp):
        write_bytes(png_tmp, png)
        write_text(md_tmp, render_markdown(doc, targets[3].name))
        write_text(html_tmp, render_html(doc, png))
        write_json(cal_tmp, json_safe(doc))


def overlap_warnings(calib: list[ResolvedRecord], held: list[ResolvedRecord], inputs: list[Path]) -> list[str]:
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


def scored_records(path: str | Path, *, use_hedges: bool, grader: str) -> tuple[list[ResolvedRecord], int]:
    """Answered records with a confidence, and how many answered records had none."""
    resolved = resolve_predictions_file(path, use_hedges=use_hedges, grader=grader)[1]
    answered = [r for r in resolved if not r.abstained]
    scored = [r for r in answered if r.confidence is not None]
    if not scored:
        raise InputError("no answered item with a confidence to fit or evaluate on", path=str(path))
    return scored, len(answered) - len(scored)


def holdout_split(
    records: list[ResolvedRecord],
    fraction: float,
    seed: int,
    path: str | Path,
) -> tuple[list[ResolvedRecord], list[ResolvedRecord]]:
    """(fit, held out): a seeded random ``fraction`` of the records held out, each part in file order."""
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


def _scores(conf: torch.Tensor, correct: torch.Tensor, n_bins: int) -> dict[str, float]:
    return {
        "ece": float(expected_calibration_error(conf, correct, n_bins=n_bins)),
        "brier": float(brier_score(conf, correct)),
    }


def _metrics(records: list[ResolvedRecord], confidence: torch.Tensor, n_bins: int) -> dict[str, Any]:
    """``compute_metrics`` of the records with their confidences replaced (same conventions as eval)."""
    swapped = [
        dataclasses.replace(r, confidence=float(c), confidence_source="given")
        for r, c in zip(records, confidence.tolist(), strict=True)
    ]
    return compute_metrics(swapped, n_bins=n_bins, n_boot=0)


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics.get(k) for k in SUMMARY_KEYS}

