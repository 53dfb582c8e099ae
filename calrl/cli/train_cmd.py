"""Train with calibration in the loop, from a YAML recipe (see configs/).

calrl train-ppo --config RECIPE.yaml [section.key=value ...] [--key value ...]

Recipe keys are overridden as section.key=value (training.learning_rate=1e-6) or, as with TRL's scripts,
as --key value / --key=value: TRL's flags (--run_name, --seed, --output_dir, --report_to,
--per_device_train_batch_size ...; listed below) each set one recipe key, any other --key goes to the one
section with that key (a key that several sections have needs its section: --eval.limit 8). The recipe is
validated (every key, then the dataset's columns) before any model loads; the model is saved with a model
card. The same entry points run under accelerate launch through scripts/train_*.py.

Several processes: --num_processes N [--accelerate_config FILE] checks the recipe here, then starts the
processes with accelerate launch (as TRL's CLI does); a bad recipe is one line and exit code 2 before any
process starts, and a process that fails prints one line (the main process for an error every process
meets) with the run's exit code, without the launcher's traceback. Typed as `accelerate launch ...
scripts/train_*.py`, the error line is printed once too, but accelerate's launcher then adds its own
traceback (ChildFailedError) and exits with code 1.

An output_dir holding an earlier run (its model or checkpoints) is refused unless --resume continues it or
--overwrite replaces it (the earlier model and checkpoints are deleted when the new run starts training). The
final model and its card are written through a staging folder; a failed or interrupted run (Ctrl-C) leaves
its complete checkpoints and nothing half-written, and its W&B run is marked failed. --dry-run runs every
check of a real run (recipe, output folder, model paths, data, held-out set, checkpoint to resume), lists every
problem it finds, prints the memory per process of every model under the launch (sized from their configs), and
loads no weights.

Exit codes: 0 done, 2 bad recipe or input (one line naming file:line and key, or the path of a file-system
fault), 3 training fault (a NaN or infinite reward, with the step and the sample), 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from calrl.cli import options
from calrl.errors import CalrlError, FileSystemError, InputError, error_line, reports_os_errors
from calrl.progress import is_main_process
from calrl.trl_flags import flags_help

# torch.save reports a failed write (ENOSPC, EIO ...) as a RuntimeError from its zip writer, without the errno
TORCH_WRITE_FAILURES = ("inline_container.cc", "PytorchStreamWriter", "file write failed")
COMMAND_METHODS = {"train-rm": "rm", "train-ppo": "ppo", "train-grpo": "grpo", "train-rloo": "rloo"}
HELP = {
    "rm": "train a reward model (ordinary, or calibrated for PPO-M)",
    "ppo": "train a policy with PPO, PPO-M or PPO-C (the recipe decides)",
    "grpo": "train a policy with GRPO and scoring-rule rewards",
    "rloo": "train a policy with RLOO and scoring-rule rewards",
}


# this command's own options; any other --flag is a recipe key (see split_flags)
OWN_OPTIONS = {"--config": True, "--resume": True, "--dry-run": False, "--overwrite": False, "-h": False,
               "--help": False, "--num_processes": True, "--num-processes": True, "--accelerate_config": True,
               "--gpu-memory": True, "--model-config": True}


def split_flags(argv: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Separate TRL-style recipe flags (``--learning_rate 1e-6``, ``--bf16``, ``--seed=3``) from this
    command's own arguments; a flag without a value is ``true``. Returns (own arguments, [(key, value)])."""
    own: list[str] = []
    flags: list[tuple[str, str]] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        name, has_value, value = token.partition("=")
        if token == "--":
            own += argv[i:]
            break
        if not token.startswith("--") or name in OWN_OPTIONS:
            own.append(token)
            if OWN_OPTIONS.get(name) and not has_value and i + 1 < len(argv):
                own.append(argv[i + 1])
                i += 1
            i += 1
            continue
        if not has_value:
            values = []
            while i + 1 < len(argv) and not argv[i + 1].startswith("--") and not _is_dotted_override(argv[i + 1]):
                values.append(argv[i + 1])
                i += 1
            # several values (--lora_target_modules q_proj v_proj, as TRL takes lists) are a YAML list
            value = "true" if not values else values[0] if len(values) == 1 else json.dumps(values)
        flags.append((name[2:], value))
        i += 1
    return own, flags


