"""The runs of ``tests/test_cli_golden.py``; as a script, writes their inputs and, with ``--expected``, their
expected outputs into ``tests/fixtures/cli_golden``.

The expected files were written once by the code before the gate and recalibration were moved out of
the CLI modules (commit b919985) and are what later code must reproduce; never regenerate them to make
the test pass. The reliability PNGs are not kept (binary, 80 kB each) and the HTML reports keep a
placeholder for the base64 PNG they embed (:func:`strip_png`). Run from the repository root:
``python tests/cli_golden.py [--expected]``.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent / "fixtures" / "cli_golden"
INPUTS = ("baseline.jsonl", "candidate.jsonl")
# (name of the expected folder, calrl arguments); run in a folder holding the inputs, paths relative
RUNS = (
    ("compare", ["compare", "--baseline", "baseline.jsonl", "--candidate", "candidate.jsonl", "--out", "out",
                 "--bootstrap", "200", "--min-slice-size", "25"]),
    ("compare_reversed", ["compare", "--baseline", "candidate.jsonl", "--candidate", "baseline.jsonl",
                          "--out", "out", "--bootstrap", "100", "--bins", "10", "--seed", "3",
                          "--missing-confidence", "half"]),
    ("fit_holdout", ["recalibrate", "fit", "--predictions", "baseline.jsonl", "--method", "temperature",
                     "--out", "out/calibrator.json"]),
    ("fit_eval_file", ["recalibrate", "fit", "--predictions", "baseline.jsonl", "--method", "isotonic",
                       "--eval-predictions", "candidate.jsonl", "--bins", "10", "--out", "out/iso.json"]),
)
APPLY = ["recalibrate", "apply", "--calibrator", "out/calibrator.json", "--predictions", "candidate.jsonl",
         "--out", "out/candidate.recal.jsonl"]


def rows(seed: int) -> tuple[list[dict], list[dict]]:
    """220 baseline items (domains a, b of 100 and c of 20; two difficulties), roughly calibrated, no
    refusal; the candidate drops 6 ids, adds 4, is overconfident on b and c, refuses 25 items, answers 5
    without a confidence and gets 20 more items wrong."""
    rng = random.Random(seed)
    base, cand = [], []
    for i in range(220):
        domain = "a" if i < 100 else "b" if i < 200 else "c"
        sl = {"domain": domain, "difficulty": "hard" if i % 3 == 0 else "easy"}
        conf = rng.choice([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
        correct = rng.random() < conf
        base.append({"id": f"q{i:03d}", "slice": sl, "response": f"answer {i}", "correct": correct,
                     "confidence": conf})
        if i >= 214:
            continue
        row = {"id": f"q{i:03d}", "slice": sl, "response": f"answer {i}"}
        if i % 9 == 4:
            row.update(response="I don't know.", abstained=True)
        elif i % 41 == 7:
            row.update(correct=correct)
        else:
            row.update(correct=correct and i % 11 != 1, confidence=0.95 if domain != "a" else conf)
        cand.append(row)
    for j in range(4):
        cand.append({"id": f"new{j}", "slice": {"domain": "a", "difficulty": "easy"}, "response": "x",
                     "correct": True, "confidence": 0.7})
    return base, cand


PNG_PAYLOAD = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=]+")


def strip_png(html: str) -> str:
    """The HTML with its embedded PNG replaced by a placeholder."""
    return PNG_PAYLOAD.sub("data:image/png;base64,PNG", html)


def write_inputs(folder: Path) -> None:
    for name, side in zip(INPUTS, rows(0), strict=True):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in side), encoding="utf-8")


def run_all(main, work: Path) -> dict[str, Path]:
    """Every run of RUNS (and the apply after ``fit_holdout``) in a fresh copy of the inputs under ``work``;
    name -> the output folder."""
    outs = {}
    for name, argv in RUNS:
        folder = work / name
        folder.mkdir()
        for item in INPUTS:
            shutil.copy(HERE / item, folder / item)
        here = os.getcwd()
        os.chdir(folder)
        try:
            code = main(argv)
            if name == "fit_holdout":
                assert main(APPLY) == 0
        finally:
            os.chdir(here)
        assert code == (1 if name.startswith("compare") else 0), (name, code)
        outs[name] = folder / "out"
    return outs


if __name__ == "__main__":
    write_inputs(HERE)
    if "--expected" in sys.argv:
        from calrl.cli.main import main

        with tempfile.TemporaryDirectory() as tmp:
            for name, out in run_all(main, Path(tmp)).items():
                dest = HERE / "expected" / name
                shutil.rmtree(dest, ignore_errors=True)
                dest.mkdir(parents=True)
                for item in sorted(out.iterdir()):
                    if item.suffix == ".html":
                        (dest / item.name).write_text(strip_png(item.read_text(encoding="utf-8")), encoding="utf-8")
                    elif item.suffix != ".png":
                        shutil.copy(item, dest / item.name)
