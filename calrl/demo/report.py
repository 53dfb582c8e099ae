"""``report.md`` and ``report.html`` of the study, and the README's results block, from ``summary.json`` only.

The tables are here; every number is formatted with :func:`calrl.demo.report_prose.fmt` (so the report equals the
summary), the paragraphs and claim lines come from :mod:`calrl.demo.report_prose` and the plots from
:mod:`calrl.demo.report_plots`.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

from calrl.demo.recipes import (
    ABSTENTION_REFERENCE,
    ECE_COMPARISONS,
    MAIN_POLICIES,
    METHOD_NAMES,
    RL_POLICIES,
    VERIFIABLE_POLICIES,
    accuracy_check,
    ece_check,
)
from calrl.demo.report_plots import plot_ece_per_epoch, plot_reliability_grid, plot_risk_coverage
from calrl.demo.report_prose import (
    CHECK_TEXT,
    SLICE_TEXT,
    claims_lines,
    fmt,
    fmt_agg,
    interval,
    one_seed,
    one_seed_caveat,
    paragraphs,
    points,
    ran,
    stated_note,
)
from calrl.eval.report import METRIC_MEANINGS
from calrl.io import write_text

HEADLINE_COLUMNS = (
    ("accuracy", "accuracy"), ("accuracy_answered", "acc. answered"), ("ece", "ECE"), ("smece", "smooth ECE"),
    ("brier", "Brier"), ("auroc", "AUROC"), ("refusal_rate", "refusal"), ("mean_confidence", "mean conf."),
    ("aurc_all_items", "AURC (all items)"),
)
_EVAL_KEYS = {"smece": "smece.value"}  # the summary's key -> calrl eval's metrics key, where they differ
# the columns that are not calrl eval's metrics but the demo's own (calrl/demo/selective.py), and what they mean
DEMO_MEANINGS = {
    "aurc_all_items": ("area under the risk-coverage curve over all held-out items (lower is better): answers "
                       "ranked by stated confidence, then answers without one, then abstentions, which count as "
                       "wrong; unlike calrl eval's AURC (answers with a confidence only), it compares a policy "
                       "that abstains with one that does not"),
}


def metric_definitions() -> list[str]:
    """One line per column of the held-out tables: ``calrl eval``'s own definition of that metric (the demo's,
    :data:`DEMO_MEANINGS`, for the columns calrl eval does not compute)."""
    return [f"**{label}**: {DEMO_MEANINGS.get(key) or METRIC_MEANINGS[_EVAL_KEYS.get(key, key)]}"
            for key, label in HEADLINE_COLUMNS]


ECE_DIFFERENCE_NOTES = [
    ("**seed k**: ECE(method) - ECE(PPO) in that seed (negative: the method is better calibrated); in brackets "
     "`calrl compare`'s 95% bootstrap interval over the held-out items"),
    "**mean ± std**: over the seeds; **95% interval (seeds)**: paired bootstrap of that mean, the seeds resampled",
    "**holds**: ECE at least 30% below PPO's, seed by seed",
]
ACCURACY_NOTES = [
    ("**difference**: accuracy(method) - accuracy(PPO) over all held-out items (an abstention counts as wrong), in "
     "points; **95% interval**: Tango's score interval for a paired difference (each item answered by both), which "
     "keeps its width when few answers differ (at 120 items, identical answers still give +/- 3.1 points)"),
    ("**pooled**: every seed's answers, each seed's answer to an item one pair (the seeds share the SFT policy and "
     "reward models, so this interval is narrower than one over independent items would be); the claim holds when "
     "its lower bound is above -2 points"),
]
RM_NOTES = [
    ("**preference accuracy**: share of held-out correct-vs-wrong pairs where the reward model scores the correct "
     "answer higher"),
    ("**prefers high conf.**: share of pairs of the same answer stated with a high and with a low confidence where "
     "the reward model scores the high one higher (calibrated: high on correct answers, low on wrong ones)"),
    "**mean r(high)-r(low)**: mean reward of the high-confidence version minus the low-confidence version",
]
RELIABILITY_NOTE = (
    "Each panel is one policy: its scored answers binned by stated confidence (`calrl eval`'s equal-width bins, every "
    "seed's answers pooled). A dot is a bin's mean stated confidence against its accuracy, its area the bin's share "
    "of the answers; on the dashed diagonal a policy is calibrated. The bar is the bin's accuracy; ECE is the "
    "policy's mean over seeds.")
EPOCH_NOTE = ("ECE of the held-out calibration eval that the training callback ran at the end of each epoch "
              "(empty: no eval at that epoch).")
RISK_COVERAGE_NOTE = (
    "Selective prediction over all held-out items: a policy answers the items it states the highest confidence "
    "on first; coverage is the share of items answered at a confidence threshold, the y axis the accuracy of those "
    "answered (1 - risk). Answers without a stated confidence come after every stated one, abstentions last and "
    "counted as wrong, so every curve ends at coverage 1 with the policy's accuracy over all items, and the area "
    "above the curve is its AURC (all items) in the tables (the legend's number).")
ABSTENTION_TABLE_NOTE = (
    "Refusal rate (abstentions / items) per slice in each seed. PPO-C + abstention is rewarded 1 for a right "
    "answer, 0 for a wrong one and the abstention reward for \"I don't know\": it should abstain on the never-seen "
    "people, whose every answer is a guess, and not on the well-known ones (the check above). SFT and PPO + "
    "correctness (the same verifiable reward without abstention) are shown for contrast.")
ABSTENTION_CONTRAST = ("ppo_c_abstain", "sft", ABSTENTION_REFERENCE)  # the rows of the per-seed refusal table
GATE_NOTE = ("`calrl compare`'s verdict on each candidate against its baseline, per seed; a blocked verdict lists the "
             "gate's reasons.")


# ------------------------------------------------------------------------------------------------ tables
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


def ece_difference_table(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per compared method: ECE(method) - ECE(its PPO) per seed (with calrl compare's item-level interval),
    mean ± std over seeds, the paired seed-bootstrap interval of the mean, and the seeds where it holds."""
    seeds = summary["seeds"]
    single = one_seed(summary)  # nothing to average or resample over: the seed's own verdict only
    header = ["method", "vs", *[f"seed {s}" for s in seeds],
              *(["holds in this seed (ECE -30%)"] if single else
                ["mean ± std", "95% interval (seeds)", "holds (ECE -30%)"])]
    rows = []
    for policy, base in ECE_COMPARISONS:
        check = summary["checks"].get(ece_check(policy, base))
        if check is None:
            continue
        diff = check["numbers"]["ece_difference"]
        cells = []
        for d, iv in zip(diff["per_seed"], diff["per_seed_item_interval"]):
            cells.append("n/a" if d is None else fmt(d) + (f" {interval(*iv)}" if iv else ""))
        if single:
            tail = [{True: "yes", False: "no", None: "n/a"}[check["per_seed"][0]]]
        else:
            tail = [fmt_agg(diff), interval(diff["low"], diff["high"]), f"{check['seeds_passed']} of {check['seeds']} seeds"]
        rows.append([METHOD_NAMES[policy], METHOD_NAMES[base], *cells, *tail])
    return header, rows


