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
import sys
from typing import Any

from calrl.cli import options
from calrl.errors import reports_os_errors
from calrl.grading import DEFAULT_GRADER
from calrl.limits import DEFAULT_BINS
from calrl.recalibration.methods import METHODS


def add_parser(subparsers: Any) -> None:
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
    fit.add_argument("--bins", type=options.bins, default=DEFAULT_BINS,
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
    p.add_argument("--grader", default=DEFAULT_GRADER, help="grader used when 'correct' is not given")


@reports_os_errors
def run(args: argparse.Namespace) -> int:
    return run_fit(args) if args.action == "fit" else run_apply(args)


def run_fit(args: argparse.Namespace) -> int:
    # lazy: loads torch, which `calrl recalibrate --help` must not
    from calrl.recalibration.fit import run_fit as fit

    result = fit(args.predictions, args.method, args.out, bins=args.bins, holdout_fraction=args.holdout_fraction,
                 eval_predictions=args.eval_predictions, report_dir=args.report_dir, seed=args.seed,
                 overwrite=args.overwrite, use_hedges=not args.no_hedges, grader=args.grader)
    for warning in result.warnings:
        print(f"calrl recalibrate: warning: {warning}", file=sys.stderr)
    for line in result.summary_lines():
        print(line)
    return 0


def run_apply(args: argparse.Namespace) -> int:
    # lazy: loads torch, which `calrl recalibrate --help` must not
    from calrl.recalibration.apply import run_apply as apply

    result = apply(args.calibrator, args.predictions, args.out, overwrite=args.overwrite,
                   use_hedges=not args.no_hedges, grader=args.grader)
    print(result.summary_line())
    return 0
