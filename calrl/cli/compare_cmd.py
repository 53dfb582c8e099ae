"""``calrl compare``: the release gate between a baseline and a candidate evaluation.

Each side is an eval output folder holding ``resolved.jsonl`` (records already parsed and graded) or
``predictions.jsonl``, or a predictions file (JSONL, CSV, Parquet, a saved ``datasets`` folder) that is
resolved here. Exit code 0 when the gate passes, 1 when it blocks, 2 on bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from calrl.cli import options
from calrl.data.records import ResolvedRecord
from calrl.errors import InputError, reports_os_errors
from calrl.io import check_input, check_output, iter_lines, loads_json

RESOLVED_NAME = "resolved.jsonl"
PREDICTIONS_NAME = "predictions.jsonl"
METRICS_NAME = "metrics.json"
OVERLAY_NAME = "reliability_overlay.png"
OUTPUT_NAMES = ("gate.json", OVERLAY_NAME, "report.md", "report.html")
SUMMARY_KEYS = (
    "n",
    "n_answered",
    "n_scored",
    "accuracy",
    "accuracy_answered",
    "refusal_rate",
    "ece",
    "ece_equal_mass",
    "mce",
    "brier",
    "auroc",
    "aurc",
    "mean_confidence",
    "overconfident_error_rate",
    "hedged_error_rate",
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compare",
        help="release gate: compare a candidate's calibration with a baseline's",
        description=__doc__,
        formatter_class=_Formatter,
    )
    p.add_argument("--baseline", required=True, help="eval output folder or predictions file of the baseline")
    p.add_argument(
        "--candidate", required=True, help="eval output folder or predictions file of the candidate"
    )
    p.add_argument(
        "--out",
        required=True,
        type=options.non_empty_path,
        help="folder for gate.json, the overlay plot and the report",
    )
    options.add_overwrite(p, "earlier results in --out, or write into a folder holding an input")
    p.add_argument(
        "--refusal-collapse-factor",
        type=options.finite_float,
        default=5.0,
        help="block when the refusal rate falls or rises by this factor (baseline/candidate or the reverse)",
    )
    p.add_argument(
        "--max-refusal-rate",
        type=options.finite_float,
        default=0.5,
        help="block when the candidate refuses more often than this and more than the baseline",
    )
    p.add_argument(
        "--max-accuracy-drop",
        type=options.finite_float,
        default=0.05,
        help="block when accuracy fell by more than this and its paired bootstrap interval is below 0",
    )
    p.add_argument(
        "--slice-ece-threshold",
        type=options.finite_float,
        default=0.05,
        help="block when the ECE of the whole set or of a slice rose by more than this",
    )
    p.add_argument(
        "--min-slice-size",
        type=options.positive_int,
        default=30,
        help="scored items needed on both sides for a slice to block",
    )
    p.add_argument(
        "--collapse-spread-ratio",
        type=options.finite_float,
        default=0.5,
        help="warn when the candidate's confidence spread falls below this share of the baseline's",
    )
    p.add_argument(
        "--bootstrap", type=options.bootstrap, default=1000, help="paired bootstrap resamples"
    )
    p.add_argument(
        "--bins", type=options.bins, default=15, help=f"equal-width ECE bins (1 to {options.MAX_BINS})"
    )
    p.add_argument(
        "--missing-confidence",
        dest="missing_policy",
        choices=("exclude", "half", "error"),
        default="exclude",
        help="answered items without a confidence: leave out of ECE/Brier, score as 0.5, or fail",
    )
    p.add_argument(  # the earlier name, kept working but not shown
        "--missing-policy", dest="missing_policy", choices=("exclude", "half", "error"),
        default=argparse.SUPPRESS, help=argparse.SUPPRESS,
    )
    p.add_argument(
        "--no-hedges",
        action="store_true",
        help="when resolving predictions here, do not map hedge phrases to confidences",
    )
    p.add_argument("--grader", default="auto", help="grader used when resolving predictions here")
    p.add_argument("--seed", type=options.seed, default=0, help="bootstrap seed")
    p.set_defaults(func=run)


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's line breaks and shows every option's default."""


