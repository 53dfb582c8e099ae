"""Benchmark ``calrl eval --predictions`` on a large JSONL file against reading the same file with pandas.

Usage: ``python evals/bench_eval_file.py [--n 1000000] [--bootstrap 200] [--seed 0] [--keep DIR]
[--scaling] [--baseline OTHER_CHECKOUT]``

Writes an ``--n``-row predictions file (id, question, a response stating its confidence, reference,
a two-key slice: about 200 bytes a row, like a real eval file) in a temporary folder, then runs, each in
a fresh process so that the peak memory of one does not hide the other's:

* calrl: ``calrl eval --predictions FILE --out DIR`` (load, parse and grade every answer, all metrics
  with ``--bootstrap`` smooth-ECE resamples, per-slice metrics, the report, resolved.jsonl, samples.jsonl);
* pandas: ``pandas.read_json(FILE, lines=True)``, which only parses the file into a table.

Prints, for both, the wall time, the CPU time (user + system of the whole process, imports included: on a
shared machine the CPU time moves less than the wall time) and the peak resident memory, the ratios
calrl / pandas, and checks calrl's targets (``TARGET_CPU_SECONDS``, ``TARGET_PEAK_MB``); exits 1 when one is
missed. ``--scaling`` also runs calrl on 1/100 and 1/10 of the rows (each 3 times, the least CPU time kept) and
prints the CPU time per row at each size and per row added between sizes, with its user and system parts (linear in
rows: the same per added row). ``--baseline`` also runs another checkout's ``calrl eval`` (e.g.
the previous commit's) on the same file, in the same run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

TARGET_CPU_SECONDS = 10.0
TARGET_PEAK_MB = 1024.0
SMALL_REPEATS = 3  # --scaling's smaller sizes: runs of each, the least CPU time kept
DOMAINS = ("medicine", "arithmetic", "law", "history")

# Each child prints {"seconds": wall time, "cpu": user + system time, "peak_mb": its peak RSS} as its last line.
_CALRL = """
import json, resource, sys, time
t = time.perf_counter()
from calrl.cli.main import main
code = main(["eval", "--predictions", sys.argv[1], "--out", sys.argv[2], "--bootstrap", sys.argv[3]])
seconds = time.perf_counter() - t
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"code": code, "seconds": seconds, "cpu": usage.ru_utime + usage.ru_stime,
                  "user": usage.ru_utime, "system": usage.ru_stime, "peak_mb": usage.ru_maxrss / 1024}))
"""
_PANDAS = """
import json, resource, sys, time
t = time.perf_counter()
import pandas
frame = pandas.read_json(sys.argv[1], lines=True)
seconds = time.perf_counter() - t
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"code": 0, "rows": len(frame), "seconds": seconds, "cpu": usage.ru_utime + usage.ru_stime,
                  "peak_mb": usage.ru_maxrss / 1024}))
"""
ROOT = Path(__file__).resolve().parents[1]


def make_file(path: Path, n: int, seed: int) -> int:
    """Write ``n`` predictions: stated confidence k/10, correct with probability (k/10)^1.5; returns bytes."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            k = rng.randint(0, 10)
            right = rng.random() < (k / 10) ** 1.5
            row = {"id": f"item-{i:07d}",
                   "question": f"Which city is the capital of country number {i} on the list?",
                   "response": f"{'Paris' if right else 'Lyon'}. Confidence: {k}",
                   "reference": "Paris",
                   "slice": {"domain": DOMAINS[i % len(DOMAINS)], "difficulty": "hard" if i % 3 else "easy"}}
            f.write(json.dumps(row) + "\n")
    return path.stat().st_size


