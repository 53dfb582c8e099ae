"""Compare ``calrl eval --predictions`` outputs of two checkouts byte for byte, on varied generated files.

Usage: ``python evals/compare_eval_outputs.py --baseline OTHER_CHECKOUT [--sizes 10000,100000] [--keep DIR]``

Writes, for each size, a seeded predictions file that mixes what the readers and resolvers must handle:
stated confidences on several scales, hedges, abstentions ("I don't know"), answers without any
confidence, given confidences / correctness / abstentions, references as strings, lists and numbers,
multiple-choice items with ``choices``, slices as strings and as objects (keys in varying order),
sampled answers, integer ids, non-ASCII text, quotes and backslashes; half the responses repeat from a
small pool and half are unique. Then runs ``calrl eval --predictions FILE --out DIR`` once with this
checkout and once with ``--baseline`` (each in its own process and folder) and compares every output file
(metrics.json, resolved.jsonl, samples.jsonl, report.md, report.html, reliability.png). Exits 1 on any
difference, naming the file and the first differing line. Values that differ between any two runs are masked
before comparing: the git commit of each checkout (``versions.git_hash`` in metrics.json and the reports),
and the date and duration of the run (``provenance.date``, ``provenance.duration_s``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# values that differ between any two runs: the checkout's commit (versions.git_hash), and when the run started
# and how long it took (provenance.date, provenance.duration_s in metrics.json)
RUN_VALUES = [(re.compile(rb"[0-9a-f]{40}(\+dirty)?"), b"<git hash>"),
              (re.compile(rb'"date": "[^"]*"'), b'"date": <date>'),
              (re.compile(rb'"duration_s": [-+.0-9eE]+'), b'"duration_s": <duration>')]
POOL = [
    "Paris. Confidence: 8", "Lyon. Confidence: 3", "Paris", "I think it's Paris.", "Probably Lyon, 70% sure.",
    "I don't know.", "I cannot answer that.", "42. Confidence: 9/10", "forty-two, I'm 90% confident",
    "B) Marseille. Confidence: 0.6", "Zürich — almost certainly", "The answer is \"Paris\" \\ confidence 0.4",
    "Could you clarify which country?", "7\nConfidence: 10", "maybe 1,234? I'm not sure",
]
REFERENCES = ["Paris", ["Paris", "paris, France"], "42", ["1234", "1,234"], "B", "Zürich"]
DOMAINS = ["medicine", "law", "history", "arithmetic"]


def make_row(i: int, rng: random.Random) -> dict:
    row: dict = {"id": i if i % 17 == 0 else f"item-{i}"}
    if rng.random() < 0.5:
        row["response"] = rng.choice(POOL)
    else:
        k = rng.randint(0, 10)
        row["response"] = rng.choice([f"Paris {i}. Confidence: {k}", f"Lyon {i}", f"I guess {i}, maybe {k}0%",
                                      f"Answer: {i % 97}\nConfidence: {k}"])
    row["reference"] = rng.choice(REFERENCES)
    if row["reference"] == "B":
        row["choices"] = ["Paris", "Marseille", "Lyon"]
    if rng.random() < 0.1:
        row["confidence"] = rng.choice([None, 0.0, 0.35, 1, 0.999])
    if rng.random() < 0.05:
        row["correct"] = rng.random() < 0.5
    if rng.random() < 0.03 and not row.get("correct"):
        row["abstained"] = True
    if rng.random() < 0.6:
        row["question"] = f"Question {i}: where?"
    shape = rng.random()
    if shape < 0.3:
        row["slice"] = rng.choice(DOMAINS)
    elif shape < 0.8:
        domain, hard = rng.choice(DOMAINS), rng.choice(["hard", "easy"])
        row["slice"] = {"domain": domain, "difficulty": hard} if i % 2 else {"difficulty": hard, "domain": domain}
    if rng.random() < 0.1:
        row["samples"] = [rng.choice(["Paris", "Lyon", "42", "I don't know"]) for _ in range(rng.randint(1, 4))]
    return row


def make_file(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(make_row(i, rng), ensure_ascii=rng.random() < 0.5) + "\n" for i in range(n))


def run_eval(checkout: Path, predictions: Path, out: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(checkout), "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "calrl", "eval", "--predictions", str(predictions), "--out",
                           str(out), "--overwrite"], cwd=checkout, env=env, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        sys.exit(f"calrl eval in {checkout} exited {done.returncode}: {done.stderr.strip()[-1000:]}")


def _content(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".png":
        return data
    for pattern, mask in RUN_VALUES:
        data = pattern.sub(mask, data)
    return data


def first_difference(a: bytes, b: bytes) -> str:
    for number, (la, lb) in enumerate(zip(a.splitlines(), b.splitlines()), start=1):
        if la != lb:
            return f"line {number}: {la[:200]!r} != {lb[:200]!r}"
    return "one file is longer"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="the other checkout of calrl")
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated row counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="keep the files and outputs here")
    args = parser.parse_args(argv)

    differences = 0
    with tempfile.TemporaryDirectory() as scratch:
        root = args.keep or Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        for n in (int(s) for s in args.sizes.split(",")):
            predictions = root / f"varied-{n}.jsonl"
            make_file(predictions, n, args.seed)
            outs = {name: root / f"out-{name}-{n}" for name in ("this", "baseline")}
            run_eval(ROOT, predictions, outs["this"])
            run_eval(args.baseline.resolve(), predictions, outs["baseline"])
            names = sorted({p.name for p in outs["this"].iterdir()} | {p.name for p in outs["baseline"].iterdir()})
            for name in names:
                a, b = outs["this"] / name, outs["baseline"] / name
                if not (a.is_file() and b.is_file()):
                    differences += 1
                    print(f"{n:>9} rows  {name:20s} DIFFERENT: missing on one side")
                    continue
                ca, cb = _content(a), _content(b)
                if ca == cb:
                    print(f"{n:>9} rows  {name:20s} identical ({len(ca)} bytes)")
                else:
                    differences += 1
                    print(f"{n:>9} rows  {name:20s} DIFFERENT: {first_difference(ca, cb)}")
    print("all outputs identical" if not differences else f"{differences} output files differ")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
