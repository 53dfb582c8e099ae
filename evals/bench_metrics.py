"""Benchmark calrl.metrics on 10^6 items against torchmetrics and scikit-learn, on one CPU thread.

Usage: ``python evals/bench_metrics.py [--n 1000000] [--repeats 5] [--seed 0] [--device cpu]``

Times (best of ``--repeats`` runs, same data, same process) ECE / Brier / AUROC against torchmetrics'
``binary_calibration_error`` (functional), scikit-learn's ``brier_score_loss`` and ``roc_auc_score``,
prints a table of times (CPU time of this one-thread process, and wall time) and CPU-time ratios
(ours / theirs) and the total time of all our metrics (ECE, MCE,
equal-mass ECE, Brier, AUROC, AURC); smooth ECE is timed separately. Targets: every ratio <= 1 and the
total under 1 s. Prints PASS/FAIL per target and exits 1 if any target is missed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
from sklearn.metrics import brier_score_loss, roc_auc_score
from torchmetrics.functional.classification import binary_calibration_error

from calrl.metrics import (
    aurc,
    binary_auroc,
    brier_score,
    equal_mass_ece,
    expected_calibration_error,
    max_calibration_error,
    smooth_ece,
)

TOTAL_BUDGET_S = 1.0


def best_time(fn: Callable[[], object], repeats: int, device: torch.device) -> tuple[float, float, object]:
    """Smallest CPU time and smallest wall time of ``repeats`` calls (after one warm-up call), and the
    last result. CPU time (of this single-threaded process) is what one core spends, and does not count
    time the core was lent to other processes on a shared machine; on an idle machine both agree."""
    result = fn()
    cpu_times, wall_times = [], []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        cpu_times.append(time.process_time() - cpu_start)
        wall_times.append(time.perf_counter() - wall_start)
    return min(cpu_times), min(wall_times), result


def make_data(n: int, seed: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Continuous confidences (no value on a bin edge to within float precision is special) with a
    miscalibrated outcome: P(correct | q) = q^1.5."""
    gen = torch.Generator().manual_seed(seed)
    confidence = torch.rand(n, generator=gen)
    correct = torch.rand(n, generator=gen) < confidence.pow(1.5)
    return confidence.to(device), correct.to(device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    device = torch.device(args.device)
    confidence, correct = make_data(args.n, args.seed, device)
    conf_np, correct_np = confidence.cpu().numpy(), correct.cpu().numpy()
    r = args.repeats

    timed = {
        "ECE": lambda: expected_calibration_error(confidence, correct, 15),
        "MCE": lambda: max_calibration_error(confidence, correct, 15),
        "ECE-em": lambda: equal_mass_ece(confidence, correct, 15),
        "Brier": lambda: brier_score(confidence, correct),
        "AUROC": lambda: binary_auroc(confidence, correct),
        "AURC": lambda: aurc(confidence, correct),
        "tm ECE": lambda: binary_calibration_error(confidence, correct, n_bins=15),
        "sk Brier": lambda: brier_score_loss(correct_np, conf_np),
        "sk AUROC": lambda: roc_auc_score(correct_np, conf_np),
    }
    cpu, wall, value = {}, {}, {}
    load_start = os.getloadavg()
    for name, fn in timed.items():
        cpu[name], wall[name], value[name] = best_time(fn, r, device)
    smece_cpu, smece_wall, smece_value = best_time(lambda: smooth_ece(confidence, correct), max(1, r // 2), device)
    load_end = os.getloadavg()

    print(f"calrl.metrics benchmark: n = {args.n:,}, device = {device}, torch threads = "
          f"{torch.get_num_threads()}, best of {r}; times in ms, CPU time (wall time)")
    print(f"load average (1/5/15 min) at start -> end: {'/'.join(f'{x:.2f}' for x in load_start)} -> "
          f"{'/'.join(f'{x:.2f}' for x in load_end)} ({os.cpu_count()} CPU cores)")
    print(f"{'metric':<8} {'ours':>16} {'peer':<38} {'peer time':>16} {'ratio':>6}  {'ours value':>11} "
          f"{'peer value':>11}")
    pairs = [("ECE", "tm ECE", "torchmetrics binary_calibration_error"),
             ("Brier", "sk Brier", "sklearn brier_score_loss"),
             ("AUROC", "sk AUROC", "sklearn roc_auc_score")]
    verdicts = []
    for ours, theirs, peer in pairs:
        ratio = cpu[ours] / cpu[theirs]
        print(f"{ours:<8} {cpu[ours] * 1e3:7.1f} ({wall[ours] * 1e3:6.1f}) {peer:<38} "
              f"{cpu[theirs] * 1e3:7.1f} ({wall[theirs] * 1e3:6.1f}) {ratio:6.3f}  {float(value[ours]):11.8f} "
              f"{float(value[theirs]):11.8f}")
        verdicts.append((f"{ours} not slower than {peer.split()[0]} (CPU-time ratio {ratio:.3f} <= 1)", ratio <= 1.0))
    for name in ("MCE", "ECE-em", "AURC"):
        print(f"{name:<8} {cpu[name] * 1e3:7.1f} ({wall[name] * 1e3:6.1f})")
    ours_all = ("ECE", "MCE", "ECE-em", "Brier", "AUROC", "AURC")
    total = sum(cpu[name] for name in ours_all)
    total_wall = sum(wall[name] for name in ours_all)
    print(f"total of ECE, MCE, equal-mass ECE, Brier, AUROC, AURC: {total * 1e3:.1f} ms CPU "
          f"({total_wall * 1e3:.1f} ms wall)")
    print(f"smooth ECE (separate, not in the total): {smece_cpu * 1e3:.1f} ms CPU ({smece_wall * 1e3:.1f} ms wall), "
          f"value {float(smece_value):.6f}")
    verdicts.append((f"all metrics under {TOTAL_BUDGET_S:.0f} s on one thread ({total:.3f} s CPU)",
                     total < TOTAL_BUDGET_S))
    agree = (abs(float(value["ECE"]) - float(value["tm ECE"])) < 1e-5
             and abs(float(value["Brier"]) - float(value["sk Brier"])) < 1e-6
             and abs(float(value["AUROC"]) - float(value["sk AUROC"])) < 1e-6)
    verdicts.append(("values agree with the peers", agree))
    for text, ok in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    if not all(ok for _, ok in verdicts):
        print("benchmark: at least one target missed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
