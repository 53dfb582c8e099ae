"""The evaluation report: ``report.md`` and a standalone ``report.html`` (images inlined as data URIs).

Both are rendered from one list of blocks built from the metrics dict that is written to
``metrics.json``, so every number in the report is that dict's value formatted by :func:`fmt`.
"""

from __future__ import annotations

import base64
import html
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calrl.io import write_text

DECIMALS = 4

# (label, key in the metrics dict, explanation) for the summary table
SUMMARY_ROWS: tuple[tuple[str, str, str], ...] = (
    ("items", "n", "predictions evaluated"),
    ("answered", "n_answered", "items not abstained"),
    ("scored", "n_scored", "answered items with a confidence used by the calibration metrics"),
    ("accuracy", "accuracy", "correct / all items (abstentions count as not correct)"),
    ("accuracy (answered)", "accuracy_answered", "correct / answered items"),
    ("refusal rate", "refusal_rate", "abstentions / all items"),
    ("ECE", "ece", "equal-width bins, L1"),
    ("ECE (equal mass)", "ece_equal_mass", "equal-count bins"),
    ("MCE", "mce", "largest bin gap"),
    ("smooth ECE", "smece.value", "kernel-smoothed, no bins"),
    ("smooth ECE, bootstrap low", "smece.low", "lower end of the bootstrap interval"),
    ("smooth ECE, bootstrap high", "smece.high", "upper end of the bootstrap interval"),
    ("Brier", "brier", "mean (confidence - correct)^2"),
    ("AUROC", "auroc", "confidence vs correctness, correct = positive"),
    ("AURC", "aurc", "area under the risk-coverage curve (lower is better)"),
    ("mean confidence", "mean_confidence", "over scored answers"),
    ("hedged error rate", "hedged_error_rate", "wrong answers that hedged or stated < 0.5"),
    ("overconfident error rate", "overconfident_error_rate", "wrong answers stated >= 0.9"),
    ("missing confidence", "missing_confidence.count", "answered items without a confidence"),
)
SLICE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("n", "n"), ("accuracy", "accuracy"), ("refusal", "refusal_rate"), ("ECE", "ece"),
    ("smooth ECE", "smece.value"), ("Brier", "brier"), ("AUROC", "auroc"),
    ("mean conf.", "mean_confidence"), ("overconf. err.", "overconfident_error_rate"),
)


def fmt(value: Any, digits: int = DECIMALS) -> str:
    """How every number appears in a report: ints as is, floats to ``digits`` decimals, None as ``n/a``."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, numbers.Real):  # float, numpy scalars
        return f"{float(value):.{digits}f}"
    return str(value)


def lookup(metrics: Mapping[str, Any], dotted: str) -> Any:
    """``lookup(m, "smece.value") == m["smece"]["value"]``; None when a level is absent."""
    value: Any = metrics
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    path: Path
    alt: str


@dataclass
class Section:
    title: str
    blocks: list[str | Table | Image] = field(default_factory=list)


def build_sections(metrics: Mapping[str, Any], images: Mapping[str, str | os.PathLike[str]]) -> list[Section]:
    """The report's content, format-independent."""
    sections: list[Section] = []

    summary = Section("Summary")
    n_abst = metrics.get("n_abstained", 0)
    summary.blocks.append(
        f"{fmt(metrics.get('n'))} items, {fmt(metrics.get('n_answered'))} answered, {fmt(n_abst)} abstained. "
        f"Calibration metrics use the {fmt(metrics.get('n_scored'))} answered items with a confidence "
        f"(missing-confidence policy: {lookup(metrics, 'missing_confidence.policy')}).")
    summary.blocks.append(Table(["metric", "key", "value", "meaning"],
                                [[label, f"`{key}`", fmt(lookup(metrics, key)), meaning]
                                 for label, key, meaning in SUMMARY_ROWS]))
    sections.append(summary)

    for name, path in images.items():
        sections.append(Section(name, [Image(Path(path), name)]))

    sources = metrics.get("confidence_sources") or {}
    if sources:
        sections.append(Section("Where confidences came from", [
            ("`given`: the file's confidence field; `explicit`: a statement such as \"Confidence: 8\"; "
            "`hedge`: a hedge phrase mapped through the lexicon; `missing`: none found; "
            "`abstained`: abstentions carry no confidence."),
            Table(["source", "count"], [[f"`{k}`", fmt(v)] for k, v in sources.items()])]))

    bins = metrics.get("reliability") or []
    if bins:
        rows = [[f"[{fmt(b['lower'])}, {fmt(b['upper'])}{']' if i == len(bins) - 1 else ')'}", fmt(b["count"]),
                 fmt(b["mean_confidence"]), fmt(b["accuracy"]),
                 fmt(None if b["count"] == 0 else b["mean_confidence"] - b["accuracy"])]
                for i, b in enumerate(bins)]
        sections.append(Section("Reliability bins", [
            Table(["bin", "count", "mean confidence", "accuracy", "gap (conf. - acc.)"], rows)]))

    consistency = metrics.get("consistency")
    if consistency:
        sections.append(Section("Consistency across samples", [
            (f"{fmt(consistency['n_items'])} answered items with samples "
            f"({fmt(consistency['mean_samples'])} samples each on average). Answers are clustered by "
            "normalised text or numeric value; AUROC rates each signal as a predictor of correctness "
            "(entropy negated)."),
            Table(["signal", "mean", "AUROC"], [
                ["agreement rate", fmt(consistency["agreement_rate"]["mean"]),
                 fmt(consistency["agreement_rate"]["auroc"])],
                ["semantic entropy", fmt(consistency["semantic_entropy"]["mean"]),
                 fmt(consistency["semantic_entropy"]["auroc"])],
            ])]))

    slices = metrics.get("slices") or {}
    if slices:
        min_size = lookup(metrics, "settings.min_slice_size")
        note = (f"Slices with fewer than {fmt(min_size)} items are flagged small; their numbers are noisy."
                if min_size is not None else "Small slices are flagged; their numbers are noisy.")
        rows = []
        for key, values in slices.items():
            for value, m in values.items():
                rows.append([key, value, "small" if m.get("small") else ""]
                            + [fmt(lookup(m, k)) for _, k in SLICE_COLUMNS])
        sections.append(Section("Slices", [note, Table(["slice", "value", "flag"]
                                                       + [c for c, _ in SLICE_COLUMNS], rows)]))

    settings = metrics.get("settings")
    if settings:
        sections.append(Section("Settings", [
            Table(["setting", "value"], [[f"`{k}`", fmt(v)] for k, v in settings.items()])]))
    return sections


