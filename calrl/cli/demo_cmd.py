"""``calrl demo``: the offline end-to-end calibration study (``make demo``).

Builds a small world with knowable answers, trains a tiny policy from scratch (SFT), two reward models on
preference data with the human confidence bias (ordinary and calibrated), then PPO, PPO-M, PPO-C,
PPO-C + abstention and GRPO + Brier from the same SFT policy, evaluates each with ``calrl eval`` and gates
each with ``calrl compare``. Writes OUT/summary.json, OUT/report.md and OUT/report.html. Re-running reuses
the finished stages; ``--fresh`` starts over.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from calrl.cli import options
from calrl.errors import InputError

if TYPE_CHECKING:
    from calrl.demo.runner import Zygote

#: Most stage processes run side by side (each holds a model; more than the cores only slows them down).
MAX_JOBS = 64


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("demo", help="run the offline end-to-end calibration study", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one seed and few steps (a few minutes; not a result)")
    p.add_argument("--fresh", action="store_true", help="delete OUT first instead of reusing finished stages")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output folder (default runs/demo, or runs/demo-quick with --quick)")
    p.add_argument("--seeds", default=None, metavar="N,N,...",
                   help="seeds of the runs (default 0,1,2,3,4; --quick: 0)")
    p.add_argument("--policies", default=None, metavar="P,P,...",
                   help="the policies to train and compare (default: sft,ppo,ppo_m,ppo_c,ppo_v,ppo_c_abstain,"
                        "grpo_brier; --quick: sft,ppo,ppo_m,ppo_c)")
    p.add_argument("--jobs", type=options.int_range(1, MAX_JOBS), default=None, metavar="N",
                   help="processes run side by side (default: min(2, CPU cores))")
    p.add_argument("--readme-table", action="store_true",
                   help="run nothing: print the README's headline tables (machine, wall time, commit) from "
                        "OUT/summary.json, exactly as the study printed them when it finished")
    p.set_defaults(func=run)


def parse_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        seeds = [options.seed(part) for part in text.split(",") if part.strip()]
    except argparse.ArgumentTypeError as exc:
        raise InputError(f"--seeds must be comma-separated integers from 0 to {options.MAX_SEED}: {exc}",
                         field="seeds") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise InputError(f"--seeds must name at least one seed, each once, got {text!r}", field="seeds")
    return seeds


def parse_policies(text: str | None) -> tuple[str, ...] | None:
    """``--policies``: known names, each once, SFT and vanilla PPO included (everything is compared with them)."""
    import difflib  # 2 ms: only a misspelt name needs it, not `calrl demo --help`

    from calrl.demo.recipes import POLICIES  # lazy: loads torch, which `calrl demo --help` must not

    if text is None:
        return None
    names = [part.strip() for part in text.split(",") if part.strip()]
    for name in names:
        if name not in POLICIES:
            close = difflib.get_close_matches(name, POLICIES, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise InputError(f"--policies: unknown policy {name!r} (known: {', '.join(POLICIES)}){hint}",
                             field="policies")
    if len(set(names)) != len(names) or not {"sft", "ppo"} <= set(names):
        raise InputError(f"--policies must name each policy once and include sft and ppo, got {text!r}",
                         field="policies")
    return tuple(p for p in POLICIES if p in names)


def run(args: argparse.Namespace) -> int:
    seeds = parse_seeds(args.seeds)
    policies = parse_policies(args.policies)
    if args.jobs is not None and args.jobs < 1:
        raise InputError(f"--jobs must be at least 1, got {args.jobs}", field="jobs")
    out = Path(args.out or ("runs/demo-quick" if args.quick else "runs/demo"))
    if out.exists() and not out.is_dir():
        raise InputError("exists and is not a folder", path=str(out))
    if args.readme_table:
        return print_readme_table(out)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    # the stages' zygote first (light import): it imports torch, transformers and TRL while this process imports
    # the study's modules, which load them too
    from calrl.demo.processes import start_zygote

    zygote = start_zygote(out)
    try:
        return _run_study(args, out, seeds, policies, zygote)
    finally:
        zygote.close()


def _run_study(args: argparse.Namespace, out: Path, seeds: list[int] | None, policies: tuple[str, ...] | None,
               zygote: Zygote) -> int:
    # lazy: the study loads torch, which `calrl demo --help` must not
    from calrl.demo.runner import StageFailed, log_tail
    from calrl.demo.study import full_config, quick_config, run_study

    config = (quick_config if args.quick else full_config)(out, seeds=seeds, jobs=args.jobs, policies=policies)
    command = ("calrl demo" + (" --quick" if args.quick else "") + (f" --seeds {args.seeds}" if args.seeds else "")
               + (f" --policies {','.join(policies)}" if policies else ""))
    print(f"calrl demo: {'quick run' if args.quick else 'full study'}, seeds {config.seeds}, "
          f"{config.jobs} process(es) side by side, output {out}")
    try:
        report = run_study(config, command=command, zygote=zygote)
    except StageFailed as exc:
        print(f"calrl demo: {exc}")
        tail = log_tail(exc.result.log)
        if tail:
            print(tail)
        return 1
    print(f"calrl demo: done. Report: {report} (also {out / 'report.md'}, summary: {out / 'summary.json'})")
    return 0


def print_readme_table(out: Path) -> int:
    # lazy: the report loads torch, which `calrl demo --help` must not
    from calrl.demo.report import readme_table
    from calrl.io import check_input, read_text
    from calrl.jsonio import loads_json

    path = out / "summary.json"
    if not path.exists():
        raise InputError("no summary.json here: run `calrl demo` first (or pass its --out)", path=str(path))
    summary = loads_json(read_text(check_input(path, option="summary.json")), path=str(path))
    try:
        table = readme_table(summary)
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as exc:  # a file calrl demo did not write
        missing = f"no {exc.args[0]!r}" if isinstance(exc, KeyError) else type(exc).__name__
        raise InputError(f"not a summary written by calrl demo ({missing}), or one written by an earlier version: "
                         "rerun `calrl demo` with the same --out to rebuild it", path=str(path)) from None
    print(table)
    return 0
