"""``calrl eval``: measure calibration of stated confidence from a predictions file or a checkpoint.

Writes ``DIR/metrics.json``, ``DIR/reliability.png``, ``DIR/report.md`` and ``DIR/report.html`` (and
``DIR/predictions.jsonl`` when generating from a checkpoint, and ``DIR/resolved.jsonl``: every item as
parsed and graded, which ``calrl compare`` reads). All files appear together or not at all.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from calrl.cli import options
from calrl.errors import InputError, reports_os_errors

GRADERS = ("auto", "exact", "numeric", "mc")
# every file eval may write into --out: an --out holding one of them is refused unless --overwrite
OUTPUT_NAMES = ("metrics.json", "reliability.png", "report.md", "report.html", "predictions.jsonl",
                "resolved.jsonl")
SCALES = ("0-10", "percent", "unit")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval", help="measure calibration from a predictions file or a checkpoint",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--predictions", metavar="FILE",
                        help="predictions file: JSONL, CSV, Parquet or a saved datasets folder")
    source.add_argument("--model", metavar="PATH_OR_HUB_ID", help="generate predictions with this model")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    options.add_overwrite(p, "earlier results in --out, or write into a folder holding the input")
    p.add_argument("--bins", type=options.bins, default=15,
                   help=f"equal-width ECE bins, 1 to {options.MAX_BINS} (default 15)")
    p.add_argument("--missing-confidence", choices=("exclude", "half", "error"), default="exclude",
                   help="answered items without a confidence: leave out, score as 0.5, or fail")
    p.add_argument("--no-hedges", action="store_true",
                   help="do not map hedge phrases ('probably', 'I think') to confidences")
    p.add_argument("--grader", choices=GRADERS, default="auto", help="how answers are graded (default auto)")
    p.add_argument("--min-slice-size", type=_non_negative_int, default=30,
                   help="slices with fewer items are flagged small (default 30)")
    p.add_argument("--bootstrap", type=_non_negative_int, default=200,
                   help="bootstrap resamples for the smooth-ECE interval (default 200; 0 = none)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--title", default=None, help="report title")

    gen = p.add_argument_group("generating from a checkpoint (with --model)")
    gen.add_argument("--adapter", metavar="DIR", help="LoRA adapter folder to load on top of --model")
    gen.add_argument("--dataset", metavar="SPEC", help="held-out set name (gsm8k, triviaqa, ...) or a local file")
    gen.add_argument("--split", default=None, help="dataset split")
    gen.add_argument("--limit", type=_positive_int, default=None, help="evaluate the first N items")
    gen.add_argument("--prompt-scale", choices=SCALES, default="0-10", help="confidence scale asked for")
    gen.add_argument("--reasons-first", action="store_true", help="ask for reasons before the answer")
    gen.add_argument("--distractor", action="store_true", help="add a distractor answer to the prompt")
    gen.add_argument("--batch-size", type=_positive_int, default=16)
    gen.add_argument("--max-new-tokens", type=_positive_int, default=64)
    gen.add_argument("--num-samples", type=_non_negative_int, default=0,
                     help="extra sampled answers per question, for consistency signals")
    gen.add_argument("--temperature", type=_positive_float, default=1.0, help="temperature of the samples")
    p.set_defaults(func=run)


@reports_os_errors
def run(args: argparse.Namespace) -> int:
    from calrl.eval.loading import resolve_predictions_file
    from calrl.eval.plots import plot_reliability
    from calrl.eval.report import write_report
    from calrl.eval.runner import compute_metrics, resolve_records
    from calrl.io import staged_dir, write_json, write_jsonl

    if args.model is None and any(getattr(args, a) is not None for a in ("adapter", "dataset", "split", "limit")):
        raise InputError("--adapter, --dataset, --split and --limit only apply with --model")
    from calrl.io import check_input, check_output

    inputs = [] if args.predictions is None else [check_input(args.predictions, option="--predictions",
                                                              allow_dir=True)]
    written = OUTPUT_NAMES if args.model is not None else tuple(n for n in OUTPUT_NAMES if n != "predictions.jsonl")
    out = check_output(args.out, option="--out", kind="dir", inputs=inputs, outputs=written,
                       overwrite=args.overwrite)

    if args.model is not None:
        if not args.dataset:
            raise InputError("--model needs --dataset SPEC")
        records = _generate(args)
        source = f"{args.model} on {args.dataset}"
        if int(os.environ.get("RANK", "0")) != 0:  # under accelerate launch / torchrun: every rank generated
            return 0  # its shard and holds all records; the main process alone writes the outputs
        resolved = resolve_records(records, use_hedges=not args.no_hedges, grader=args.grader)
    else:  # errors name the file and line of the item
        records, resolved = resolve_predictions_file(args.predictions, use_hedges=not args.no_hedges,
                                                     grader=args.grader)
        source = str(args.predictions)

    try:
        metrics = compute_metrics(resolved, n_bins=args.bins, missing_policy=args.missing_confidence,
                                  min_slice_size=args.min_slice_size, n_boot=args.bootstrap, seed=args.seed)
    except InputError as exc:
        if exc.path is not None or args.predictions is None:
            raise
        raise InputError(str(exc), path=str(args.predictions)) from None
    metrics["source"] = source
    title = args.title or f"Calibration report: {source}"

    with staged_dir(out) as tmp:
        if args.model is not None:
            write_jsonl(tmp / "predictions.jsonl", (r.to_json() for r in records))
        write_jsonl(tmp / "resolved.jsonl", (asdict(r) for r in resolved))  # item level, for compare
        write_json(tmp / "metrics.json", metrics)
        plot_reliability(metrics, tmp / "reliability.png", labels=[Path(source).name or source],
                         title="Reliability diagram")
        write_report(metrics, tmp, title)

    _print_summary(metrics, out)
    return 0


def _generate(args: argparse.Namespace) -> list[Any]:
    from calrl.eval.checkpoint import predict_from_checkpoint
    from calrl.eval.prompts import ElicitationPrompt

    prompt = ElicitationPrompt(scale=args.prompt_scale, reasons_first=args.reasons_first,
                               distractor=args.distractor)
    return predict_from_checkpoint(model=args.model, adapter=args.adapter, dataset=args.dataset,
                                   split=args.split, limit=args.limit, prompt=prompt,
                                   batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                                   num_samples=args.num_samples, temperature=args.temperature)


def _print_summary(metrics: dict[str, Any], out: Path) -> None:
    from calrl.eval.report import fmt, lookup

    rows = [("items", "n"), ("answered", "n_answered"), ("accuracy", "accuracy"),
            ("refusal rate", "refusal_rate"), ("ECE", "ece"), ("smooth ECE", "smece.value"),
            ("Brier", "brier"), ("AUROC", "auroc"), ("mean confidence", "mean_confidence"),
            ("overconfident errors", "overconfident_error_rate"),
            ("missing confidence", "missing_confidence.count")]
    width = max(len(label) for label, _ in rows)
    print(f"{'metric':<{width}}  value")
    for label, key in rows:
        print(f"{label:<{width}}  {fmt(lookup(metrics, key))}")
    print(f"report: {out / 'report.html'} (also report.md, metrics.json, reliability.png)")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value
