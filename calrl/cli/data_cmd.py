"""``calrl data``: data steps before training.

``filter-preferences`` is the preference-data filter of the paper's calibrated reward model
(methods.md section 9; ``calrl.reward_modeling.filtering``): it keeps the single-turn pairs, scores
``chosen`` and ``rejected`` with one or more reward models (the mean of the score differences when
several; each normalised with the mean/std ``calrl train-rm`` stores, when it has them), and keeps the
``--keep-fraction`` strongest pairs (the reference: two reward models, 0.5). It writes the kept rows,
with ``preference_strength``, ``chosen_score`` and ``rejected_score`` added, as JSONL (``--out`` ending in
``.jsonl``) or a saved ``datasets`` folder, and ``<out>.filter_report.json`` with the counts beside it.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from calrl.cli import options
from calrl.errors import InputError, reports_os_errors


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("data", help="data steps before training (the paper's preference filter)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True)
    f = sub.add_parser("filter-preferences", help="keep the single-turn pairs with the strongest preference",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    f.add_argument("--input", required=True, metavar="PAIRS",
                   help="preference pairs (prompt?, chosen, rejected): JSONL, JSON, CSV, Parquet or a saved "
                        "datasets folder")
    f.add_argument("--out", required=True, type=options.non_empty_path, metavar="FILE",
                   help="output: a .jsonl file, or a folder for a saved datasets folder")
    f.add_argument("--reward-model", required=True, action="append", metavar="PATH",
                   help="reward model (folder or hub id); give it twice for two models, as the reference")
    f.add_argument("--keep-fraction", type=options.finite_float, default=0.5,
                   help="share of the single-turn pairs kept, in (0, 1]")
    f.add_argument("--system-prompt", action="store_true",
                   help="a system message before the one user message keeps a pair single turn (the reference's "
                        "rule, the default, keeps exactly [user, assistant])")
    f.add_argument("--no-normalize", action="store_true",
                   help="use raw scores even when a reward model stores its mean/std")
    f.add_argument("--batch-size", type=options.batch_size, default=16, help="rows per reward-model forward")
    options.add_overwrite(f, "an existing output and report")
    f.set_defaults(func=run)


@reports_os_errors
def run(args: argparse.Namespace) -> int:
    # lazy: the filter loads torch, transformers and datasets, which `calrl data --help` must not
    from calrl.io import check_output
    from calrl.reward_modeling.filtering import (
        RewardModelScorer,
        TokenCache,
        check_keep_fraction,
        filter_preferences,
        n_to_keep,
        read_preference_rows,
        report_path,
        single_turn_rows,
        write_filtered,
    )

    try:
        check_keep_fraction(args.keep_fraction)
    except InputError:
        raise InputError(f"--keep-fraction must be in (0, 1], got {args.keep_fraction}") from None
    is_file = str(args.out).endswith(".jsonl")
    out = check_output(args.out, option="--out", kind="file" if is_file else "tree", inputs=[args.input],
                       overwrite=args.overwrite)
    check_output(report_path(out), option="--out's report", kind="file", inputs=[args.input],
                 overwrite=args.overwrite)
    rows = read_preference_rows(args.input)
    single = single_turn_rows(rows, path=args.input, system_prompt=args.system_prompt)
    n_to_keep(len(single), args.keep_fraction, path=args.input)  # before loading
    cache = TokenCache()  # reward models sharing a tokenizer tokenize each response once
    scorers = [RewardModelScorer.from_pretrained(path, normalize=not args.no_normalize, batch_size=args.batch_size,
                                                 token_cache=cache) for path in args.reward_model]
    kept, report = filter_preferences(rows, scorers, keep_fraction=args.keep_fraction, path=args.input,
                                      reward_models=[s.info for s in scorers], system_prompt=args.system_prompt)
    written, rpath = write_filtered(kept, report, out)
    print(f"kept {report.n_kept} of {report.n_rows} rows ({report.n_single_turn} single-turn, "
          f"{report.n_multi_turn} multi-turn dropped, keep fraction {report.keep_fraction}); "
          f"wrote {written} and {rpath}")
    print(json.dumps({k: v for k, v in report.to_dict().items() if k != "reward_models"}))
    return 0
