"""``calrl eval``: measure calibration of stated confidence from a predictions file or a checkpoint.

Writes ``DIR/metrics.json`` (metrics, and ``config`` and ``versions`` blocks to run it again),
``DIR/samples.jsonl`` (every item: prompt, response, reference, parsed answer, confidence and its source,
graded result), ``DIR/reliability.png``, ``DIR/report.md`` and ``DIR/report.html``, ``DIR/resolved.jsonl``
(every item as parsed and graded, which ``calrl compare`` reads), and ``DIR/predictions.jsonl`` when
generating from a checkpoint. All files appear together or not at all.

calrl eval --model RUN on a folder written by calrl train-* takes the run's own eval settings (held-out set,
size, missing-confidence policy, parser, prompt, generation, bins, bootstrap and seed) from the recipe saved
with it (RUN/calrl_recipe.yaml), and prints them on one line; an option given on the command line wins (with
--dataset, the run's split and limit are not used). On the final model this gives the metrics of the
training callback's last eval.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from calrl.cli import options
from calrl.confidence.missing import DEFAULT_EVAL_MISSING, EVAL_MISSING
from calrl.confidence.parse import DEFAULT_SCALE, SCALES
from calrl.confidence.reading import DEFAULT_PARSER, PARSERS
from calrl.data.heldout import dataset_table
from calrl.errors import InputError, reports_os_errors
from calrl.generation.prompts import (
    DEFAULT_PROMPT_STYLE,
    DEFAULT_RETRY_WHEN,
    PROMPT_STYLES,
    RETRY_RULES,
)
from calrl.grading import DEFAULT_GRADER, get_grader
from calrl.io import check_input, check_output
from calrl.limits import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_BINS,
    DEFAULT_BOOTSTRAP,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_MIN_SLICE_SIZE,
    MAX_NEW_TOKENS,
    MAX_RETRIES,
    MAX_SAMPLES,
)

# every file eval may write into --out: an --out holding one of them is refused unless --overwrite
OUTPUT_NAMES = ("metrics.json", "reliability.png", "report.md", "report.html", "predictions.jsonl",
                "resolved.jsonl", "samples.jsonl")
# calrl eval's defaults of the options a trained run's recipe can set (None in argparse: "not given")
DEFAULTS = {"bins": DEFAULT_BINS, "missing_confidence": DEFAULT_EVAL_MISSING,
            "confidence_parser": DEFAULT_PARSER, "no_hedges": False, "grader": DEFAULT_GRADER,
            "min_slice_size": DEFAULT_MIN_SLICE_SIZE, "bootstrap": DEFAULT_BOOTSTRAP, "seed": 0,
            "prompt_scale": DEFAULT_SCALE, "reasons_first": False, "prompt_style": DEFAULT_PROMPT_STYLE,
            "confidence_retries": 0, "batch_size": DEFAULT_BATCH_SIZE,
            "max_new_tokens": DEFAULT_MAX_NEW_TOKENS, "retry_when": DEFAULT_RETRY_WHEN, "do_sample": False,
            "top_k": 0, "temperature": 1.0}
RUN = "a calrl run's own setting, else"


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "eval", help="measure calibration from a predictions file or a checkpoint",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--predictions", metavar="FILE",
                        help="predictions file: JSONL, CSV, Parquet or a saved datasets folder")
    source.add_argument("--model", metavar="PATH_OR_HUB_ID", help="generate predictions with this model")
    p.add_argument("--list-datasets", action=_ListDatasets,
                   help="list the standard held-out sets and their lm-evaluation-harness aliases, and exit")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    options.add_overwrite(p, "earlier results in --out, or write into a folder holding the input")
    _add_scoring_options(p)
    _add_generation_options(p.add_argument_group("generating from a checkpoint (with --model)"))
    p.set_defaults(func=run)


def _add_scoring_options(p: argparse.ArgumentParser) -> None:
    """How answers are read, graded and scored (a predictions file or generated answers)."""
    p.add_argument("--bins", type=options.bins, default=None,
                   help=f"equal-width ECE bins, 1 to {options.MAX_BINS} (default: {RUN} {DEFAULT_BINS})")
    p.add_argument("--missing-confidence", choices=EVAL_MISSING, default=None,
                   help=f"answered items without a confidence: leave out, score as 0.5, or fail (default: {RUN} "
                        f"{DEFAULT_EVAL_MISSING})")
    p.add_argument("--confidence-parser", choices=PARSERS, default=None,
                   help="how a stated confidence is read: calrl (documented in calrl/confidence/parse.py) or "
                        f"reference (the paper's evaluation rules) (default: {RUN} {DEFAULT_PARSER})")
    p.add_argument("--no-hedges", action="store_const", const=True, default=None,
                   help="do not map hedge phrases ('probably', 'I think') to confidences (default: "
                        f"{RUN} hedges are read)")
    p.add_argument("--grader", default=None, metavar="NAME",
                   help="how answers are graded: auto, exact, numeric, mc, any grader registered with "
                        "calrl.grading.register_grader, MODULE:FUNCTION, or a 'calrl.graders' entry point "
                        f"(default: {RUN} {DEFAULT_GRADER})")
    p.add_argument("--min-slice-size", type=options.non_negative_int, default=None,
                   help=f"slices with fewer items are flagged small (default: {RUN} "
                        f"{DEFAULT_MIN_SLICE_SIZE})")
    p.add_argument("--bootstrap", type=options.bootstrap, default=None,
                   help=f"bootstrap resamples for the smooth-ECE interval, 0 = none (default: {RUN} "
                        f"{DEFAULT_BOOTSTRAP})")
    p.add_argument("--seed", type=options.seed, default=None, help=f"bootstrap seed (default: {RUN} 0)")
    p.add_argument("--title", default=None, help="report title (default: 'Calibration report: ' and the model)")


def _add_generation_options(gen: Any) -> None:
    """What is generated from a checkpoint, and how (with --model)."""
    gen.add_argument("--adapter", metavar="DIR", help="LoRA adapter folder to load on top of --model")
    gen.add_argument("--dataset", metavar="SPEC",
                     help="a held-out set by name or lm-evaluation-harness alias (gsm8k, mmlu_professional_law, "
                          "truthfulqa_mc1, ...; see --list-datasets), NAME:PATH for a local copy of one, a "
                          "local file (JSONL, CSV, Parquet, save_to_disk folder), or calrl:PATH for one shipped "
                          "with calrl (as recipes name them) (default: a calrl run's own held-out set)")
    gen.add_argument("--split", default=None, help="dataset split (default: the set's own)")
    gen.add_argument("--limit", type=options.positive_int, default=None,
                     help="evaluate N items: the first N, or with --sample-seed a sample stratified by slice")
    gen.add_argument("--sample-seed", type=options.seed, default=None, metavar="SEED",
                     help="with --limit: draw the N items at random with this seed, every slice in proportion")
    gen.add_argument("--prompt-scale", choices=SCALES, default=None,
                     help=f"confidence scale asked for (default: {RUN} {DEFAULT_SCALE})")
    gen.add_argument("--reasons-first", action="store_const", const=True, default=None,
                     help=f"ask for reasons before the answer (default: {RUN} off)")
    gen.add_argument("--prompt-style", choices=PROMPT_STYLES, default=None,
                     help="calrl's elicitation prompt, or the paper's 'standard' (answer + confidence 0-10) or "
                          f"'cot' (explanation, answer, confidence) prompt (default: {RUN} "
                          f"{DEFAULT_PROMPT_STYLE})")
    gen.add_argument("--prompt-template", metavar="FILE", default=None,
                     help="a YAML file with the prompt's words (system, user, options_intro, option, answer_type, "
                          "demo; calrl/generation/prompt_template.py); docs/fidelity.md says how to write the paper's")
    gen.add_argument("--option-format", metavar="FORMAT", default=None,
                     help="one multiple-choice option line, with {letter} and {text} (default '{letter}. {text}', "
                          "the paper's '({letter}) {text}')")
    gen.add_argument("--confidence-retries", type=options.int_range(0, MAX_RETRIES), default=None, metavar="N",
                     help="regenerate an answer without a confidence up to N times, the last try forcing "
                          "'Confidence:' (the paper's code: 10 plain tries and a forced one, N = 11) "
                          f"(default: {RUN} 0)")
    gen.add_argument("--retry-when", choices=RETRY_RULES, default=None,
                     help="what counts as no confidence: the parser reads none, or the paper's test (no "
                          f"'Confidence:' followed by digits) (default: {RUN} {DEFAULT_RETRY_WHEN})")
    gen.add_argument("--forced-retry-tokens", type=options.int_range(1, MAX_NEW_TOKENS), default=None, metavar="N",
                     help="new tokens of the forced try (default --max-new-tokens; the paper's code: 16)")
    gen.add_argument("--distractor", action="store_true", help="add a distractor answer to the prompt")
    gen.add_argument("--batch-size", type=options.batch_size, default=None,
                     help=f"prompts generated together (default: {RUN} {DEFAULT_BATCH_SIZE})")
    gen.add_argument("--max-new-tokens", type=options.int_range(1, MAX_NEW_TOKENS), default=None,
                     help=f"length limit of each answer (default: {RUN} {DEFAULT_MAX_NEW_TOKENS})")
    gen.add_argument("--num-samples", type=options.int_range(0, MAX_SAMPLES), default=0,
                     help="extra sampled answers per question, for consistency signals")
    gen.add_argument("--temperature", type=_positive_float, default=None,
                     help=f"sampling temperature (of --do-sample answers and of the --num-samples) (default: {RUN} 1)")
    gen.add_argument("--do-sample", action="store_true", default=None,
                     help=f"sample the answers (with --temperature, --top-k) instead of greedy decoding (default: {RUN} "
                          "greedy)")
    gen.add_argument("--top-k", type=options.non_negative_int, default=None, metavar="K",
                     help=f"sample from the K most likely tokens (0: all; the paper's code: 50) (default: {RUN} 0)")
    gen.add_argument("--generation-seed", type=options.seed, default=None, metavar="SEED",
                     help="seed of the sampled answers (the paper's query.sh: 1234)")


@reports_os_errors
def run(args: argparse.Namespace) -> int:
    gen_only = ("adapter", "dataset", "split", "limit", "sample_seed", "prompt_template", "option_format",
                "forced_retry_tokens", "generation_seed")
    if args.model is None and any(getattr(args, a) is not None for a in gen_only):
        raise InputError("--adapter, --dataset, --split, --limit, --sample-seed, --prompt-template, --option-format, "
                         "--forced-retry-tokens and --generation-seed only apply with --model")
    _fill_defaults(args)
    if args.sample_seed is not None and args.limit is None:
        raise InputError("--sample-seed draws the --limit items: give --limit N too")
    get_grader(args.grader)  # an unknown grader fails before any model loads
    inputs = [] if args.predictions is None else [check_input(args.predictions, option="--predictions",
                                                              allow_dir=True)]
    written = OUTPUT_NAMES if args.model is not None else tuple(n for n in OUTPUT_NAMES if n != "predictions.jsonl")
    out = check_output(args.out, option="--out", kind="dir", inputs=inputs, outputs=written,
                       overwrite=args.overwrite)
    if args.model is not None and not args.dataset:
        raise InputError("--model needs --dataset SPEC (a calrl run's own held-out set is used when its recipe "
                         "names one)")
    # lazy: the eval's library loads torch and matplotlib, which `calrl eval --help` must not (test_cli_startup.py)
    from calrl.eval.run import EvalRequest, run_eval

    request = EvalRequest(**{f.name: getattr(args, f.name) for f in dataclasses.fields(EvalRequest) if f.name != "out"},
                          out=out)
    results = run_eval(request)
    if results is not None:  # None: a process other than the main one, which writes
        _print_summary(results, out)
    return 0


def _fill_defaults(args: argparse.Namespace) -> None:
    """Options not given: a calrl run's own eval settings (``--model RUN``, printed on one line), else DEFAULTS."""
    inherited: dict[str, Any] = {}
    if args.model is not None:
        from calrl.runners.reporting import read_run_eval  # lazy: torch and transformers, not for --help

        run = read_run_eval(args.adapter or args.model)
        if run is not None:
            inherited = _run_settings(run, own_dataset=args.dataset is None)
            inherited = {k: v for k, v in inherited.items() if getattr(args, k) is None}
            if inherited:
                shown = " ".join(_as_option(k, v) for k, v in inherited.items() if v is not False)
                print(f"calrl eval: the run's eval settings from {run.path} (options given here win): {shown}",
                      flush=True)
    for key, value in {**DEFAULTS, **inherited}.items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def _run_settings(run: Any, *, own_dataset: bool) -> dict[str, Any]:
    """calrl eval's options from a run's eval section (the split and size only with the run's own set)."""
    ev = run.settings
    out: dict[str, Any] = {}
    if own_dataset and ev.heldout:
        out.update({"dataset": ev.heldout, "split": ev.split, "limit": ev.limit})
    out.update({"missing_confidence": ev.missing_policy, "confidence_parser": ev.confidence_parser,
                "prompt_style": ev.prompt_style, "prompt_scale": ev.scale, "reasons_first": ev.reasons_first,
                "confidence_retries": ev.confidence_retries, "batch_size": ev.batch_size,
                "max_new_tokens": ev.max_new_tokens, "bins": ev.n_bins, "no_hedges": not ev.use_hedges,
                "grader": ev.grader, "min_slice_size": ev.min_slice_size, "bootstrap": ev.n_boot,
                "seed": run.seed, "prompt_template": ev.prompt_template, "option_format": ev.option_format,
                "retry_when": ev.retry_when, "forced_retry_tokens": ev.forced_retry_tokens, "do_sample": ev.do_sample,
                "temperature": ev.temperature, "top_k": ev.top_k, "generation_seed": ev.generation_seed})
    return {k: v for k, v in out.items() if v is not None}


