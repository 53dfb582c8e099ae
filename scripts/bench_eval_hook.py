"""The per-epoch calibration eval's share of ``train()`` on the tiny PPO-C recipe.

Usage: ``python scripts/bench_eval_hook.py [--config configs/tests/tiny_ppo_c.yaml] [--repeats 3]
[--baseline OTHER_CHECKOUT]``

Runs ``calrl train-ppo --config RECIPE`` (W&B offline, into a temporary folder) in a fresh process per run,
with timers around the trainer's ``train()`` and around every event handler of
:class:`~calrl.callbacks.calibration_eval.CalibrationEvalCallback`: the hook's time is what the training
thread spends in those handlers (generation, and whatever else of the eval a checkout does there). The peer is
``train()`` itself, measured in the same run: the script prints the hook's share of it (target: under 10% of the
wall time), the hook's parts and the load average; the parts that a checkout runs on its background thread
(``calrl.callbacks.eval_output.EvalOutputs``: scoring, files, the W&B row with its wait for the diagram) are
timed where they run and printed beside them. Times are wall times and, beside them, CPU times of the
training thread (which leave out what other processes of a busy machine take, and waits). ``--baseline``
measures another checkout (e.g. the previous commit's) in the same run, interleaved.

The handlers' time alone can flatter work moved off the training thread: a worker thread or process of the
hook's takes the interpreter lock or a CPU core that training would have used. So each checkout is also run
with the eval off (the runner builds no eval callback: no generation, no plot worker; the model, its
vocabulary and the data are the same), interleaved with its eval-on runs, and the script prints the honest
measure beside the handlers' share: (median ``train()`` with the eval - median ``train()`` without) / median
``train()`` with the eval. Both must be under 10% for a PASS. Beside it, the CPU time of all the training
process's threads during ``train()``, with the eval and without: work moved to a thread of the process stays
in it (the plot worker's process is not counted).

Where the runner calls the callback's ``finish`` after ``train()`` (it waits for the last diagrams and logs
their W&B rows while or after the model is saved), that time is not the hook's share of ``train()``; it is
printed beside it ("after train()") and is part of the whole command's time, printed too.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_SHARE = 0.10
HANDLERS = ("on_train_begin", "on_epoch_begin", "on_epoch_end", "on_step_end", "on_log", "on_train_end", "on_save")
# the hook's parts on the training thread (the earlier callbacks scored, saved and logged there too)
PARTS = ("_generate", "_resolve", "_results", "_save", "_log", "_flush")
# the work calrl.callbacks.eval_output.EvalOutputs does off the training thread, timed where it runs
BACKGROUND = ("score", "save", "log")


def _timed(table: dict[str, float], key: str, fn, when=lambda: True, process_cpu: bool = False):
    """``fn`` adding its wall time to ``table[key]`` and its thread's CPU time to ``table[key + "_cpu"]``
    (nested calls of handlers count once; calls that start while ``when()`` is false are not counted);
    ``process_cpu``: also the CPU time of all the process's threads to ``table[key + "_process_cpu"]``."""
    depth = [0]

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        depth[0] += 1
        counted = when()
        start, cpu, all_cpu = time.perf_counter(), time.thread_time(), time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            depth[0] -= 1
            if depth[0] == 0 and counted:
                table[key] += time.perf_counter() - start
                table[key + "_cpu"] += time.thread_time() - cpu
                if process_cpu:
                    table[key + "_process_cpu"] += time.process_time() - all_cpu
    return wrapper


def measure(config: str, *, evals: bool = True) -> dict[str, float]:
    """One run of the recipe in this process: seconds of train(), of the hook, and of the hook's parts
    (``evals=False``: the runner builds no eval callback, and only train() and the command are timed)."""
    from calrl.callbacks.calibration_eval import CalibrationEvalCallback
    from calrl.cli.main import main
    from calrl.runners.ppo import PPORunner
    from calrl.runners.runner import Runner

    if not evals:
        Runner.calibration_callback = lambda self: None

    seconds: dict[str, float] = defaultdict(float)
    training = [False]  # train() is running: the hook's parts are counted then only
    for name in HANDLERS:
        if not hasattr(CalibrationEvalCallback, name):  # a handler an older callback does not define
            continue
        setattr(CalibrationEvalCallback, name, _timed(seconds, "hook", getattr(CalibrationEvalCallback, name)))
    for name in PARTS:
        if not hasattr(CalibrationEvalCallback, name):
            continue
        setattr(CalibrationEvalCallback, name,
                _timed(seconds, name, getattr(CalibrationEvalCallback, name), when=lambda: training[0]))
    try:
        from calrl.callbacks.eval_output import EvalOutputs
    except ImportError:  # a checkout whose callback does everything on the training thread
        EvalOutputs = None
    for name in BACKGROUND if EvalOutputs is not None else ():
        setattr(EvalOutputs, name, _timed(seconds, f"background_{name}", getattr(EvalOutputs, name)))
    if hasattr(CalibrationEvalCallback, "finish"):  # its time outside train() (inside, the hook counts it)
        finish = CalibrationEvalCallback.finish

        def timed_finish(self):
            start = time.perf_counter()
            try:
                return finish(self)
            finally:
                if not training[0]:
                    seconds["after_train"] += time.perf_counter() - start

        CalibrationEvalCallback.finish = timed_finish
    build = PPORunner.build

    def timed_build(self, callbacks):
        trainer = build(self, callbacks)
        train = _timed(seconds, "train", trainer.train, process_cpu=True)

        def flagged_train(*args, **kwargs):
            training[0] = True
            try:
                return train(*args, **kwargs)
            finally:
                training[0] = False

        trainer.train = flagged_train
        return trainer

    PPORunner.build = timed_build
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ["WANDB_DIR"] = tmp
        os.environ.setdefault("WANDB_SILENT", "true")
        start = time.perf_counter()
        code = main(["train-ppo", "--config", config, f"training.output_dir={tmp}/run"])
        seconds["command"] = time.perf_counter() - start
        if code != 0:
            raise SystemExit(f"calrl train-ppo exited {code}")
    return dict(seconds)


