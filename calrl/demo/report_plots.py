"""The study's plots, from ``summary.json`` (and the ``metrics.json`` files it names): reliability diagrams,
held-out ECE per epoch, and the risk-coverage curves over all held-out items."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from calrl.demo.recipes import METHOD_NAMES, POLICIES, RL_POLICIES
from calrl.demo.report_prose import fmt, ran
from calrl.demo.selective import mean_curve

DOT_SHARES = (0.05, 0.2, 0.5)  # the dot sizes the reliability grid's legend shows


def _dot_area(share: float) -> float:
    """A bin's dot area (points^2) for its share of the policy's scored answers."""
    return 15 + 300 * share


def _reliability_legend() -> list:
    """What the reliability grid's marks mean: the diagonal, the bars and the dot sizes."""
    handles = [Line2D([], [], color="grey", lw=0.8, ls="--", label="calibrated (accuracy = confidence)"),
               Patch(color="tab:blue", alpha=0.35, label="accuracy of a confidence bin")]
    for share in DOT_SHARES:  # Line2D's markersize is a diameter, scatter's size an area
        handles.append(Line2D([], [], ls="", marker="o", color="tab:blue", markersize=_dot_area(share) ** 0.5,
                              label=f"dot: a bin (mean conf., accuracy), {100 * share:.0f}% of answers"
                              if share == DOT_SHARES[0] else f"{100 * share:.0f}% of answers"))
    return handles


