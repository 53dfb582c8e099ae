"""``calrl compare`` as a library call: read both sides, run the gate, write gate.json, the overlay and the report.

:func:`run_compare` checks the inputs and the output folder before any work (one-line InputErrors naming the
path), then :func:`compare` reads and gates, and :func:`write_outputs` moves all four files into the
folder together (nothing appears when one of them fails).
"""

from __future__ import annotations

from pathlib import Path

from calrl.data.records import ResolvedRecord
from calrl.errors import InputError
from calrl.eval.plots import render_reliability
from calrl.eval.runner import compute_results
from calrl.eval.schema import EvalResults
from calrl.gate.config import GateConfig
from calrl.gate.gate import evaluate_gate, match_records
from calrl.gate.inputs import load_side
from calrl.gate.report import render_html, render_markdown
from calrl.gate.results import CompareResult, SideMetrics, Sources
from calrl.grading import DEFAULT_GRADER
from calrl.io import check_input, check_output, staged_dir, write_bytes, write_text
from calrl.jsonio import write_json

GATE_NAME = "gate.json"
OVERLAY_NAME = "reliability_overlay.png"
OUTPUT_NAMES = (GATE_NAME, OVERLAY_NAME, "report.md", "report.html")


def run_compare(
    baseline: str | Path,
    candidate: str | Path,
    out: str | Path,
    config: GateConfig | None = None,
    *,
    overwrite: bool = False,
    use_hedges: bool = True,
    grader: str = DEFAULT_GRADER,
) -> CompareResult:
    """Gate ``candidate`` against ``baseline`` (eval output folders or predictions files) and write the
    results into the folder ``out`` (refused when it holds earlier results, unless ``overwrite``)."""
    config = config or GateConfig()
    sides = [check_input(baseline, option="--baseline", allow_dir=True),
             check_input(candidate, option="--candidate", allow_dir=True)]
    out_dir = check_output(out, option="--out", kind="dir", inputs=sides, outputs=OUTPUT_NAMES, overwrite=overwrite)
    result = compare(sides[0], sides[1], config, use_hedges=use_hedges, grader=grader)
    write_outputs(result, out_dir)
    return result


def compare(
    baseline: str | Path,
    candidate: str | Path,
    config: GateConfig,
    *,
    use_hedges: bool = True,
    grader: str = DEFAULT_GRADER,
) -> CompareResult:
    """Read both sides (:func:`calrl.gate.inputs.load_side`) and gate them; nothing is written."""
    base_recs, base_src = load_side(baseline, use_hedges=use_hedges, grader=grader)
    cand_recs, cand_src = load_side(candidate, use_hedges=use_hedges, grader=grader)
    try:
        gate = evaluate_gate(base_recs, cand_recs, config)
    except InputError as exc:  # matching and policy errors name the field; add the two files
        if exc.path is not None:
            raise
        raise InputError(f"{exc} (baseline {base_src}, candidate {cand_src})") from None
    base_matched, cand_matched, _ = match_records(base_recs, cand_recs)
    return CompareResult(gate=gate, sources=Sources(baseline=base_src, candidate=cand_src),
                         metrics=side_metrics(base_matched, cand_matched, config))


def side_metrics(baseline: list[ResolvedRecord], candidate: list[ResolvedRecord], config: GateConfig) -> SideMetrics:
    """The typed results of each side on the matched items (no bootstrap)."""

    def results(records: list[ResolvedRecord]) -> EvalResults:
        return compute_results(records, n_bins=config.n_bins, missing_policy=config.missing_policy,
                               min_slice_size=config.min_slice_size, n_boot=0, seed=config.seed)

    return SideMetrics(baseline=results(baseline), candidate=results(candidate))


def write_outputs(result: CompareResult, out_dir: str | Path) -> None:
    """gate.json, the overlay PNG and report.md/.html, all moved into ``out_dir`` together."""
    png = render_reliability(
        [result.metrics.baseline, result.metrics.candidate],
        labels=["baseline", "candidate"],
        title=f"Release gate: {result.gate.verdict} (matched items)",
    )
    with staged_dir(out_dir) as tmp:
        write_json(tmp / GATE_NAME, result.to_dict())
        write_bytes(tmp / OVERLAY_NAME, png)
        write_text(tmp / "report.md", render_markdown(result.gate, OVERLAY_NAME, result.sources))
        write_text(tmp / "report.html", render_html(result.gate, png, result.sources))
