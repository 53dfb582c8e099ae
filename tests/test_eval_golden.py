"""``calrl eval`` on a fixed predictions file writes the same resolved.jsonl, samples.jsonl and metrics as
the code before the eval-file speed work (commit ef4935b) did.

``tests/fixtures/eval_golden``: ``predictions.jsonl`` (every 4th item of evals/samples/overconfident_model.jsonl,
30 rows like evals/bench_eval_file.py's, and hand-made rows: curly and split apostrophes, a dotted capital
I, percent and fraction statements, given confidence / correctness / abstention, hedges, several
statements, boxed and multiple-choice answers, sampled answers); the ``expected_*`` files are what
ef4935b wrote for it (metrics.json without its ``versions``, ``source``, ``config`` and ``provenance`` blocks,
which name the machine, the path and the time), with what later commits added and nothing else changed:
lm-evaluation-harness' ``doc_id``, ``resps``, ``filtered_resps`` and ``target`` in samples.jsonl, and the
``stderr`` block of every group in metrics.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from calrl.cli.main import main

GOLDEN = Path(__file__).resolve().parent / "fixtures" / "eval_golden"
RUN_SPECIFIC = ("versions", "source", "config", "provenance")


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("golden") / "eval"
    assert main(["eval", "--predictions", str(GOLDEN / "predictions.jsonl"), "--out", str(folder)]) == 0
    return folder


@pytest.mark.parametrize("name", ["resolved.jsonl", "samples.jsonl"])
def test_item_files_are_byte_identical(out: Path, name: str) -> None:
    assert (out / name).read_bytes() == (GOLDEN / f"expected_{name}").read_bytes()


def test_metrics_are_identical(out: Path) -> None:
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    for key in RUN_SPECIFIC:
        metrics.pop(key, None)
    expected = (GOLDEN / "expected_metrics.json").read_text(encoding="utf-8")
    assert json.dumps(metrics, sort_keys=True) + "\n" == expected