@reports_os_errors
def run(args: argparse.Namespace) -> int:
    from calrl.gate.gate import GateConfig, evaluate_gate, match_records

    config = GateConfig(
        refusal_collapse_factor=args.refusal_collapse_factor,
        max_refusal_rate=args.max_refusal_rate,
        max_accuracy_drop=args.max_accuracy_drop,
        slice_ece_threshold=args.slice_ece_threshold,
        min_slice_size=args.min_slice_size,
        collapse_spread_ratio=args.collapse_spread_ratio,
        n_bins=args.bins,
        n_boot=args.bootstrap,
        seed=args.seed,
        missing_policy=args.missing_policy,
    )
    sides = [check_input(args.baseline, option="--baseline", allow_dir=True),
             check_input(args.candidate, option="--candidate", allow_dir=True)]
    out = check_output(args.out, option="--out", kind="dir", inputs=sides, outputs=OUTPUT_NAMES,
                       overwrite=args.overwrite)
    use_hedges = not args.no_hedges
    baseline, base_src = load_side(sides[0], use_hedges=use_hedges, grader=args.grader)
    candidate, cand_src = load_side(sides[1], use_hedges=use_hedges, grader=args.grader)
    try:
        result = evaluate_gate(baseline, candidate, config)
    except InputError as exc:  # matching and policy errors name the field; add the two files
        if exc.path is not None:
            raise
        raise InputError(f"{exc} (baseline {base_src}, candidate {cand_src})") from None
    base_matched, cand_matched, _ = match_records(baseline, candidate)
    gate = result.to_dict()
    gate["sources"] = {"baseline": base_src, "candidate": cand_src}
    gate["metrics"] = side_metrics(base_matched, cand_matched, config)
    write_outputs(gate, out)
    _print_summary(gate, out)
    return 0 if result.passed else 1


def side_metrics(
    baseline: list[ResolvedRecord],
    candidate: list[ResolvedRecord],
    config: Any,
) -> dict[str, dict[str, Any]]:
    """The typed results of each side on the matched items: summary metrics and reliability bins, as JSON."""
    from calrl.eval.runner import compute_results
    from calrl.formatting import json_safe

    out = {}
    for name, records in (("baseline", baseline), ("candidate", candidate)):
        results = compute_results(records, n_bins=config.n_bins, missing_policy=config.missing_policy,
                                  min_slice_size=config.min_slice_size, n_boot=0, seed=config.seed)
        out[name] = json_safe({**{k: getattr(results, k) for k in SUMMARY_KEYS},
                               "reliability": [dataclasses.asdict(b) for b in results.reliability]})
    return out


def write_outputs(gate: dict[str, Any], out_dir: str | Path) -> None:
    """gate.json, the overlay PNG and report.md/.html, all moved into ``out_dir`` together."""
    from calrl.eval.plots import render_reliability
    from calrl.gate.report import render_html, render_markdown
    from calrl.io import staged_dir, write_bytes, write_json, write_text

    png = render_reliability(
        [gate["metrics"]["baseline"], gate["metrics"]["candidate"]],
        labels=["baseline", "candidate"],
        title=f"Release gate: {gate['verdict']} (matched items)",
    )
    with staged_dir(out_dir) as tmp:
        write_json(tmp / "gate.json", gate)
        write_bytes(tmp / OVERLAY_NAME, png)
        write_text(tmp / "report.md", render_markdown(gate, OVERLAY_NAME, gate.get("sources")))
        write_text(tmp / "report.html", render_html(gate, png, gate.get("sources")))


def _print_summary(gate: dict[str, Any], out_dir: str | Path) -> None:
    m = gate["matching"]
    print(
        f"release gate: {gate['verdict'].upper()} on {m['n_matched']} matched items "
        f"(only baseline {m['n_only_baseline']}, only candidate {m['n_only_candidate']})"
    )
    for f in gate["reasons"]:
        print(f"  blocked [{f['code']}]: {f['message']}")
    for f in gate["warnings"]:
        print(f"  warning [{f['code']}]: {f['message']}")
    print(f"wrote {Path(out_dir) / 'gate.json'} and report.md/.html")


# ----------------------------------------------------------------------------------------- loading
def load_side(
    path: str | Path,
    *,
    use_hedges: bool = True,
    grader: str = "auto",
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
    from calrl.eval.loading import resolve_predictions_file

    return resolve_predictions_file(p, use_hedges=use_hedges, grader=grader)[1], str(p)


def _predictions_named_by_metrics(metrics_path: Path) -> Path:
    """The predictions file an eval folder was computed from (``source`` in its metrics.json).

    ``calrl eval --predictions FILE`` records FILE as given on its command line; a relative path is
    tried from the current folder, then from the eval folder's parent.
    """
    from calrl.io import read_text

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
