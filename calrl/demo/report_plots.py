"""The study's plots, from ``summary.json`` (and the ``metrics.json`` files it names): reliability diagrams and
held-out ECE per epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from calrl.demo.recipes import METHOD_NAMES, POLICIES, RL_POLICIES
from calrl.demo.report_prose import fmt, ran


def plot_reliability_grid(summary: dict[str, Any], path: Path) -> Path:
    """One reliability diagram per policy, side by side (bins pooled over seeds)."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    policies = ran(summary)
    fig, axes = plt.subplots(1, len(policies), figsize=(3.0 * len(policies), 3.3), sharey=True,
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
            ax.scatter([conf_sum / count], [acc_sum / count], s=15 + 300 * count / total, color="tab:blue")
        ece = summary["policies"][policy]["ece"]["mean"]
        ax.set_title(f"{METHOD_NAMES[policy]}\nECE {fmt(ece)}", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("stated confidence", fontsize=8)
    axes[0].set_ylabel("accuracy", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_ece_per_epoch(summary: dict[str, Any], path: Path) -> Path:
    """Held-out ECE after each epoch of every RL method, from the runs' saved calibration evals: the mean over seeds as a
    line, the range over seeds shaded, starting from SFT's ECE (epoch 0, the policy every run starts from)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    ax.set_xlabel("calibration eval at the end of epoch k (line: mean over seeds; band: range over seeds)")
    ax.set_ylabel("ECE (held-out)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