def plot_reliability_grid(summary: dict[str, Any], path: Path) -> Path:
    """One reliability diagram per policy, side by side (bins pooled over seeds)."""
    matplotlib.use("Agg")

    policies = ran(summary)
    handles = _reliability_legend()
    ncol = len(handles) if len(policies) >= 4 else 2  # a narrow grid (few policies) wraps the legend
    legend_inches = 0.22 * -(-len(handles) // ncol) + 0.1
    height = 3.0 + legend_inches
    fig, axes = plt.subplots(1, len(policies), figsize=(3.0 * len(policies), height), sharey=True,
                             squeeze=False)
    axes = axes[0]
    for ax, policy in zip(axes, policies):
        pooled: dict[int, list[float]] = {}
        for seed in summary["seeds"]:
            metrics = json.loads(Path(summary["policies"][policy]["per_seed"][str(seed)]["metrics_file"]).read_text())
            for i, b in enumerate(metrics.get("reliability") or []):
                if b["count"]:
                    acc = pooled.setdefault(i, [0.0, 0.0, 0.0, b["lower"], b["upper"]])
                    acc[0] += b["count"]
                    acc[1] += b["count"] * b["mean_confidence"]
                    acc[2] += b["count"] * b["accuracy"]
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        total = sum(v[0] for v in pooled.values()) or 1
        for count, conf_sum, acc_sum, lower, upper in pooled.values():
            ax.bar((lower + upper) / 2, acc_sum / count, width=(upper - lower) * 0.9, color="tab:blue", alpha=0.35)
            ax.scatter([conf_sum / count], [acc_sum / count], s=_dot_area(count / total), color="tab:blue")
        ece = summary["policies"][policy]["ece"]["mean"]
        ax.set_title(f"{METHOD_NAMES[policy]}\nECE {fmt(ece)}", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("stated confidence", fontsize=8)
    axes[0].set_ylabel("accuracy", fontsize=8)
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=7, frameon=False, columnspacing=1.2,
               handletextpad=0.4)
    fig.tight_layout(rect=(0, legend_inches / height, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_ece_per_epoch(summary: dict[str, Any], path: Path) -> Path:
    """Held-out ECE after each epoch of every RL method, from the runs' saved calibration evals: the mean over seeds as a
    line, the range over seeds shaded, starting from SFT's ECE (epoch 0, the policy every run starts from)."""
    matplotlib.use("Agg")

    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    colors = {p: plt.get_cmap("tab10")(i) for i, p in enumerate(POLICIES)}
    sft_by_seed = {str(seed): summary["policies"]["sft"]["per_seed"][str(seed)]["ece"] for seed in summary["seeds"]}
    longest = 0
    for policy in ran(summary, RL_POLICIES):
        by_epoch: dict[int, list[float]] = {}
        for seed, hist in summary["policies"][policy]["ece_per_epoch"].items():
            if sft_by_seed.get(seed) is not None:
                by_epoch.setdefault(0, []).append(sft_by_seed[seed])
            for h in hist:
                if h["ece"] is not None:
                    by_epoch.setdefault(int(h["epoch"]), []).append(h["ece"])
        if len(by_epoch) < 2:
            continue
        epochs = sorted(by_epoch)
        longest = max(longest, epochs[-1])
        means = [sum(by_epoch[e]) / len(by_epoch[e]) for e in epochs]
        ax.plot(epochs, means, marker="o", ms=4, color=colors[policy], label=METHOD_NAMES[policy])
        if len(summary["seeds"]) > 1:
            ax.fill_between(epochs, [min(by_epoch[e]) for e in epochs], [max(by_epoch[e]) for e in epochs],
                            color=colors[policy], alpha=0.12, lw=0)
    ax.set_xticks(range(longest + 1))
    ax.set_xticklabels(["SFT"] + [str(k) for k in range(1, longest + 1)])
    ax.set_xlabel("calibration eval at the end of epoch k " + ("(line: mean over seeds; band: range over seeds)"
                                                                if len(summary["seeds"]) > 1 else "(one seed)"))
    ax.set_ylabel("ECE (held-out)")
    ax.grid(alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    if len(summary["seeds"]) > 1:
        handles.append(Patch(color="grey", alpha=0.25, label="range over seeds"))
    ax.legend(handles=handles, fontsize=7, ncol=3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path



def _steps(coverage: list[float], accuracy: list[float]) -> tuple[list[float], list[float]]:
    """A risk-coverage curve drawn from coverage 0 (``drawstyle="steps-pre"``: each point's accuracy holds over the
    coverage up to it, so the area above the line is the AURC)."""
    return [0.0, *coverage], [accuracy[0], *accuracy]


def plot_risk_coverage(summary: dict[str, Any], path: Path) -> Path:
    """Accuracy of the answered against coverage over all held-out items (abstentions last, counted as wrong), one
    colour per policy: each seed's curve thin, the mean over seeds bold (one seed: its curve); the legend gives the
    AURC (all items), mean over seeds."""
    matplotlib.use("Agg")

    several = len(summary["seeds"]) > 1
    fig, ax = plt.subplots(figsize=(9.5, 4.2))
    colors = {p: plt.get_cmap("tab10")(i) for i, p in enumerate(POLICIES)}
    for policy in ran(summary):
        entry = summary["policies"][policy]
        curves = [entry["per_seed"][str(s)]["risk_coverage"] for s in summary["seeds"]]
        curves = [c for c in curves if c["coverage"]]
        if not curves:
            continue
        if several:
            for curve in curves:
                ax.plot(*_steps(curve["coverage"], curve["accuracy"]), drawstyle="steps-pre", lw=0.7, alpha=0.35,
                        color=colors[policy])
        coverage, accuracy = mean_curve(curves)
        ax.plot(*_steps(coverage, accuracy), drawstyle="steps-pre", lw=2.0, color=colors[policy],
                label=f"{METHOD_NAMES[policy]} (AURC {fmt(entry['aurc_all_items']['mean'])})")
    ax.set_xlim(0, 1.0)
    ax.set_ylim(0, 1.03)
    ax.set_xlabel("coverage (share of held-out items answered at a confidence threshold; abstentions last)")
    ax.set_ylabel("accuracy of the answered (1 - risk)")
    ax.set_title("Risk-coverage over all held-out items" + (": mean over seeds (bold), each seed (thin)"
                                                            if several else f" (seed {summary['seeds'][0]})"),
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), title="policy (AURC, all items,\nlower is better)",
              title_fontsize=7, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
