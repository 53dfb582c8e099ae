"""Benchmark ``calrl eval --predictions`` on a large JSONL file against reading the same file with pandas.

Usage: ``python evals/bench_eval_file.py [--n 1000000] [--bootstrap 200] [--seed 0] [--keep DIR]``

Writes an ``--n``-row predictions file (id, question, a response stating its confidence, reference,
a two-key slice: about 200 bytes a row, like a real eval file) in a temporary folder, then runs, each in
a fresh process so that the peak memory of one does not hide the other's:

* calrl: ``calrl eval --predictions FILE --out DIR`` (load, parse and grade every answer, all metrics
  with ``--bootstrap`` smooth-ECE resamples, per-slice metrics, the report and resolved.jsonl);
* pandas: ``pandas.read_json(FILE, lines=True)``, which only parses the file into a table.

Prints wall time and peak resident memory of both and the ratios calrl / pandas, and checks the targets
(``TARGET_SECONDS`` and ``TARGET_PEAK_MB`` for calrl); exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

TARGET_SECONDS = 60.0
TARGET_PEAK_MB = 1024.0
DOMAINS = ("medicine", "arithmetic", "law", "history")

# Each child prints {"seconds": wall time of the work, "peak_mb": its peak RSS} as its last line.
_CALRL = """
import json, resource, sys, time
t = time.perf_counter()
from calrl.cli.main import main
code = main(["eval", "--predictions", sys.argv[1], "--out", sys.argv[2], "--bootstrap", sys.argv[3]])
seconds = time.perf_counter() - t
print(json.dumps({"code": code, "seconds": seconds,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""
_PANDAS = """
import json, resource, sys, time
t = time.perf_counter()
import pandas
frame = pandas.read_json(sys.argv[1], lines=True)
seconds = time.perf_counter() - t
print(json.dumps({"code": 0, "rows": len(frame), "seconds": seconds,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


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


def run_child(code: str, *args: str) -> dict:
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run([sys.executable, "-c", code, *args], check=False, capture_output=True, text=True,
                          env=env)
    if proc.returncode != 0:
        sys.exit(f"child failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="rows of the predictions file")
    parser.add_argument("--bootstrap", type=int, default=200, help="calrl eval --bootstrap (its default: 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", default=None, help="write the file and eval output here and keep them")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.keep) if args.keep else Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        preds = root / "predictions.jsonl"
        size = make_file(preds, args.n, args.seed)
        print(f"predictions file: {args.n} rows, {size / 1e6:.1f} MB ({preds})")
        load_before = os.getloadavg()[0]
        peer = run_child(_PANDAS, str(preds))
        ours = run_child(_CALRL, str(preds), str(root / "eval"), str(args.bootstrap))
        load_after = os.getloadavg()[0]
        if ours["code"] != 0 or peer["rows"] != args.n:
            sys.exit(f"calrl eval exit code {ours['code']}, pandas rows {peer['rows']}")

    # timings on a shared machine depend on what else runs: the 1-minute load average, on os.cpu_count() cores
    print(f"load average {load_before:.2f} before, {load_after:.2f} after ({os.cpu_count()} cores)")
    rows = [("calrl eval (parse, grade, metrics, report)", ours), ("pandas.read_json(lines=True)", peer)]
    print(f"{'':46s} {'seconds':>9s} {'peak MB':>9s}")
    for label, r in rows:
        print(f"{label:46s} {r['seconds']:9.1f} {r['peak_mb']:9.0f}")
    print(f"{'ratio calrl / pandas':46s} {ours['seconds'] / peer['seconds']:9.2f} "
          f"{ours['peak_mb'] / peer['peak_mb']:9.2f}")
    checks = [(f"calrl eval under {TARGET_SECONDS:g} s", ours["seconds"] <= TARGET_SECONDS),
              (f"calrl eval peak under {TARGET_PEAK_MB:g} MB", ours["peak_mb"] <= TARGET_PEAK_MB)]
    for label, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}: {label}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