def run_child(code: str, *args: str, checkout: Path = ROOT) -> dict:
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "PYTHONPATH": str(checkout)}
    proc = subprocess.run([sys.executable, "-c", code, *args], check=False, capture_output=True, text=True,
                          env=env, cwd=checkout)
    if proc.returncode != 0:
        sys.exit(f"child failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["code"] != 0:
        sys.exit(f"calrl eval exit code {result['code']}:\n{proc.stderr[-2000:]}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="rows of the predictions file")
    parser.add_argument("--bootstrap", type=int, default=200, help="calrl eval --bootstrap (its default: 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", default=None, help="write the files and eval outputs here and keep them")
    parser.add_argument("--scaling", action="store_true", help="also run on n/100 and n/10 rows")
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout of calrl, run on the "
                        "same file in the same run")
    args = parser.parse_args(argv)

    sizes = [args.n // 100, args.n // 10, args.n] if args.scaling else [args.n]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.keep) if args.keep else Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        load_before = os.getloadavg()
        for n in sizes:
            preds = root / f"predictions-{n}.jsonl"
            size = make_file(preds, n, args.seed)
            print(f"predictions file: {n} rows, {size / 1e6:.1f} MB ({preds})", flush=True)
            if n == args.n:
                results["pandas"] = run_child(_PANDAS, str(preds))
                if results["pandas"]["rows"] != n:
                    sys.exit(f"pandas read {results['pandas']['rows']} rows of {n}")
            # a smaller size is mostly the imports (1.5-2 s, give or take 0.3 s on a shared machine): run 3 times,
            # keep the least CPU time, so that the per-row cost between sizes is not that noise
            runs = [run_child(_CALRL, str(preds), str(root / f"eval-{n}-{k}"), str(args.bootstrap))
                    for k in range(1 if n == args.n else SMALL_REPEATS)]
            results[f"calrl {n}"] = min(runs, key=lambda r: r["cpu"])
            if args.baseline is not None and n == args.n:
                results["baseline"] = run_child(_CALRL, str(preds), str(root / f"eval-baseline-{n}"),
                                                str(args.bootstrap), checkout=args.baseline.resolve())
        load_after = os.getloadavg()

    # timings on a shared machine depend on what else runs: the load average, on os.cpu_count() cores
    print(f"load average (1/5/15 min) {'/'.join(f'{x:.2f}' for x in load_before)} before, "
          f"{'/'.join(f'{x:.2f}' for x in load_after)} after ({os.cpu_count()} cores)")
    ours, peer = results[f"calrl {args.n}"], results["pandas"]
    labels = {f"calrl {args.n}": f"calrl eval, {args.n} rows", "pandas": "pandas.read_json(lines=True)",
              "baseline": f"baseline calrl eval ({args.baseline})"}
    print(f"{'':52s} {'wall s':>8s} {'CPU s':>8s} {'peak MB':>8s}")
    for key in (f"calrl {args.n}", "pandas", "baseline"):
        if key in results:
            r = results[key]
            print(f"{labels[key][:52]:52s} {r['seconds']:8.1f} {r['cpu']:8.1f} {r['peak_mb']:8.0f}")
    print(f"{'ratio calrl / pandas':52s} {ours['seconds'] / peer['seconds']:8.2f} {ours['cpu'] / peer['cpu']:8.2f} "
          f"{ours['peak_mb'] / peer['peak_mb']:8.2f}")
    if "baseline" in results:
        base = results["baseline"]
        print(f"{'ratio calrl / baseline':52s} {ours['seconds'] / base['seconds']:8.2f} "
              f"{ours['cpu'] / base['cpu']:8.2f} {ours['peak_mb'] / base['peak_mb']:8.2f}")
    if args.scaling:
        per_row = ", ".join(f"{n} rows {results[f'calrl {n}']['cpu'] / n * 1e6:.1f} us" for n in sizes)
        print(f"calrl CPU time per row: {per_row} (imports included: small files pay them over fewer rows)")
        steps = ", ".join(
            f"{a} -> {b} rows {(results[f'calrl {b}']['cpu'] - results[f'calrl {a}']['cpu']) / (b - a) * 1e6:.1f} us"
            for a, b in itertools.pairwise(sizes))
        print(f"calrl CPU time per added row (linear in rows when these agree): {steps}")
        for part in ("user", "system"):  # the system part: mostly the kernel writing the item files
            steps = ", ".join(f"{a} -> {b} rows {(results[f'calrl {b}'][part] - results[f'calrl {a}'][part]) / (b - a) * 1e6:.1f} us"
                              for a, b in itertools.pairwise(sizes))
            print(f"  of which {part} time: {steps}")
    checks = [(f"calrl eval under {TARGET_CPU_SECONDS:g} s of CPU", ours["cpu"] <= TARGET_CPU_SECONDS),
              (f"calrl eval peak under {TARGET_PEAK_MB:g} MB", ours["peak_mb"] <= TARGET_PEAK_MB)]
    for label, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}: {label}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