def _is_dotted_override(token: str) -> bool:
    key, eq, _ = token.partition("=")
    return bool(eq) and "." in key and " " not in key


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, metavar="FILE", help="YAML recipe (see configs/)")
    p.add_argument("--resume", metavar="PATH|latest", default=None,
                   help="resume from a checkpoint folder, or the newest checkpoint-* in the output folder")
    p.add_argument("--dry-run", action="store_true",
                   help="run every check of a real run (recipe, output folder, model paths, data, held-out set, "
                        "checkpoint to resume) and list every problem found; print the memory per process of every "
                        "model under the launch (launch.accelerate_config, --accelerate_config FILE, or accelerate "
                        "launch's own settings); load no weights, and exit")
    plan = p.add_argument_group("memory estimate of --dry-run")
    plan.add_argument("--gpu-memory", type=options.positive_float, default=None, metavar="GIB",
                      help="compare with a GPU of this many GiB (default: the GPU of this machine, when there is one)")
    plan.add_argument("--model-config", action="append", default=None, metavar="[NAME=]PATH",
                      help="a local config.json (or folder) to size a model whose config cannot be read (a hub id "
                           "offline); NAME: policy, reward_model, value_model, reference, a recipe key or a model id; "
                           "without NAME: every such model")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run (model and checkpoints) in the recipe's output_dir; refused by default")
    p.add_argument("--num_processes", "--num-processes", type=options.positive_int, default=None, metavar="N",
                   help="check the recipe, then start N processes with accelerate launch (one error line, the "
                        "run's exit code); with --dry-run, the processes the memory estimate sizes for")
    p.add_argument("--accelerate_config", default=None, metavar="FILE",
                   help="accelerate config of those processes (configs/accelerate/*.yaml; e.g. cpu_multi.yaml "
                        "for several CPU processes); implies launching; with --dry-run, the launch the memory "
                        "estimate sizes (instead of the recipe's launch.accelerate_config)")
    p.add_argument("overrides", nargs="*", metavar="section.key=value",
                   help="override recipe keys, e.g. training.learning_rate=1e-6 wandb.run_name=try2; "
                        "TRL-style --learning_rate 1e-6 works too")


