"""evals/bench_metrics.py runs, prints the comparison table, and our values agree with the peers'."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "evals" / "bench_metrics.py"


def test_bench_metrics_small_run(capsys):
    spec = importlib.util.spec_from_file_location("bench_metrics", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    code = module.main(["--n", "20000", "--repeats", "1"])
    out = capsys.readouterr().out
    for row in ("ECE", "Brier", "AUROC", "MCE", "ECE-em", "AURC", "total of", "smooth ECE"):
        assert row in out
    verdicts = [line for line in out.splitlines() if line.startswith(("PASS", "FAIL"))]
    assert len(verdicts) == 5  # three ratios, the 1 s budget, value agreement
    assert "PASS  values agree with the peers" in out
    assert code == (0 if all(v.startswith("PASS") for v in verdicts) else 1)
