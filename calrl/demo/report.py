"""``report.md`` and ``report.html`` of the study, written from ``summary.json`` only.

Every number in the report is formatted from the summary with :func:`fmt` (so the report equals the summary),
and the paragraphs are generated from those numbers, saying plainly where a method did not help.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from calrl.demo.recipes import (
    ABSTENTION_REFERENCE,
    ECE_COMPARISONS,
    MAIN_POLICIES,
    METHOD_NAMES,
    POLICIES,
    RL_POLICIES,
    VERIFIABLE_POLICIES,
)
from calrl.formatting import fmt as format_number
from calrl.io import write_text

HEADLINE_COLUMNS = (
    ("accuracy", "accuracy"), ("accuracy_answered", "acc. answered"), ("ece", "ECE"), ("smece", "smooth ECE"),
    ("brier", "Brier"), ("auroc", "AUROC"), ("refusal_rate", "refusal"), ("mean_confidence", "mean conf."),
)
CHECK_TEXT = {
    "ppo_more_overconfident_than_sft": "PPO (reward model alone) ends more confident and worse calibrated than SFT "
                                       "(higher mean confidence and higher ECE)",
    "ppo_v_more_overconfident_than_sft": "PPO + correctness ends more confident and worse calibrated than SFT",
    "ppo_more_confident_every_slice": "PPO (reward model alone) states higher confidence than SFT in every slice "
                                      "and has higher ECE",
    "ppo_v_more_confident_every_slice": "PPO + correctness states higher confidence than SFT in every slice and "
                                        "has higher ECE",
    "ppo_more_confident_on_never_seen": "PPO (reward model alone) states higher confidence than SFT on the "
                                        "never-seen people (answers it cannot know) and has higher ECE",
    "ppo_v_more_confident_on_never_seen": "PPO + correctness states higher confidence than SFT on the never-seen "
                                          "people and has higher ECE",
    "ppo_m_lower_ece_than_ppo_same_accuracy": "PPO-M: ECE at least 30% lower than PPO's, accuracy within 2 points",
    "ppo_c_lower_ece_than_ppo_same_accuracy": "PPO-C: ECE at least 30% lower than PPO's, accuracy within 2 points",
    "abstention_on_wrong_slices": "PPO-C + abstention abstains mostly on slices PPO + correctness gets wrong "
                                  "(accuracy < 0.5)",
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
def ran(summary: dict[str, Any], policies: tuple[str, ...] = POLICIES) -> list[str]:
    """The policies of ``policies`` this study ran (the quick run leaves the verifiable-reward ones out)."""
    return [p for p in policies if p in summary["policies"]]


def headline_table(summary: dict[str, Any], policies: tuple[str, ...] = MAIN_POLICIES
                   ) -> tuple[list[str], list[list[str]]]:
    """Mean ± std over seeds of each policy's held-out metrics (default: the main comparison, RM alone)."""
    header = ["policy", *[label for _, label in HEADLINE_COLUMNS]]
    rows = [[summary["policies"][p]["method"], *[fmt_agg(summary["policies"][p][k]) for k, _ in HEADLINE_COLUMNS]]
            for p in ran(summary, policies)]
    return header, rows