def add_parser(subparsers: Any) -> None:
    for command, method in COMMAND_METHODS.items():
        p = subparsers.add_parser(command, help=HELP[method], description=__doc__, epilog=flags_help(method),
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        add_arguments(p)
        p.set_defaults(func=run, method=method, flags=[])


@reports_os_errors
def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    # lazy: calrl.runners loads torch and transformers, which `calrl train-* --help` must not (and TRL is
    # imported only after the line above)
    from calrl.runners.recipe import load_recipe

    if args.resume is not None and args.overwrite:
        raise InputError("--resume continues the run in output_dir and --overwrite replaces it: choose one")

    launching = not args.dry_run and (args.num_processes is not None or args.accelerate_config is not None)
    if launching:
        _check_launcher(args)
    overrides = list(args.overrides)
    if args.accelerate_config is not None:  # the launch the recipe runs under (its memory estimate, its precision)
        overrides.append(f"launch.accelerate_config={args.accelerate_config}")
    if args.flags:
        from calrl.runners.recipe import trl_flag_overrides  # lazy: as load_recipe above

        overrides += trl_flag_overrides(args.flags, args.method)
    recipe = load_recipe(args.config, overrides, method=args.method, resume=args.resume,
                         check_hardware=not args.dry_run)
    if args.dry_run:
        return _dry_run(recipe, args)
    if launching:
        return _launch(args, recipe)
    from calrl.runners.runner import run_recipe  # lazy: as load_recipe above

    try:
        result = run_recipe(recipe, overwrite=args.overwrite)
    except RuntimeError as exc:
        if not any(mark in str(exc) for mark in TORCH_WRITE_FAILURES):
            raise
        raise FileSystemError("torch.save could not write a checkpoint or model file (disk full, quota, or the "
                              f"file system refused the write): {str(exc).splitlines()[0][:120]}",
                              path=str(recipe.training.output_dir)) from None
    if is_main_process():
        print(result.summary())
    return 0


def _check_launcher(args: argparse.Namespace) -> None:
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 or "LOCAL_RANK" in os.environ:
        raise InputError("--num_processes / --accelerate_config start processes: this one was started by a "
                         "launcher already (drop them, or run calrl without accelerate launch / torchrun)")
    if args.accelerate_config is not None and not os.path.isfile(args.accelerate_config):
        raise InputError("accelerate config file not found", path=args.accelerate_config)


def _launch(args: argparse.Namespace, recipe) -> int:
    """Check the recipe as a dry run does (quietly), then run this command in accelerate's processes."""
    # lazy: calrl.runners loads torch and transformers, which `calrl train-* --help` must not
    from calrl.runners.launch import launch_processes
    from calrl.runners.runner import runner_for

    runner_for(recipe, overwrite=args.overwrite).check()
    child = ["--config", args.config, *(["--resume", args.resume] if args.resume else []),
             *(["--overwrite"] if args.overwrite else []), *args.overrides,
             *(f"--{key}={value}" for key, value in args.flags)]
    return launch_processes(f"train-{args.method}", child, accelerate_config=args.accelerate_config,
                            num_processes=args.num_processes)


def _dry_run(recipe, args: argparse.Namespace) -> int:
    """Run every check a real run makes before loading a model, print the memory estimate, list every problem."""
    from calrl.runners.runner import runner_for  # lazy: torch and transformers, not for --help

    runner = runner_for(recipe, overwrite=args.overwrite)
    problems = [str(p) for p in runner.problems(hub=True)]
    try:
        lines, warnings = _memory_estimate(recipe, args)
    except CalrlError as exc:
        lines, warnings = [], []
        problems.append(str(exc))
    if not is_main_process():  # under accelerate launch: the estimate once, the problems per process
        lines, warnings = [], []
    for line in lines:
        print(line)
    for warning in warnings:
        print(error_line(f"calrl train-{recipe.method}: warning: ", warning), file=sys.stderr)
    if problems:
        for problem in problems:
            print(error_line(f"calrl train-{recipe.method}: error: ", problem), file=sys.stderr)
        return 2
    data = runner.data
    print(f"{recipe.path}: ok ({recipe.method}, {len(data.train)} training rows"
          + (f", {len(data.eval)} held-out rows" if data.eval is not None else "")
          + (f", {len(runner.items)} eval items" if runner.items else "")
          + (f"; would resume from {runner.checkpoint}" if runner.checkpoint else "") + ")")
    for reason in runner.skipped:
        print(f"would skip {reason}")
    return 0


def _memory_estimate(recipe, args: argparse.Namespace) -> tuple[list[str], list[str]]:
    # lazy: calrl.runners loads torch and transformers, which `calrl train-* --help` must not
    from calrl.runners.memory import GIB, device_memory, host_memory, launch_strategy
    from calrl.runners.preflight import memory_plan, parse_model_configs, report

    strategy = launch_strategy(recipe, processes=args.num_processes)
    plan = memory_plan(recipe, strategy, parse_model_configs(args.model_config))
    if args.gpu_memory is not None:
        device, name = args.gpu_memory * GIB, f"--gpu-memory {args.gpu_memory:g}"
    elif strategy.use_cpu:
        device, name = host_memory(), "this machine's memory"
    else:
        device, name = device_memory()
    return report(plan, device_bytes=device, device_name=name)