def render_markdown(title: str, sections: Sequence[Section], out_dir: Path) -> str:
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Table):
                lines.append("| " + " | ".join(block.header) + " |")
                lines.append("|" + "|".join("---" for _ in block.header) + "|")
                lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            elif isinstance(block, Image):
                lines.append(f"![{block.alt}]({_relative(block.path, out_dir)})")
            else:
                lines.append(block)
            lines.append("")
    return "\n".join(lines)


def render_html(title: str, sections: Sequence[Section]) -> str:
    parts = [(f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
             f"</title>\n<style>{_CSS}</style></head><body>\n<h1>{html.escape(title)}</h1>")]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        for block in section.blocks:
            if isinstance(block, Table):
                head = "".join(f"<th>{html.escape(h)}</th>" for h in block.header)
                body = "".join("<tr>" + "".join(f"<td>{_html_cell(c)}</td>" for c in row) + "</tr>"
                               for row in block.rows)
                parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif isinstance(block, Image):
                data = base64.b64encode(block.path.read_bytes()).decode("ascii")
                parts.append(f"<img alt=\"{html.escape(block.alt)}\" src=\"data:image/png;base64,{data}\">")
            else:
                parts.append(f"<p>{_html_cell(block)}</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(metrics: Mapping[str, Any], out_dir: str | os.PathLike[str], title: str,
                 images: Mapping[str, str | os.PathLike[str]] | None = None) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into ``out_dir``; returns their paths.

    ``images`` maps a section title to a PNG; by default ``out_dir/reliability.png`` when it exists.
    """
    out = Path(out_dir)
    if images is None:
        images = {"Reliability diagram": out / "reliability.png"} if (out / "reliability.png").exists() else {}
    sections = build_sections(metrics, images)
    md_path, html_path = out / "report.md", out / "report.html"
    write_text(md_path, render_markdown(title, sections, out))
    write_text(html_path, render_html(title, sections))
    return md_path, html_path


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _html_cell(text: str) -> str:
    """Escape, then render inline `code` spans."""
    pieces = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))


def _relative(path: Path, out_dir: Path) -> str:
    try:
        return path.resolve().relative_to(out_dir.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:960px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;border-bottom:2px solid #1f5fa8;padding-bottom:.2em}
h2{font-size:1.2em;margin-top:1.6em;color:#1f5fa8}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:left}
th{background:#f3f6fa}tr:nth-child(even) td{background:#fafafa}
td:nth-child(n+3){font-variant-numeric:tabular-nums}
code{background:#f3f3f3;padding:0 .25em;border-radius:3px;font-size:.9em}
img{max-width:100%;height:auto}
"""
