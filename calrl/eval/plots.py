"""Reliability diagrams: accuracy per confidence bin against the diagonal, confidence histogram below.

The input is one run's results (an :class:`~calrl.eval.schema.EvalResults`, or a mapping holding at least
``reliability`` and ``ece`` as in ``metrics.json``) or several; several are overlaid on one figure in
distinct colours (``calrl compare`` draws baseline and candidate together). The legend names each run by
its label; for an EvalResults without labels, by the model it evaluated.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
from matplotlib.figure import Figure

from calrl.eval.schema import EvalResults, ReliabilityBin
from calrl.formatting import fmt
from calrl.io import write_bytes

Run = EvalResults | Mapping[str, Any]

COLORS = ("#1f5fa8", "#d1495b", "#2e933c", "#edae49", "#6a4c93", "#00798c")
GAP_COLOR = "#d1495b"
SPARSE_BIN = 5  # bins with fewer answers are drawn faded


def plot_reliability(entries: Run | Sequence[Run],
                     path: str | os.PathLike[str], labels: Sequence[str] | None = None,
                     title: str | None = None) -> None:
    """Draw the reliability diagram of one or several metrics dicts and write it to ``path`` (PNG)."""
    write_bytes(path, render_reliability(entries, labels=labels, title=title))


def render_reliability(entries: Run | Sequence[Run],
                       labels: Sequence[str] | None = None, title: str | None = None) -> bytes:
    """The reliability diagram as PNG bytes (see :func:`plot_reliability`)."""
    matplotlib.use("Agg", force=False)

    runs = [entries] if isinstance(entries, Mapping | EvalResults) else list(entries)
    if not runs:
        raise ValueError("plot_reliability needs at least one metrics dict")
    if labels is None:
        labels = [r.model_label if isinstance(r, EvalResults) else ("model" if len(runs) == 1 else f"run {i + 1}")
                  for i, r in enumerate(runs)]
    if len(labels) != len(runs):
        raise ValueError(f"{len(labels)} labels for {len(runs)} runs")

    fig = Figure(figsize=(6.4, 7.2), dpi=120)
    grid = fig.add_gridspec(2, 1, height_ratios=(3.2, 1.1), hspace=0.08)
    ax = fig.add_subplot(grid[0])
    hist_ax = fig.add_subplot(grid[1], sharex=ax)

    ax.plot([0, 1], [0, 1], linestyle="--", color="#555555", linewidth=1.1, label="perfect calibration",
            zorder=1)
    single = len(runs) == 1
    n_runs = len(runs)
    for k, (run, label) in enumerate(zip(runs, labels, strict=True)):
        color = COLORS[k % len(COLORS)]
        all_bins, ece = _curve(run)
        bins = [b for b in all_bins if b.count]
        legend = f"{label}  (ECE {fmt(ece, 3)})"
        if single:
            _draw_bars(ax, bins, color, legend)
        else:
            _draw_points(ax, bins, color, legend, offset=(k - (n_runs - 1) / 2) * 0.012)
        _draw_histogram(hist_ax, all_bins, color, k, n_runs)

    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("auto")
    ax.set_ylabel("accuracy")
    ax.grid(True, color="#e6e6e6", linewidth=0.7, zorder=0)
    ax.tick_params(labelbottom=False)
    handles, names = ax.get_legend_handles_labels()
    order = sorted(range(len(names)), key=lambda i: (names[i].startswith(("gap", "fewer")), i))
    ax.legend([handles[i] for i in order], [names[i] for i in order], loc="upper left", frameon=True,
              framealpha=0.9, fontsize=9)
    ax.set_title(title or "Reliability diagram", fontsize=12, loc="left")
    for spine in ("top", "right"):
        ax.spines[spine].set_visible(False)
        hist_ax.spines[spine].set_visible(False)

    hist_ax.set_xlabel("stated confidence")
    hist_ax.set_ylabel("share of answers")
    hist_ax.grid(True, axis="y", color="#e6e6e6", linewidth=0.7, zorder=0)
    hist_ax.set_xticks([i / 10 for i in range(11)])
    fig.subplots_adjust(left=0.12, right=0.95, top=0.94, bottom=0.08)

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _curve(run: Run) -> tuple[list[ReliabilityBin], float | None]:
    """The reliability bins and the ECE of one run."""
    if isinstance(run, EvalResults):
        return run.reliability, run.ece
    bins = [b if isinstance(b, ReliabilityBin) else ReliabilityBin(
        lower=b["lower"], upper=b["upper"], count=b.get("count", 0), mean_confidence=b.get("mean_confidence"),
        accuracy=b.get("accuracy")) for b in run.get("reliability") or []]
    ece = run.get("ece")
    return bins, (ece if isinstance(ece, int | float) else None)


def _draw_bars(ax, bins: list[ReliabilityBin], color: str, legend: str) -> None:
    """One run: accuracy bars per bin, the gap to the bin's mean confidence shaded in red.

    Bins holding fewer than ``SPARSE_BIN`` items are drawn faded: one or two answers make a tall bar that
    says little.
    """
    labelled = {"bar": False, "gap": False, "sparse": False}
    for b in bins:
        lo, hi = b.lower, b.upper
        width = (hi - lo) * 0.92
        centre = (lo + hi) / 2
        acc, conf = b.accuracy, b.mean_confidence
        sparse = b.count < SPARSE_BIN
        label = None
        if sparse and not labelled["sparse"]:
            label, labelled["sparse"] = f"fewer than {SPARSE_BIN} answers", True
        elif not sparse and not labelled["bar"]:
            label, labelled["bar"] = legend, True
        ax.bar(centre, acc, width=width, color=color, alpha=0.3 if sparse else 0.85, edgecolor="white",
               linewidth=0.6, zorder=2, label=label, clip_on=False)
        ax.bar(centre, conf - acc, bottom=acc, width=width, color=GAP_COLOR, alpha=0.12 if sparse else 0.28,
               edgecolor=GAP_COLOR, linewidth=0.9, hatch="//", zorder=3,
               label=None if labelled["gap"] or sparse else "gap to mean confidence")
        labelled["gap"] = labelled["gap"] or not sparse
    if not labelled["bar"]:
        ax.plot([], [], color=color, label=legend)


def _draw_points(ax, bins: list[ReliabilityBin], color: str, legend: str, offset: float) -> None:
    """One of several runs: accuracy at each bin's mean confidence, the gap to the diagonal shaded.

    The gap strips of different runs are shifted by ``offset`` so that they do not hide each other.
    """
    xs = [b.mean_confidence for b in bins]
    ys = [b.accuracy for b in bins]
    ax.plot(xs, ys, marker="o", markersize=5, linewidth=1.6, color=color, label=legend, zorder=4,
            clip_on=False)
    for x, y in zip(xs, ys, strict=True):
        ax.plot([x + offset] * 2, [y, x], color=color, alpha=0.35, linewidth=4, solid_capstyle="butt",
                zorder=3)


def _draw_histogram(ax, bins: list[ReliabilityBin], color: str, k: int, n_runs: int) -> None:
    """Share of answered items per bin, side-by-side bars when several runs are drawn."""
    total = sum(b.count for b in bins) or 1
    for b in bins:
        lo, hi = b.lower, b.upper
        width = (hi - lo) * 0.92 / n_runs
        left = lo + (hi - lo) * 0.04 + k * width
        ax.bar(left, b.count / total, width=width, align="edge", color=color, alpha=0.85,
               edgecolor="white", linewidth=0.4, zorder=2)
