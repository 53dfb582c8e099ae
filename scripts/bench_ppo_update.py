"""Part ``update`` of scripts/bench_ppo.py: calrl's PPO update against trl 1.12's, interleaved runs, and its report.

Each run is one fresh process (``bench_ppo.py --worker SIDE``): calrl's in this interpreter, trl's in
``scripts/ppo_parity/.venv``. The sides of one round, in order: ``calrl``; ``calrl-compile`` (``--torch-compile``:
calrl with ``torch_compile: true``); ``calrl-baseline`` (``--baseline``); ``trl-nogc`` (``--trl-without-gc``: trl with
its two ``gc.collect()`` calls per update made no-ops); the compiled trl peer (``--torch-compile``: ``trl-nogc-compile``
with ``--trl-without-gc``, else ``trl-compile``: trl 1.12 with ``torch_compile=True``); ``trl``.

A run's warm-up updates are untimed; what they took beyond as many timed updates is the run's warm-up overhead,
reported apart (for a compiled side: the compile time, ``torch.compile`` being lazy).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_ppo_timers import PHASES

HERE = Path(__file__).resolve().parent
RESULT_PREFIX = "BENCH_PPO_RESULT "
#: the sides whose phases are timed (calrl's)
CALRL_SIDES = ("calrl", "calrl-compile", "calrl-baseline")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def run_worker(python: str, side: str, args, device: str, repo: Path, pythonpath: str | None = None) -> dict:
    """One timed run of ``side`` in a fresh process; its result dict."""
    worker = "calrl" if side == "calrl-baseline" else side
    cmd = [python, str(HERE / "bench_ppo.py"), "--worker", worker, "--warmup", str(args.warmup), "--steps",
           str(args.steps), "--device", device, "--setup", args.setup]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled"}
    if pythonpath is not None:  # --baseline: calrl imported from another checkout
        env["PYTHONPATH"] = pythonpath
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, cwd=str(repo))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"{side} worker failed (exit {proc.returncode}): " + " | ".join(tail))
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def update_sides(args, with_trl: bool) -> list[str]:
    """The sides of one round, in the order they run (module docstring)."""
    sides = ["calrl"] + (["calrl-compile"] if args.torch_compile else []) + (
        ["calrl-baseline"] if args.baseline else [])
    if with_trl and args.trl_without_gc:  # next to calrl's runs: the per-round ratio compares neighbours
        sides.append("trl-nogc")
    if with_trl and args.torch_compile:
        sides.append("trl-nogc-compile" if args.trl_without_gc else "trl-compile")
    return sides + (["trl"] if with_trl else [])


def part_update(args, device: str, with_trl: bool, trl_python: Path, repo: Path) -> dict:
    sides = update_sides(args, with_trl)
    pooled = {s: {"wall": [], "cpu": []} for s in sides}
    rounds = {s: {"wall": [], "cpu": [], "warmup_overhead": [], "first_update": [], "slowest_timed": []}
              for s in sides}
    phases: dict[str, list[dict]] = {s: [] for s in sides if s in CALRL_SIDES}
    meta: dict[str, dict] = {}
    loads = [os.getloadavg()[0]]
    for r in range(args.rounds):
        for side in sides:  # interleaved: calrl, (calrl-compile), trl, calrl, ...
            t0 = time.perf_counter()
            python = str(trl_python) if side.startswith("trl") else sys.executable
            res = run_worker(python, side, args, "cpu" if side.startswith("trl") else device, repo,
                             args.baseline if side == "calrl-baseline" else None)
            loads.append(os.getloadavg()[0])
            warm, wall, cpu = res["wall"][:args.warmup], res["wall"][args.warmup:], res["cpu"][args.warmup:]
            if len(wall) != args.steps:
                raise RuntimeError(f"{side}: {len(wall)} timed updates, expected {args.steps}")
            pooled[side]["wall"] += wall
            pooled[side]["cpu"] += cpu
            for key, value in (("wall", median(wall)), ("cpu", median(cpu)), ("slowest_timed", max(wall)),
                               ("warmup_overhead", sum(warm) - len(warm) * median(wall)),
                               ("first_update", warm[0] if warm else float("nan"))):
                rounds[side][key].append(value)
            if side in phases:
                phases[side] += res["phases"][args.warmup:]
            meta[side] = {k: res[k] for k in ("impl", "device", "threads", "torch")}
            log(f"[update] round {r + 1}/{args.rounds} {side:16s} median {median(wall) * 1e3:7.1f} ms/update "
                f"(cpu {median(cpu) * 1e3:7.1f} ms), warm-up overhead {rounds[side]['warmup_overhead'][-1]:.1f} s, "
                f"{time.perf_counter() - t0:.1f} s with start-up")
    out = {"rounds": args.rounds, "warmup": args.warmup, "steps": args.steps, "sides": {}, "setup": args.setup,
           "load_average_1min": {"min": min(loads), "max": max(loads)}, "per_round": rounds,
           "phases_median_s": {side: {kind: {p: median([u[kind][p] for u in per]) for p in PHASES}
                                      for kind in ("wall", "cpu")} for side, per in phases.items()}}
    if args.baseline:
        out["baseline"] = args.baseline
    for side in sides:
        out["sides"][side] = {**meta[side], "median_update_s": median(pooled[side]["wall"]),
                              "median_update_cpu_s": median(pooled[side]["cpu"]),
                              "min_update_s": min(pooled[side]["wall"]), "updates": len(pooled[side]["wall"]),
                              "warmup_overhead_s": median(rounds[side]["warmup_overhead"]),
                              "slowest_timed_update_s": max(rounds[side]["slowest_timed"])}
    out["ratios"] = {f"{a}/{b}": _ratio(out, a, b) for a, b in _RATIO_PAIRS if a in sides and b in sides}
    return out


#: (numerator, denominator) sides of the printed ratios
_RATIO_PAIRS = (("calrl", "trl"), ("calrl", "trl-nogc"), ("calrl", "calrl-baseline"),
                ("calrl-compile", "trl-nogc"), ("calrl-compile", "trl"), ("calrl-compile", "calrl"),
                ("calrl-compile", "trl-nogc-compile"), ("calrl-compile", "trl-compile"))


def _ratio(out: dict, a: str, b: str) -> dict:
    sa, sb, per = out["sides"][a], out["sides"][b], out["per_round"]
    return {"wall": sa["median_update_s"] / sb["median_update_s"],
            "cpu": sa["median_update_cpu_s"] / sb["median_update_cpu_s"],
            "min": sa["min_update_s"] / sb["min_update_s"],
            # each round's median over the neighbouring run's of the same round
            "wall_per_round": [x / y for x, y in zip(per[a]["wall"], per[b]["wall"])],
            "cpu_per_round": [x / y for x, y in zip(per[a]["cpu"], per[b]["cpu"])]}


# ------------------------------------------------------------------------------------------- report
def _print_phases(label: str, phases: dict[str, dict[str, float]]) -> None:
    for kind, ph in phases.items():
        total = sum(ph.values())
        print(f"{label}_phases_{kind} (median s per update, share of their sum): " + ", ".join(
            f"{name} {sec:.4f} ({sec / total:.0%})" for name, sec in ph.items()))


_LABELS = {"calrl": "calrl", "calrl-compile": "calrl_torch_compile", "calrl-baseline": "baseline",
           "trl": "trl", "trl-nogc": "trl_without_gc", "trl-compile": "trl_torch_compile",
           "trl-nogc-compile": "trl_without_gc_torch_compile"}
_TARGETS = {("calrl", "trl"): ("target <= 1", 1.0), ("calrl", "trl-nogc"): ("issue 21's target <= 0.5", 0.5),
            ("calrl-compile", "trl-nogc"): ("issue 21's target <= 0.5", 0.5)}


def _print_side(side: str, s: dict, per_round: dict, warmup: int) -> None:
    print(f"{_LABELS[side]}_update_median_s: {s['median_update_s']:.4f} (cpu {s['median_update_cpu_s']:.4f}, "
          f"min {s['min_update_s']:.4f}, n={s['updates']}, {s['impl']} on {s['device']})")
    overheads = per_round["warmup_overhead"]
    print(f"{_LABELS[side]}_warmup_overhead_s: {s['warmup_overhead_s']:.1f} median over rounds "
          f"({min(overheads):.1f}-{max(overheads):.1f}; the {warmup} untimed updates minus as many timed ones"
          + ("; torch.compile's compile time" if side.endswith("compile") else "") + "); first update "
          + ", ".join(f"{x:.1f}" for x in per_round["first_update"]) + " s")
    if s["slowest_timed_update_s"] > 5 * s["median_update_s"]:
        print(f"{_LABELS[side]}: a timed update took {s['slowest_timed_update_s']:.2f} s (a late compile or a "
              "stall): raise --warmup")


def report_update(upd: dict, describe: str) -> None:
    print(f"update setup {upd['setup']}: tiny_setup.build_all({upd['setup']!r}) ({describe}); "
          f"warm-up {upd['warmup']}, timed {upd['steps']} x {upd['rounds']} rounds, fresh process per run"
          + (", calrl/trl interleaved" if "trl" in upd["sides"] else ""))
    load = upd["load_average_1min"]
    print(f"load_average_1min: {load['min']:.2f}-{load['max']:.2f} (before the first run and after each)")
    for side, s in upd["sides"].items():
        _print_side(side, s, upd["per_round"][side], upd["warmup"])
        if side in upd["phases_median_s"]:
            _print_phases(_LABELS[side], upd["phases_median_s"][side])
    if "trl-nogc" in upd["sides"]:
        print("trl_without_gc: diagnostic, trl's two gc.collect() calls per update made no-ops")
    for pair, r in upd["ratios"].items():
        a, b = pair.split("/")
        target = _TARGETS.get((a, b))
        verdict = "" if target is None else " (" + ", ".join(
            f"{kind} {'PASS' if r[kind] <= target[1] else 'FAIL'}" for kind in ("wall", "cpu")) + f": {target[0]})"
        print(f"ratio_{_LABELS[a]}_over_{_LABELS[b]}: {r['wall']:.3f} wall median, {r['cpu']:.3f} cpu median, "
              f"{r['min']:.3f} min{verdict}; per round (neighbouring runs): wall "
              + ", ".join(f"{x:.3f}" for x in r["wall_per_round"]) + "; cpu "
              + ", ".join(f"{x:.3f}" for x in r["cpu_per_round"]))
    if "trl" not in upd["sides"]:
        print(f"ratio_calrl_over_trl: skipped ({upd.get('trl_skipped', 'no trl side')})")