def accuracy_difference_table(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per compared method: accuracy(method) - accuracy(its PPO) in points with Tango's paired 95% interval, per
    seed and over every seed's answers pooled, and the verdict of "at most 2 points below"."""
    seeds = summary["seeds"]
    header = ["method", "vs", *[f"seed {s}" for s in seeds], *([] if one_seed(summary) else ["pooled"]), "holds"]
    rows = []
    for policy, base in ECE_COMPARISONS:
        check = summary["checks"].get(accuracy_check(policy, base))
        if check is None:
            continue
        cells = [f"{points(iv['difference'])} [{points(iv['low'])}, {points(iv['high'])}]"
                 for iv in (*check["per_seed_interval"], *([] if one_seed(summary) else [check["pooled"]]))]
        verdict = {True: "yes", False: "no", None: f"no verdict (n = {check['pooled']['n']})"}[check["passed"]]
        rows.append([METHOD_NAMES[policy], METHOD_NAMES[base], *cells, verdict])
    return header, rows


def slice_table(summary: dict[str, Any], key: str) -> tuple[list[str], list[list[str]]]:
    slices = summary["slices"]
    header = ["policy", *slices]
    rows = [[summary["policies"][p]["method"],
             *[fmt_agg(summary["policies"][p][key].get(g, {"mean": None})) for g in slices]] for p in ran(summary)]
    return header, rows


def refusal_by_seed_table(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Refusal rate per slice in each seed (abstained / items in brackets) of PPO-C + abstention, and of SFT and
    PPO + correctness for contrast; the mean ± std over seeds in a last column (not for one seed)."""
    seeds, single = summary["seeds"], one_seed(summary)
    header = ["policy", "slice", *[f"seed {s}" for s in seeds], *([] if single else ["mean ± std"])]
    rows = []
    for policy in ran(summary, ABSTENTION_CONTRAST):
        entry = summary["policies"][policy]
        for g in summary["slices"]:
            cells = []
            for s in seeds:
                numbers = entry["per_seed"][str(s)]
                rate = numbers["slice_refusal_rate"].get(g)
                cells.append("n/a" if rate is None else
                             f"{fmt(rate)} ({numbers['slice_n_abstained'].get(g)}/{numbers['slice_n'].get(g)})")
            mean = [] if single else [fmt_agg(entry["slice_refusal_rate"].get(g, {"mean": None}))]
            rows.append([entry["method"], g, *cells, *mean])
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


def machine_text(m: dict[str, Any]) -> str:
    """The machine of a results block in one phrase: CPU model and MKL code path first (they move the numbers),
    then cores, GPU, platform and versions (summaries written before the CPU model was recorded lack it)."""
    cpu = m.get("cpu_model") or m["processor"]
    path = f", MKL_CBWR {m['mkl_cbwr']}, ATen CPU capability {m.get('cpu_capability')}" if "mkl_cbwr" in m else ""
    return (f"{cpu}{path}, {m['cpu_count']} CPU cores{', GPU ' + m['gpu'] if m.get('gpu') else ', no GPU'}, "
            f"{m['platform']}, Python {m['python']}, torch {m['torch']}")


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
        f"process(es) side by side). Commit: {commit}. Machine: {machine_text(m)}. Load average (1/5/15 min) at start -> end: {loads or 'n/a'}. Wall clock: {wall_text}. "
        f"Held-out set: {summary['counts']['eval_items']} questions; "
        + ("the one seed's values" if one_seed(summary) else
           f"mean ± standard deviation over the seeds, which are RL seeds: every seed's RL starts from one SFT policy "
           f"and one set of reward models (seed {summary.get('shared_seed', summary['seeds'][0])})")
        + " (`summary.json`).")
    caveat = one_seed_caveat(summary)
    lines = [
        setup,
        "",
        *([caveat, ""] if caveat else []),
        "Reward model alone (the main comparison):",
        "",
        _md_table(*headline_table(summary)),
        "",
        *(["With the rule-based correctness (verifiable) reward:", "", _md_table(*verifiable_table(summary)), ""]
          if ran(summary, VERIFIABLE_POLICIES) else []),
        *(["Where PPO-C + abstention abstains: refusal rate per slice and seed (abstained/items):", "",
           _md_table(*refusal_by_seed_table(summary)), ""] if "ppo_c_abstain" in summary["policies"] else []),
        ("Selective prediction over all held-out items (abstentions last, counted as wrong): the risk-coverage "
         "curves are `plots/risk_coverage.png` in the study folder (in `report.html`); their areas are the "
         "AURC (all items) column above."),
        "",
        "Reward models (held-out correct-vs-wrong pairs, `calrl train-rm`'s probe):",
        "",
        _md_table(*rm_table(summary)),
        "",
        "ECE(method) - ECE(PPO) per seed [calrl compare's 95% interval over held-out items]:",
        "",
        _md_table(*ece_difference_table(summary)),
        "",
        "Accuracy(method) - accuracy(PPO) in points [Tango's paired 95% interval over held-out items]:",
        "",
        _md_table(*accuracy_difference_table(summary)),
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


def ece_difference_notes(summary: dict[str, Any]) -> list[str]:
    """What the ECE difference table's columns mean (its one-seed shape has no columns over seeds)."""
    if one_seed(summary):
        return [ECE_DIFFERENCE_NOTES[0], ("**holds in this seed**: ECE at least 30% below PPO's in this one seed "
                                          "(a verdict on one seed, not a count over seeds)")]
    return ECE_DIFFERENCE_NOTES


def sections(summary: dict[str, Any], plots: dict[str, str]) -> list[tuple[str | None, str, Any]]:
    """(title, kind, content) in report order; kind is text, table, image or list; a block without a title
    continues the section above it (the definitions under a table)."""
    m = summary["machine"]
    seeds = ", ".join(str(s) for s in summary["seeds"])
    intro = (f"Command: `{summary['command']}`; seeds {seeds}; machine: {machine_text(m)}. Held-out items: {summary['counts']['eval_items']}; RL prompts: "
             f"{summary['counts']['rl_prompts']}. "
             + ("Numbers are this one seed's values." if one_seed(summary) else
                "Numbers are mean ± standard deviation over the seeds, which are RL seeds: every seed's RL starts "
                f"from one SFT policy and one set of reward models (seed {summary.get('shared_seed', summary['seeds'][0])})."))
    caveat = one_seed_caveat(summary)
    scope = f"seed {summary['seeds'][0]} only" if one_seed(summary) else "every seed"
    lines = [CHECK_TEXT.get(key, key) if one_seed(summary) and c.get("scope") != "pooled" else line
             for (key, c), line in zip(summary["checks"].items(), claims_lines(summary))]
    checks = [f"{'PASS' if c['passed'] else ('n/a' if c['passed'] is None else 'FAIL')} "
              f"({'pooled answers' if c.get('scope') == 'pooled' else scope}): {line}"
              for c, line in zip(summary["checks"].values(), lines)]
    paras = paragraphs(summary)
    slices = [f"**{g}**: {SLICE_TEXT[g]}" for g in summary["slices"] if g in SLICE_TEXT]
    out: list[tuple[str | None, str, Any]] = [
        ("Setup", "text", intro),
        *([("What one seed cannot show", "text", caveat)] if caveat else []),
        ("Held-out results", "table", headline_table(summary)),
        (None, "list", metric_definitions()),
        *([("Held-out results with the verifiable (rule-based correctness) reward", "table",
            verifiable_table(summary)), (None, "text", "The columns are those of the table above.")]
          if ran(summary, VERIFIABLE_POLICIES) else []),
        ("What the study was expected to show", "list", checks),
        (None, "text", stated_note(summary)),
        ("ECE difference to vanilla PPO, per seed", "table", ece_difference_table(summary)),
        (None, "list", ece_difference_notes(summary)),
        ("Accuracy difference to vanilla PPO (points)", "table", accuracy_difference_table(summary)),
        (None, "list", ACCURACY_NOTES),
        ("What each method did", "list", [f"**{METHOD_NAMES[p]}.** {paras[p]}" for p in ran(summary) if p in paras]),
        ("Reliability diagrams (bins pooled over seeds)", "image", plots["reliability"]),
        (None, "text", RELIABILITY_NOTE),
        ("Selective prediction: accuracy of the answered against coverage (all held-out items)", "image",
         plots["risk_coverage"]),
        (None, "text", RISK_COVERAGE_NOTE),
        *([("Where PPO-C + abstention abstains: refusal rate per slice, per seed", "table",
            refusal_by_seed_table(summary)), (None, "text", ABSTENTION_TABLE_NOTE)]
          if "ppo_c_abstain" in summary["policies"] else []),
        ("ECE per slice", "table", slice_table(summary, "slice_ece")),
        (None, "text", "Each slice holds the held-out questions about one kind of person (ECE, accuracy and "
                       "refusal as defined above): " + "; ".join(slices) + "."),
        ("Accuracy per slice", "table", slice_table(summary, "slice_accuracy")),
        ("Refusal rate per slice", "table", slice_table(summary, "slice_refusal_rate")),
        ("ECE per epoch (the training runs' calibration evals)", "image", plots["epochs"]),
        ("ECE per epoch, mean over seeds", "table", epoch_table(summary)),
        (None, "text", EPOCH_NOTE),
        ("Reward models: confidence-bias probe (held-out correct-vs-wrong pairs)", "table", rm_table(summary)),
        (None, "list", RM_NOTES),
        ("Release gate (`calrl compare`)", "table", gate_table(summary)),
        (None, "text", GATE_NOTE),
        ("Time per stage", "table", timing_table(summary)),
    ]
    return out


def render_markdown(summary: dict[str, Any], plots: dict[str, str]) -> str:
    lines = ["# calrl demo: calibration study on a small offline world", ""]
    for title, kind, content in sections(summary, plots):
        if title:
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
        if title:
            parts.append(f"<h2>{_inline_md(title)}</h2>")
        if kind == "text":
            parts.append(f"<p>{_inline_md(content)}</p>")
        elif kind == "table":
            parts.append(_html_table(*content))
        elif kind == "image":
            parts.append(f"<img src='{html.escape(content)}' alt='{html.escape(title.replace('`', ''))}'>")
        elif kind == "list":
            parts.append("<ul>" + "".join(f"<li>{_inline_md(item)}</li>" for item in content) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(summary: dict[str, Any], layout: Any) -> Path:
    """Plots, ``report.md`` and ``report.html`` in the study folder; returns the HTML path."""
    plots = {"reliability": plot_reliability_grid(summary, layout.plots / "reliability.png"),
             "epochs": plot_ece_per_epoch(summary, layout.plots / "ece_per_epoch.png"),
             "risk_coverage": plot_risk_coverage(summary, layout.plots / "risk_coverage.png")}
    rel = {k: str(v.relative_to(layout.out)) for k, v in plots.items()}
    write_text(layout.out / "report.md", render_markdown(summary, rel))
    write_text(layout.out / "report.html", render_html(summary, rel))
    return layout.out / "report.html"


__all__ = [
    "CHECK_TEXT",
    "HEADLINE_COLUMNS",
    "RL_POLICIES",
    "claims_lines",
    "ece_difference_table",
    "fmt",
    "fmt_agg",
    "headline_table",
    "paragraphs",
    "plot_ece_per_epoch",
    "plot_reliability_grid",
    "readme_table",
    "refusal_by_seed_table",
    "render_html",
    "render_markdown",
    "write_report",
]