def _as_option(key: str, value: Any) -> str:
    flag = "--" + key.replace("_", "-")
    return flag if value is True else f"{flag} {value}"


class _ListDatasets(argparse.Action):
    """``--list-datasets``: print the standard sets with their hub ids, slices and aliases, then exit 0."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        rows = dataset_table()
        columns = ("name", "split", "slices", "aliases", "hub")
        widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns[:-1]}
        print("  ".join(c.ljust(widths[c]) if c in widths else c for c in columns))
        for r in rows:
            print("  ".join(r[c].ljust(widths[c]) if c in widths else r[c] for c in columns))
        print("Any name or alias works as --dataset NAME (from the hub) or NAME:PATH (a local copy).")
        parser.exit(0)


def _print_summary(results: Any, out: Path) -> None:
    # lazy: the report and the schema take 30 ms, more than `calrl eval --help` should pay
    from calrl.eval.report import verdict
    from calrl.eval.schema import lookup
    from calrl.formatting import fmt

    rows = [("items", "n"), ("answered", "n_answered"), ("accuracy", "accuracy"),
            ("refusal rate", "refusal_rate"), ("ECE", "ece"), ("smooth ECE", "smece.value"),
            ("Brier", "brier"), ("AUROC", "auroc"), ("mean confidence", "mean_confidence"),
            ("overconfident errors", "overconfident_error_rate"),
            ("missing confidence", "missing_confidence.count")]
    width = max(len(label) for label, _ in rows)
    print(f"{'metric':<{width}}  value")
    for label, key in rows:
        print(f"{label:<{width}}  {fmt(lookup(results, key))}")
    print(verdict(results))
    print(f"report: {out / 'report.html'} (also report.md, metrics.json, samples.jsonl, reliability.png)")


def _positive_float(text: str) -> float:
    value = options.finite_float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value