def verifiable_table(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The second table: SFT and the policies trained with the rule-based correctness (verifiable) reward."""
    return headline_table(summary, ("sft", *VERIFIABLE_POLICIES))


def _interval(low: Any, high: Any) -> str:
    return "n/a" if low is None or high is None else f"[{fmt(low)}, {fmt(high)}]"


def ece_difference_table(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per compared method: ECE(method) - ECE(its PPO) per seed (with calrl compare's item-level interval),
    mean ± std over seeds, the paired seed-bootstrap interval of the mean, and the seeds where it holds."""
    seeds = summary["seeds"]
    header = ["method", "vs", *[f"seed {s}" for s in seeds], "mean ± std", "95% interval (seeds)",
              "holds (ECE -30%, acc. ±2 pts)"]
    rows = []
    for key, check in summary["checks"].items():
        diff = check.get("numbers", {}).get("ece_difference")
        if diff is None:
            continue
        policy, base = key.split("_lower_ece_than_")[0], key.split("_lower_ece_than_")[1].removesuffix("_same_accuracy")
        cells = []
        for d, iv in zip(diff["per_seed"], diff["per_seed_item_interval"]):
            cells.append("n/a" if d is None else fmt(d) + (f" {_interval(*iv)}" if iv else ""))
        rows.append([METHOD_NAMES[policy], METHOD_NAMES[base], *cells, fmt_agg(diff), _interval(diff["low"], diff["high"]),
                     f"{check['seeds_passed']} of {check['seeds']} seeds"])
    return header, rows


def claims_lines(summary: dict[str, Any]) -> list[str]:
    """One line per expected outcome: in how many seeds it holds on its own, and whether on the means."""
    lines = []
    for key, c in summary["checks"].items():
        means = {True: " (holds on the means)", False: " (does not hold on the means)", None: ""}[c.get("on_means")]
        lines.append(f"{CHECK_TEXT.get(key, key)}: holds in {c['seeds_passed']} of {c['seeds']} seeds{means}")
    return lines


def slice_table(summary: dict[str, Any], key: str) -> tuple[list[str], list[list[str]]]:
    slices = summary["slices"]
    header = ["policy", *slices]
    rows = [[summary["policies"][p]["method"],
             *[fmt_agg(summary["policies"][p][key].get(g, {"mean": None})) for g in slices]] for p in ran(summary)]
    return header, rows


def rm_table(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["reward model", "preference accuracy", "prefers high conf. (correct answer)",
              "prefers high conf. (wrong answer)", "mean r(high)-r(low), correct", "mean r(high)-r(low), wrong"]
    names = {"rm_base": "fact checks, answers alone (start of the ordinary RM)",
             "rm_plain": "ordinary (all comparisons, lambda = 0)",
             "rm_calibrated": "calibrated (PPO-M: ordinary + calibration terms, filtered half)"}
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
    epochs = sorted({h["epoch"] for p in ran(summary) for hist in summary["policies"][p]["ece_per_epoch"].values()
                     for h in hist})
    header = ["policy", *[f"epoch {k}" for k in epochs]]
    rows = []
    for p in ran(summary, RL_POLICIES):  # the SFT run has no per-epoch calibration eval
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

    probe = summary["reward_models"]["rm_plain"]
    cal = summary["reward_models"]["rm_calibrated"]
    for ppo, label in (("ppo", "Vanilla PPO against the ordinary reward model alone"),
                       ("ppo_v", ("Vanilla PPO against the ordinary reward model plus the rule-based "
                                  "correctness reward"))):
        if ppo not in summary["policies"]:
            continue
        check = summary["checks"][f"{ppo}_more_overconfident_than_sft"]
        p = {k: _m(summary, ppo, k) for k in ("accuracy", "ece", "mean_confidence")}
        slices = summary["checks"][f"{ppo}_more_confident_every_slice"]
        verdict = (f"Higher mean confidence (answered questions) and ECE than SFT in {check['seeds_passed']} of "
                   f"{check['seeds']} seeds on its own ({'and' if check['on_means'] else 'but not'} on the means); "
                   f"higher stated confidence in every slice and higher ECE in {slices['seeds_passed']} of "
                   f"{slices['seeds']} seeds.")
        out[ppo] = (f"{label} ({over}): {_change(sft['mean_confidence'], p['mean_confidence'], 'mean confidence')}, "
                    f"{_change(sft['ece'], p['ece'], 'ECE')}, "
                    f"{_change(sft['accuracy'], p['accuracy'], 'accuracy', points=True)} (SFT -> PPO). {verdict} "
                    f"The ordinary reward model prefers the high-confidence version of a wrong answer "
                    f"{fmt(probe['rejected_prefers_high_rate']['mean'])} of the time, and the correct answer of a "
                    f"correct-vs-wrong pair {fmt(probe['preference_accuracy']['mean'])} of the time.")

    for policy, base in ECE_COMPARISONS:
        if policy not in summary["policies"] or base not in summary["policies"]:
            continue
        c = summary["checks"][f"{policy}_lower_ece_than_{base}_same_accuracy"]
        b = {k: _m(summary, base, k) for k in ("accuracy", "ece", "mean_confidence")}
        ece, acc = _m(summary, policy, "ece"), _m(summary, policy, "accuracy")
        conf = _m(summary, policy, "mean_confidence")
        diff = c["numbers"]["ece_difference"]
        verdict = (f"ECE at least 30% lower than {METHOD_NAMES[base]}'s with accuracy within 2 points: in "
                   f"{c['seeds_passed']} of {c['seeds']} seeds on its own ({'and' if c['on_means'] else 'but not'}"
                   f" on the means). ECE difference {fmt(diff['mean'])} ± {fmt(diff['std'])} over seeds, 95% "
                   f"paired bootstrap interval over seeds {_interval(diff['low'], diff['high'])}.")
        extra = ""
        if policy == "ppo_m":
            extra = (f" The calibrated reward model prefers high confidence on wrong answers "
                     f"{fmt(cal['rejected_prefers_high_rate']['mean'])} of the time (ordinary RM: "
                     f"{fmt(probe['rejected_prefers_high_rate']['mean'])}) and on correct answers "
                     f"{fmt(cal['chosen_prefers_high_rate']['mean'])} (ordinary: "
                     f"{fmt(probe['chosen_prefers_high_rate']['mean'])}); the reward it adds for a high over a "
                     f"low stated confidence is {fmt(cal['rejected_reward_difference']['mean'])} on wrong answers "
                     f"(ordinary: {fmt(probe['rejected_reward_difference']['mean'])}); its held-out preference "
                     f"accuracy on correct-vs-wrong pairs is {fmt(cal['preference_accuracy']['mean'])}.")
        out[policy] = (f"{METHOD_NAMES[policy]} ({over}) against {METHOD_NAMES[base]}: "
                       f"{_change(b['ece'], ece, 'ECE')}, {_change(b['mean_confidence'], conf, 'mean confidence')}, "
                       f"{_change(b['accuracy'], acc, 'accuracy', points=True)}. {verdict}{extra}")

    if {"ppo_c_abstain", ABSTENTION_REFERENCE} <= set(summary["policies"]):
        ab = summary["checks"]["abstention_on_wrong_slices"]
        refusal = _m(summary, "ppo_c_abstain", "refusal_rate")
        acc_ans = _m(summary, "ppo_c_abstain", "accuracy_answered")
        ref_acc_ans = _m(summary, ABSTENTION_REFERENCE, "accuracy_answered")
        share = ab["numbers"]["share_on_wrong_slices"]
        slice_ref = summary["policies"]["ppo_c_abstain"]["slice_refusal_rate"]
        where = ", ".join(f"{g} {fmt(v['mean'])}" for g, v in slice_ref.items())
        if share is None:
            verdict = "It never abstained on the held-out set, so the abstention reward had no visible effect."
        elif ab["passed"]:
            verdict = (f"{fmt(share)} of its abstentions fall on slices PPO + correctness answers correctly less "
                       f"than half the time (more than half in {ab['seeds_passed']} of {ab['seeds']} seeds).")
        else:
            verdict = (f"Only {fmt(share)} of its abstentions fall on slices PPO + correctness gets wrong more "
                       "often than right: it did NOT abstain mostly where it would be wrong.")
        rewards = ", ".join(f"seed {s}: {fmt(v)}" for s, v in summary["abstention_reward"].items())
        out["ppo_c_abstain"] = (f"PPO-C with an abstention reward ({rewards}) ({over}): refusal rate {fmt(refusal)} "
                                f"(per slice: {where}); accuracy on answered questions "
                                f"{_change(ref_acc_ans, acc_ans, 'vs PPO + correctness')}. {verdict}")

    if {"grpo_brier", "ppo_v"} <= set(summary["policies"]):
        g = {k: _m(summary, "grpo_brier", k) for k in ("accuracy", "ece", "mean_confidence", "auroc")}
        ppo = {k: _m(summary, "ppo_v", k) for k in ("accuracy", "ece")}
        if g["ece"] is not None and sft["ece"] is not None and ppo["ece"] is not None:
            if g["ece"] < min(sft["ece"], ppo["ece"]):
                verdict = "Its ECE is below both SFT's and PPO + correctness's (on the means)."
            elif g["ece"] < ppo["ece"]:
                verdict = ("Its ECE is below PPO + correctness's but not below SFT's: the Brier reward did not improve "
                           "on SFT.")
            else:
                verdict = "Its ECE is not below PPO + correctness's: the Brier reward did NOT help here."
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


# ------------------------------------------------------------------------------------------ README table
def readme_table(summary: dict[str, Any]) -> str:
    """The README's headline block, from ``summary.json`` alone: how it was measured (command, seeds, commit,
    machine, load, wall clock), the two held-out tables, the reward models, the ECE differences and in how
    many seeds each claim holds. ``calrl demo`` prints it when it finishes; ``calrl demo --readme-table``
    prints it again from the summary."""
    m = summary["machine"]
    code = summary.get("code") or {}
    commit = (code.get("commit") or "unknown")[:12] + (" with uncommitted changes in calrl/" if code.get("dirty") else "")
    load = summary.get("load_average") or {}
    loads = " -> ".join("/".join(fmt(x, 2) for x in v) for v in (load.get("start"), load.get("end")) if v)
    wall = summary["timings"].get("wall_seconds")
    wall_text = "n/a" if wall is None else f"{wall:.0f} s ({int(wall // 60)} min {int(wall % 60)} s)"
    n_jobs = summary["config"].get("jobs")
    setup = (
        f"Command: `{summary['command']}` (seeds {', '.join(str(s) for s in summary['seeds'])}; {n_jobs} "
        f"process(es) side by side). Commit: {commit}. Machine: {m['processor']}, {m['cpu_count']} CPU cores"
        f"{', GPU ' + m['gpu'] if m.get('gpu') else ', no GPU'}, {m['platform']}, Python {m['python']}, "
        f"torch {m['torch']}. Load average (1/5/15 min) at start -> end: {loads or 'n/a'}. Wall clock: {wall_text}. "
        f"Held-out set: {summary['counts']['eval_items']} questions; mean ± standard deviation over the seeds "
        "(`summary.json`).")
    lines = [
        setup,
        "",
        "Reward model alone (the main comparison):",
        "",
        _md_table(*headline_table(summary)),
        "",
        *(["With the rule-based correctness (verifiable) reward:", "", _md_table(*verifiable_table(summary)), ""]
          if ran(summary, VERIFIABLE_POLICIES) else []),
        "Reward models (held-out correct-vs-wrong pairs, `calrl train-rm`'s probe):",
        "",
        _md_table(*rm_table(summary)),
        "",
        "ECE(method) - ECE(PPO) per seed [calrl compare's 95% interval over held-out items]:",
        "",
        _md_table(*ece_difference_table(summary)),
        "",
        *[f"- {line}" for line in claims_lines(summary)],
    ]
    return "\n".join(lines)


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
    checks = [f"{'PASS' if c['passed'] else ('n/a' if c['passed'] is None else 'FAIL')} (every seed): {line}"
              for c, line in zip(summary["checks"].values(), claims_lines(summary))]
    paras = paragraphs(summary)
    out: list[tuple[str, str, Any]] = [
        ("Setup", "text", intro),
        ("Held-out results", "table", headline_table(summary)),
        *([("Held-out results with the verifiable (rule-based correctness) reward", "table",
            verifiable_table(summary))] if ran(summary, VERIFIABLE_POLICIES) else []),
        ("What the study was expected to show", "list", checks),
        ("ECE difference to vanilla PPO, per seed", "table", ece_difference_table(summary)),
        ("What each method did", "list", [f"**{METHOD_NAMES[p]}.** {paras[p]}" for p in ran(summary) if p in paras]),
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
    "claims_lines",
    "ece_difference_table",
    "fmt",
    "fmt_agg",
    "headline_table",
    "paragraphs",
    "readme_table",
    "render_html",
    "render_markdown",
    "write_report",
]