def _run_once(root: Path, config: str, *, evals: bool = True) -> dict[str, float]:
    command = [sys.executable, __file__, "--one", "--config", config, *([] if evals else ["--no-eval"])]
    done = subprocess.run(command, cwd=root, check=True, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(root)})
    return json.loads(done.stdout.strip().splitlines()[-1])


def _report_moved(name: str, runs: list[dict[str, float]], off: list[dict[str, float]]) -> float:
    """Print train() with the eval against train() without it; return the honest share of the eval."""
    with_eval = statistics.median(run["train"] for run in runs)
    without = statistics.median(run["train"] for run in off)
    share = (with_eval - without) / with_eval
    cpu_with, cpu_without = (statistics.median(r["train_cpu"] for r in rs) for rs in (runs, off))
    all_with, all_without = (statistics.median(r["train_process_cpu"] for r in rs) for rs in (runs, off))
    print(f"{name}, eval off: train() " + ", ".join(f"{r['train']:.2f}" for r in off) + " s wall; median "
          f"{without:.2f} s against {with_eval:.2f} s with the eval: the eval adds {with_eval - without:.2f} s = "
          f"{share:.1%} of train() with the eval (training thread's CPU: {cpu_without:.2f} s against "
          f"{cpu_with:.2f} s; all threads of the training process: {all_without:.2f} s against {all_with:.2f} s); "
          f"median whole command {statistics.median(r['command'] for r in off):.2f} s")
    return share


def _report(name: str, runs: list[dict[str, float]]) -> float:
    """Print each run of one checkout; return the median share of the wall time."""
    shares, cpu_shares = [], []
    for i, run in enumerate(runs, 1):
        share, cpu_share = run["hook"] / run["train"], run["hook_cpu"] / run["train_cpu"]
        shares.append(share)
        cpu_shares.append(cpu_share)
        parts = ", ".join(f"{part.strip('_')} {run[part]:.2f}" for part in PARTS if part in run)
        background = ", ".join(f"{part} {run[f'background_{part}']:.2f}" for part in BACKGROUND
                               if f"background_{part}" in run)
        if background:
            parts += f"; off the training thread, s wall: {background}"
        print(f"{name} run {i}: train() {run['train']:.2f} s wall ({run['train_cpu']:.2f} s CPU of its thread), "
              f"eval hook {run['hook']:.2f} s wall = {share:.1%} of train() ({run['hook_cpu']:.2f} s CPU = "
              f"{cpu_share:.1%}); hook parts, s wall: {parts}; after train(): finish {run.get('after_train', 0.0):.2f} s; "
              f"whole command {run['command']:.2f} s")
    share, cpu_share = statistics.median(shares), statistics.median(cpu_shares)
    train = statistics.median(run["train"] for run in runs)
    command = statistics.median(run["command"] for run in runs)
    print(f"{name}: median train() {train:.2f} s; median hook share of train(): {share:.1%} of the wall time, "
          f"{cpu_share:.1%} of the training thread's CPU time; median whole command {command:.2f} s")
    return share


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/tests/tiny_ppo_c.yaml", help="recipe, relative to the checkout")
    parser.add_argument("--repeats", type=int, default=3, help="runs per checkout, each in a fresh process")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another checkout of calrl (e.g. the previous commit's) measured in the same run, "
                             "its runs interleaved with this checkout's")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a single run, as JSON
    parser.add_argument("--no-eval", action="store_true", help=argparse.SUPPRESS)  # ... with the eval off
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.config, evals=not args.no_eval)))
        return 0

    roots = {"this checkout": ROOT}
    if args.baseline is not None:
        roots["baseline"] = args.baseline.resolve()
    load_start = os.getloadavg()
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in roots}
    off: dict[str, list[dict[str, float]]] = {name: [] for name in roots}
    for i in range(args.repeats):
        for name, root in roots.items():
            print(f"[round {i + 1}/{args.repeats}] {name}: eval on, eval off", file=sys.stderr, flush=True)
            runs[name].append(_run_once(root, args.config))
            off[name].append(_run_once(root, args.config, evals=False))
    load_end = os.getloadavg()
    print(f"recipe: {args.config}; {os.cpu_count()} CPU cores; load average (1/5/15 min) at start -> end: "
          f"{'/'.join(f'{x:.2f}' for x in load_start)} -> {'/'.join(f'{x:.2f}' for x in load_end)}")
    shares = {name: _report(name, r) for name, r in runs.items()}
    moved = {name: _report_moved(name, runs[name], off[name]) for name in runs}
    if args.baseline is not None:
        ratio = (statistics.median(r["train"] for r in runs["this checkout"])
                 / statistics.median(r["train"] for r in runs["baseline"]))
        print(f"train() time, this checkout / baseline: {ratio:.2f}")
    share, added = shares["this checkout"], moved["this checkout"]
    passed = share < TARGET_SHARE and added < TARGET_SHARE
    print(f"hook share of train() {share:.1%}, train() with the eval against without it {added:.1%}: "
          f"{'PASS' if passed else 'FAIL'} (target: both < {TARGET_SHARE:.0%} of the wall time)")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
