"""Start-up time of ``calrl --help`` and of every ``calrl COMMAND --help``, against Python's own start-up.

Usage: ``python scripts/bench_startup.py [--repeats 7] [--baseline OTHER_CHECKOUT]``

Each command runs in a fresh ``python -m calrl`` process (this checkout first on ``PYTHONPATH``), next
to two peers measured in the same run and interleaved with them, round after round: ``python -c pass``
(the floor: the interpreter alone) and ``python -c "import torch"`` (what every command paid before the
heavy imports were deferred). Prints the median wall time of ``--repeats`` rounds, the median CPU time
(user + system of the child), both ratios, and PASS/FAIL against the target: every help under 1 s.
Exits 1 if a target is missed. The load average is printed with the results: on a shared machine,
compare the ratios, not the seconds. ``--baseline`` also times ``calrl --help`` of another checkout (e.g. the
previous commit's) in the same rounds.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 1.0


def help_commands() -> list[list[str]]:
    """``[]`` (the top-level help) and every command and sub-action of the ``calrl`` parser."""
    sys.path.insert(0, str(ROOT))
    from calrl.cli.main import build_parser

    found: list[list[str]] = [[]]

    def walk(parser: argparse.ArgumentParser, prefix: list[str]) -> None:
        for action in parser._actions:  # argparse exposes sub-parsers only through this attribute
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found.append([*prefix, name])
                    walk(sub, [*prefix, name])

    walk(build_parser(), [])
    return found


def timed_run(cmd: list[str], env: dict[str, str], cwd: Path = ROOT) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one child process, run in this checkout (``-m`` puts the
    working folder first on the path); fails loudly on a non-zero exit."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, check=False, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="rounds; each round runs every command once")
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout, its calrl --help timed too")
    args = parser.parse_args(argv)

    def env_for(root: Path) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]).rstrip(
            os.pathsep)}

    py = sys.executable
    peers = {"python -c pass": [py, "-c", "pass"], "python -c 'import torch'": [py, "-c", "import torch"]}
    helps = {" ".join(["calrl", *c, "--help"]): [py, "-m", "calrl", *c, "--help"] for c in help_commands()}
    runs = {name: (cmd, ROOT) for name, cmd in {**peers, **helps}.items()}
    if args.baseline is not None:
        runs["baseline: calrl --help"] = ([py, "-m", "calrl", "--help"], args.baseline.resolve())
    for cmd, root in runs.values():  # warm the file cache and the bytecode of every module once
        timed_run(cmd, env_for(root), root)
    load_start = os.getloadavg()
    walls: dict[str, list[float]] = {name: [] for name in runs}
    cpus: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, (cmd, root) in runs.items():
            wall, cpu = timed_run(cmd, env_for(root), root)
            walls[name].append(wall)
            cpus[name].append(cpu)
    load_end = os.getloadavg()

    wall = {name: statistics.median(v) for name, v in walls.items()}
    cpu = {name: statistics.median(v) for name, v in cpus.items()}
    floor, torch_s = wall["python -c pass"], wall["python -c 'import torch'"]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}; "
          f"load average (1/5/15 min) at start -> end: {'/'.join(f'{x:.2f}' for x in load_start)} -> "
          f"{'/'.join(f'{x:.2f}' for x in load_end)}; median of {args.repeats} interleaved rounds")
    width = max(len(name) for name in runs)
    print(f"{'command':<{width}}  {'wall s':>7}  {'CPU s':>6}  {'x pass':>7}  {'x torch':>7}  target")
    failed = 0
    for name in runs:
        verdict = ""
        if name in helps:
            ok = wall[name] < TARGET_S
            failed += not ok
            verdict = f"{'PASS' if ok else 'FAIL'} (< {TARGET_S:g} s)"
        print(f"{name:<{width}}  {wall[name]:7.3f}  {cpu[name]:6.3f}  {wall[name] / floor:7.2f}  "
              f"{wall[name] / torch_s:7.3f}  {verdict}")
    print(f"{len(helps) - failed} of {len(helps)} help commands under {TARGET_S:g} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
