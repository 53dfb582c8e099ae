"""``calrl compare``: the release gate between a baseline and a candidate evaluation.

Each side is an eval output folder holding ``resolved.jsonl`` (records already parsed and graded) or
``predictions.jsonl``, or a predictions file (JSONL, CSV, Parquet, a saved ``datasets`` folder) that is
resolved here. Exit code 0 when the gate passes, 1 when it blocks, 2 on bad input.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from calrl.cli import options
from calrl.confidence.missing import EVAL_MISSING
from calrl.errors import reports_os_errors
from calrl.gate.config import GateConfig
from calrl.grading import DEFAULT_GRADER

DEFAULTS = GateConfig()


def add_parser(subparsers: Any) -> None:
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
        default=DEFAULTS.refusal_collapse_factor,
        help="block when the refusal rate falls or rises by this factor (baseline/candidate or the reverse)",
    )
    p.add_argument(
        "--max-refusal-rate",
        type=options.finite_float,
        default=DEFAULTS.max_refusal_rate,
        help="block when the candidate refuses more often than this and more than the baseline",
    )
    p.add_argument(
        "--max-accuracy-drop",
        type=options.finite_float,
        default=DEFAULTS.max_accuracy_drop,
        help="block when accuracy fell by more than this and its paired bootstrap interval is below 0",
    )
    p.add_argument(
        "--slice-ece-threshold",
        type=options.finite_float,
        default=DEFAULTS.slice_ece_threshold,
        help="block when the ECE of the whole set or of a slice rose by more than this",
    )
    p.add_argument(
        "--min-slice-size",
        type=options.positive_int,
        default=DEFAULTS.min_slice_size,
        help="scored items needed on both sides for a slice to block",
    )
    p.add_argument(
        "--collapse-spread-ratio",
        type=options.finite_float,
        default=DEFAULTS.collapse_spread_ratio,
        help="warn when the candidate's confidence spread falls below this share of the baseline's",
    )
    p.add_argument(
        "--bootstrap", type=options.bootstrap, default=DEFAULTS.n_boot, help="paired bootstrap resamples"
    )
    p.add_argument(
        "--bins", type=options.bins, default=DEFAULTS.n_bins, help=f"equal-width ECE bins (1 to {options.MAX_BINS})"
    )
    p.add_argument(
        "--missing-confidence",
        dest="missing_policy",
        choices=EVAL_MISSING,
        default=DEFAULTS.missing_policy,
        help="answered items without a confidence: leave out of ECE/Brier, score as 0.5, or fail",
    )
    p.add_argument(  # the earlier name, kept working but not shown
        "--missing-policy", dest="missing_policy", choices=EVAL_MISSING,
        default=argparse.SUPPRESS, help=argparse.SUPPRESS,
    )
    p.add_argument(
        "--no-hedges",
        action="store_true",
        help="when resolving predictions here, do not map hedge phrases to confidences",
    )
    p.add_argument("--grader", default=DEFAULT_GRADER, help="grader used when resolving predictions here")
    p.add_argument("--seed", type=options.seed, default=DEFAULTS.seed, help="bootstrap seed")
    p.set_defaults(func=run)


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description's line breaks and shows every option's default."""


@reports_os_errors
def run(args: argparse.Namespace) -> int:
    # lazy: the gate loads torch and matplotlib (and its results the eval schema: 40 ms), which `calrl --help`
    # must not
    from calrl.gate.report import summary_lines
    from calrl.gate.run import GATE_NAME, run_compare

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
    result = run_compare(args.baseline, args.candidate, args.out, config, overwrite=args.overwrite,
                         use_hedges=not args.no_hedges, grader=args.grader)
    for line in summary_lines(result):
        print(line)
    print(f"wrote {Path(args.out) / GATE_NAME} and report.md/.html")
    return 0 if result.passed else 1
