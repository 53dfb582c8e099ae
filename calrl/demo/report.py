"""``report.md`` and ``report.html`` of the study, written from ``summary.json`` only.

Every number in the report is formatted from the summary with :func:`fmt` (so the report equals the summary),
and the paragraphs are generated from those numbers, saying plainly where a method did not help.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from calrl.demo.recipes import METHOD_NAMES, POLICIES, RL_POLICIES
from calrl.formatting import fmt as format_number
from calrl.io import write_text

HEADLINE_COLUMNS = (
    ("accuracy", "accuracy"), ("accuracy_answered", "acc. answered"), ("ece", "ECE"), ("smece", "smooth ECE"),
    ("brier", "Brier"), ("auroc", "AUROC"), ("refusal_rate", "refusal"), ("mean_confidence", "mean conf."),
)
CHECK_TEXT = {
    "ppo_more_overconfident_than_sft": "Vanilla PPO ends more overconfident than SFT (higher mean confidence and ECE)",
    "ppo_m_lower_ece_than_ppo_same_accuracy": "PPO-M: lower ECE than vanilla PPO, accuracy within 2 points",
    "ppo_c_lower_ece_than_ppo_same_accuracy": "PPO-C: lower ECE than vanilla PPO, accuracy within 2 points",
    "abstention_on_wrong_slices": "PPO-C + abstention abstains mostly on slices PPO-C gets wrong (accuracy < 0.5)",
}


def fmt(value: Any, digits: int = 3) -> str:
    """One number as the demo report shows it (3 decimals; ``n/a`` for missing)."""
    return format_number(value, digits)


def fmt_agg(agg: dict[str, Any]) -> str:
    """``mean ± std`` of an aggregate (just the mean for one seed)."""
    if agg.get("mean") is None:
        return "n/a"
    if agg.get("n", 0) > 1:
        return f"{fmt(agg['mean'])} ± {fmt(agg['std'])}"
    return fmt(agg["mean"])


# ------------------------------------------------------------------------------------------------ tables
def headline_table(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["policy", *[label for _, label in HEADLINE_COLUMNS]]
    rows = [[summary["policies"][p]["method"], *[fmt_agg(summary["policies"][p][k]) for k, _ in HEADLINE_COLUMNS]]
            for p in POLICIES]
    return header, rows


def slice_table(summary: dict[str, Any], key: str) -> tuple[list[str], list[list[str]]]:
    slices = summary["slices"]
    header = ["policy", *slices]
    rows = [[summary["policies"][p]["method"],
             *[fmt_agg(summary["policies"][p][key].get(g, {"mean": None})) for g in slices]] for p in POLICIES]
    return header, rows


def rm_table(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["reward model", "preference accuracy", "prefers high conf. (correct answer)",
              "prefers high conf. (wrong answer)", "mean r(high)-r(low), correct", "mean r(high)-r(low), wrong"]
    names = {"rm_plain": "ordinary (lambda = 0)", "rm_calibrated": "calibrated (PPO-M)"}
    rows = []
    for rm, entry in summary["reward_models"].items():
        rows.append([names.get(rm, rm), fmt_agg(entry["preference_accuracy"]),
                     fmt_agg(entry["chosen_prefers_high_rate"]), fmt_agg(entry["rejected_prefers_high_rate"]),
                     fmt_agg(entry["chosen_reward_difference"]), fmt_agg(entry["rejected_reward_difference"])])
    return header, rows


def gate_table(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    seeds = summary["seeds"]
    header = ["candidate", "baseline", *[f"seed {s}" for s in seeds]]
    pairs: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for g in summary["gates"]:
        pairs.setdefault((g["candidate"], g["baseline"]), {})[g["seed"]] = g
    rows = []
    for (cand, base), by_seed in pairs.items():
        cells = []
        for s in seeds:
            g = by_seed.get(s)
            if g is None:
                cells.append("n/a")
            elif g["verdict"] == "pass":
                cells.append("pass")
            else:
                cells.append("blocked: " + ", ".join(g["reasons"]))
        rows.append([METHOD_NAMES[cand], METHOD_NAMES[base], *cells])
    return header, rows


def epoch_table(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """ECE after each epoch (mean over the seeds that have that epoch's eval), from the calibration evals the
    training runs saved (``calibration_eval/epoch-<k>/metrics.json``)."""
    epochs = sorted({h["epoch"] for p in POLICIES for hist in summary["policies"][p]["ece_per_epoch"].values()
                     for h in hist})
    header = ["policy", *[f"epoch {k}" for k in epochs]]
    rows = []
    for p in RL_POLICIES:  # the SFT run has no per-epoch calibration eval
        hist = summary["policies"][p]["ece_per_epoch"]
        cells = []
        for k in epochs:
            vals = [h["ece"] for seed_hist in hist.values() for h in seed_hist if h["epoch"] == k and h["ece"] is not None]
            cells.append(fmt(sum(vals) / len(vals)) if vals else "")
        rows.append([summary["policies"][p]["method"], *cells])
    return header, rows


def timing_table(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    per_stage = summary["timings"]["process_seconds_per_stage"]
    rows = [[stage, fmt(seconds, 1)] for stage, seconds in per_stage.items()]
    rows.append(["wall clock of the run that wrote this report", fmt(summary["timings"].get("wall_seconds"), 1)])
    return ["stage", "process seconds"], rows


# ------------------------------------------------------------------------------------------- paragraphs
def _m(summary: dict[str, Any], policy: str, key: str) -> float | None:
    return summary["policies"][policy][key]["mean"]


def _change(a: float | None, b: float | None, what: str, *, points: bool = False) -> str:
    if a is None or b is None:
        return f"{what} could not be compared"
    if points:
        return f"{what} {fmt(a)} -> {fmt(b)} ({(b - a) * 100:+.1f} points)"
    return f"{what} {fmt(a)} -> {fmt(b)}"


def paragraphs(summary: dict[str, Any]) -> dict[str, str]:
    """One plain paragraph per policy, generated from the summary's numbers."""
    n = len(summary["seeds"])
    over = f"over {n} seed{'s' if n > 1 else ''}"
    out: dict[str, str] = {}
    sft = {k: _m(summary, "sft", k) for k in ("accuracy", "ece", "mean_confidence", "refusal_rate")}
    ppo = {k: _m(summary, "ppo", k) for k in ("accuracy", "ece", "mean_confidence", "refusal_rate")}
    slice_acc = summary["policies"]["sft"]["slice_accuracy"]
    slice_conf = summary["policies"]["sft"]["slice_mean_confidence"]
    per_slice = "; ".join(f"{g}: accuracy {fmt(slice_acc[g]['mean'])}, stated {fmt(slice_conf.get(g, {}).get('mean'))}"
                          for g in summary["slices"] if g in slice_acc)
    out["sft"] = (f"SFT ({over}): accuracy {fmt(sft['accuracy'])}, mean stated confidence "
                  f"{fmt(sft['mean_confidence'])}, ECE {fmt(sft['ece'])}, refusal rate {fmt(sft['refusal_rate'])}. "
                  f"Per slice ({per_slice}). This is the starting point every RL policy shares.")

    check = summary["checks"]["ppo_more_overconfident_than_sft"]
    verdict = ("It ends more overconfident than SFT, as the biased reward model predicts" if check["passed"]
               else "It did NOT end more overconfident than SFT on both counts (mean confidence and ECE)")
    verdict += f" (on its own in {check['seeds_passed']} of {check['seeds']} seeds)."
    probe = summary["reward_models"]["rm_plain"]
    out["ppo"] = (f"Vanilla PPO against the ordinary reward model ({over}): "
                  f"{_change(sft['mean_confidence'], ppo['mean_confidence'], 'mean confidence')}, "
                  f"{_change(sft['ece'], ppo['ece'], 'ECE')}, "
                  f"{_change(sft['accuracy'], ppo['accuracy'], 'accuracy', points=True)} (SFT -> PPO). {verdict} "
                  f"The ordinary reward model prefers the high-confidence version of a wrong answer "
                  f"{fmt(probe['rejected_prefers_high_rate']['mean'])} of the time.")

    for policy, label in (("ppo_m", "PPO-M"), ("ppo_c", "PPO-C")):
        c = summary["checks"][f"{policy}_lower_ece_than_ppo_same_accuracy"]
        ece, acc = _m(summary, policy, "ece"), _m(summary, policy, "accuracy")
        conf = _m(summary, policy, "mean_confidence")
        seeds = f" Seed by seed this holds in {c['seeds_passed']} of {c['seeds']}."
        if c["passed"]:
            verdict = "On the means it meets the expectation: lower ECE than vanilla PPO with accuracy within 2 points."
        else:
            parts = []
            if ece is not None and ppo["ece"] is not None and ece >= ppo["ece"]:
                parts.append("its ECE is not lower than vanilla PPO's")
            if acc is not None and ppo["accuracy"] is not None and abs(acc - ppo["accuracy"]) > 0.02:
                parts.append("its accuracy differs from vanilla PPO's by more than 2 points")
            verdict = "It did NOT help as expected: " + " and ".join(parts or ["numbers missing"]) + "."
        verdict += seeds
        extra = ""
        if policy == "ppo_m":
            cal = summary["reward_models"]["rm_calibrated"]
            extra = (f" The calibrated reward model prefers high confidence on wrong answers "
                     f"{fmt(cal['rejected_prefers_high_rate']['mean'])} of the time (ordinary RM: "
                     f"{fmt(probe['rejected_prefers_high_rate']['mean'])}) and on correct answers "
                     f"{fmt(cal['chosen_prefers_high_rate']['mean'])} (ordinary: "
                     f"{fmt(probe['chosen_prefers_high_rate']['mean'])}); the reward it adds for a high over a "
                     f"low stated confidence is {fmt(cal['rejected_reward_difference']['mean'])} on wrong answers "
                     f"(ordinary: {fmt(probe['rejected_reward_difference']['mean'])}). Its held-out preference "
                     f"accuracy on correct-vs-wrong pairs is {fmt(cal['preference_accuracy']['mean'])}: it cannot "
                     "tell right from wrong here, so what the calibrated loss changes is the size of the "
                     "confidence bonus, not its direction.")
        out[policy] = (f"{label} ({over}) against vanilla PPO: {_change(ppo['ece'], ece, 'ECE')}, "
                       f"{_change(ppo['mean_confidence'], conf, 'mean confidence')}, "
                       f"{_change(ppo['accuracy'], acc, 'accuracy', points=True)}. {verdict}{extra}")

    ab = summary["checks"]["abstention_on_wrong_slices"]
    refusal = _m(summary, "ppo_c_abstain", "refusal_rate")
    acc_ans = _m(summary, "ppo_c_abstain", "accuracy_answered")
    ref_acc_ans = _m(summary, "ppo_c", "accuracy_answered")
    share = ab["numbers"]["share_on_wrong_slices"]
    slice_ref = summary["policies"]["ppo_c_abstain"]["slice_refusal_rate"]
    where = ", ".join(f"{g} {fmt(v['mean'])}" for g, v in slice_ref.items())
    if share is None:
        verdict = "It never abstained on the held-out set, so the abstention reward had no visible effect."
    elif ab["passed"]:
        verdict = (f"{fmt(share)} of its abstentions fall on slices PPO-C answers correctly less than half the "
                   "time: it abstains mostly where it would be wrong.")
    else:
        verdict = (f"Only {fmt(share)} of its abstentions fall on slices PPO-C gets wrong more often than right: "
                   "it did NOT abstain mostly where it would be wrong.")
    rewards = ", ".join(f"seed {s}: {fmt(v)}" for s, v in summary["abstention_reward"].items())
    out["ppo_c_abstain"] = (f"PPO-C with an abstention reward ({rewards}) ({over}): refusal rate {fmt(refusal)} "
                            f"(per slice: {where}); accuracy on answered questions "
                            f"{_change(ref_acc_ans, acc_ans, 'vs PPO-C')}. {verdict}")

    g = {k: _m(summary, "grpo_brier", k) for k in ("accuracy", "ece", "mean_confidence", "auroc")}
    if g["ece"] is not None and sft["ece"] is not None and ppo["ece"] is not None:
        if g["ece"] < min(sft["ece"], ppo["ece"]):
            verdict = "Its ECE is the lower of both SFT's and vanilla PPO's."
        elif g["ece"] < ppo["ece"]:
            verdict = "Its ECE is below vanilla PPO's but not below SFT's: the Brier reward did not improve on SFT."
        else:
            verdict = "Its ECE is not below vanilla PPO's: the Brier reward did NOT help here."
    else:
        verdict = ""
    out["grpo_brier"] = (f"GRPO with the Brier (RLCR) reward, no std scaling ({over}): "
                         f"{_change(sft['ece'], g['ece'], 'ECE')}, "
                         f"{_change(sft['mean_confidence'], g['mean_confidence'], 'mean confidence')}, "
                         f"{_change(sft['accuracy'], g['accuracy'], 'accuracy', points=True)} (SFT -> GRPO), "
                         f"AUROC {fmt(g['auroc'])}. {verdict}")
    return out


# ------------------------------------------------------------------------------------------------ plots
def plot_reliability_grid(summary: dict[str, Any], path: Path) -> Path:
    """One reliability diagram per policy, side by side (bins pooled over seeds)."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(POLICIES), figsize=(3.0 * len(POLICIES), 3.3), sharey=True)
    for ax, policy in zip(axes, POLICIES):
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
    colors = dict(zip(POLICIES, ("black", "tab:red", "tab:green", "tab:blue", "tab:purple", "tab:orange")))
    sft_by_seed = {str(seed): summary["policies"]["sft"]["per_seed"][str(seed)]["ece"] for seed in summary["seeds"]}
    longest = 0
    for policy in RL_POLICIES:
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


# ------------------------------------------------------------------------------------------------ writers
def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def sections(summary: dict[str, Any], plots: dict[str, str]) -> list[tuple[str, str, Any]]:
    """(title, kind, content) in report order; kind is text, table, image or list."""
    m = summary["machine"]
    seeds = ", ".join(str(s) for s in summary["seeds"])
    intro = (f"Command: `{summary['command']}`; seeds {seeds}; machine: {m['processor']}, {m['cpu_count']} CPU "
             f"cores{', GPU ' + m['gpu'] if m.get('gpu') else ', no GPU'}, {m['platform']}, Python {m['python']}, "
             f"torch {m['torch']}. Held-out items: {summary['counts']['eval_items']}; RL prompts: "
             f"{summary['counts']['rl_prompts']}. Numbers are mean ± standard deviation over the seeds"
             + (" (quick run: one seed, few steps; not a result)." if summary["quick"] else "."))
    checks = [f"{'PASS' if c['passed'] else ('n/a' if c['passed'] is None else 'FAIL')} on the means: "
              f"{CHECK_TEXT.get(k, k)} (holds in {c['seeds_passed']} of {c['seeds']} seeds on their own)"
              for k, c in summary["checks"].items()]
    paras = paragraphs(summary)
    out: list[tuple[str, str, Any]] = [
        ("Setup", "text", intro),
        ("Held-out results", "table", headline_table(summary)),
        ("What the study was expected to show", "list", checks),
        ("What each method did", "list", [f"**{METHOD_NAMES[p]}.** {paras[p]}" for p in POLICIES]),
        ("Reliability diagrams (bins pooled over seeds)", "image", plots["reliability"]),
        ("ECE per slice", "table", slice_table(summary, "slice_ece")),
        ("Accuracy per slice", "table", slice_table(summary, "slice_accuracy")),
        ("Refusal rate per slice", "table", slice_table(summary, "slice_refusal_rate")),
        ("ECE per epoch (the training runs' calibration evals)", "image", plots["epochs"]),
        ("ECE per epoch, mean over seeds", "table", epoch_table(summary)),
        ("Reward models: confidence-bias probe (held-out correct-vs-wrong pairs)", "table", rm_table(summary)),
        ("Release gate (`calrl compare`)", "table", gate_table(summary)),
        ("Time per stage", "table", timing_table(summary)),
    ]
    return out


def render_markdown(summary: dict[str, Any], plots: dict[str, str]) -> str:
    lines = ["# calrl demo: calibration study on a small offline world", ""]
    for title, kind, content in sections(summary, plots):
        lines += [f"## {title}", ""]
        if kind == "text":
            lines.append(content)
        elif kind == "table":
            lines.append(_md_table(*content))
        elif kind == "image":
            lines.append(f"![{title}]({content})")
        elif kind == "list":
            lines += [f"- {item}" for item in content]
        lines.append("")
    return "\n".join(lines)


def _inline_md(text: str) -> str:
    import re

    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def render_html(summary: dict[str, Any], plots: dict[str, str]) -> str:
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>calrl demo report</title><style>",
             "body{font-family:sans-serif;max-width:1200px;margin:2em auto;line-height:1.45}",
             ("table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
              "text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}"),
             "</style></head><body><h1>calrl demo: calibration study on a small offline world</h1>"]
    for title, kind, content in sections(summary, plots):
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if kind == "text":
            parts.append(f"<p>{_inline_md(content)}</p>")
        elif kind == "table":
            parts.append(_html_table(*content))
        elif kind == "image":
            parts.append(f"<img src='{html.escape(content)}' alt='{html.escape(title)}'>")
        elif kind == "list":
            parts.append("<ul>" + "".join(f"<li>{_inline_md(item)}</li>" for item in content) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(summary: dict[str, Any], layout: Any) -> Path:
    """Plots, ``report.md`` and ``report.html`` in the study folder; returns the HTML path."""
    plots = {"reliability": plot_reliability_grid(summary, layout.plots / "reliability.png"),
             "epochs": plot_ece_per_epoch(summary, layout.plots / "ece_per_epoch.png")}
    rel = {k: str(v.relative_to(layout.out)) for k, v in plots.items()}
    write_text(layout.out / "report.md", render_markdown(summary, rel))
    write_text(layout.out / "report.html", render_html(summary, rel))
    return layout.out / "report.html"


__all__ = [
    "RL_POLICIES",
    "fmt",
    "fmt_agg",
    "headline_table",
    "paragraphs",
    "render_html",
    "render_markdown",
    "write_report",
]
