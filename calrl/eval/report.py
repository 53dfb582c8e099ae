"""The evaluation report: ``report.md`` and a standalone ``report.html`` (images inlined as data URIs).

Both are rendered from one list of blocks built from the results written to ``metrics.json``
(:class:`~calrl.eval.schema.EvalResults`), so every number in the report is a value of that file
formatted by :func:`~calrl.formatting.fmt`. The report opens with what was evaluated and a one-line
verdict, and lists the answers that were most confidently wrong.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import heapq
import html
import itertools
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any

from calrl.data.records import ResolvedRecord
from calrl.eval.schema import EvalResults, as_results, lookup
from calrl.formatting import fmt
from calrl.io import write_text

__all__ = ["METRIC_MEANINGS", "build_sections", "confidently_wrong", "fmt", "lookup", "render_html", "render_markdown",
           "verdict", "write_report"]

WELL_CALIBRATED_ECE = 0.05  # the verdict calls a model well calibrated at or below this ECE
N_WRONG_EXAMPLES = 10  # the report lists this many most confidently wrong answers
EXCERPT_CHARS = 160  # a response longer than this is cut in the examples table

# (label, key in the metrics dict, explanation) for the summary table: the one home of the metrics' one-line
# definitions (the demo's report shows them too, through METRIC_MEANINGS)
SUMMARY_ROWS: tuple[tuple[str, str, str], ...] = (
    ("items", "n", "predictions evaluated"),
    ("answered", "n_answered", "items not abstained"),
    ("scored", "n_scored", "answered items with a confidence used by the calibration metrics"),
    ("accuracy", "accuracy", "correct / all items (abstentions count as not correct)"),
    ("accuracy (answered)", "accuracy_answered", "correct / answered items"),
    ("refusal rate", "refusal_rate", "abstentions / all items"),
    ("ECE", "ece", ("expected calibration error: |accuracy - mean stated confidence| per equal-width confidence "
                   "bin, averaged with the bins' item counts as weights (0 = calibrated)")),
    ("ECE (equal mass)", "ece_equal_mass", "equal-count bins"),
    ("MCE", "mce", "largest bin gap"),
    ("smooth ECE", "smece.value", ("ECE without bins: correct - stated confidence, smoothed along confidence with a "
                                  "Gaussian kernel, |.| integrated over confidence (Blasiok & Nakkiran 2023)")),
    ("smooth ECE, bootstrap low", "smece.low", "lower end of the bootstrap interval"),
    ("smooth ECE, bootstrap high", "smece.high", "upper end of the bootstrap interval"),
    ("Brier", "brier", "mean (confidence - correct)^2, correct = 1 or 0 (lower is better)"),
    ("AUROC", "auroc", ("chance that a correct answer states a higher confidence than a wrong one (ties count half; "
                       "0.5: no signal)")),
    ("AURC", "aurc", "area under the risk-coverage curve (lower is better)"),
    ("mean confidence", "mean_confidence", "mean stated confidence over scored answers"),
    ("hedged error rate", "hedged_error_rate", "wrong answers that hedged or stated < 0.5"),
    ("overconfident error rate", "overconfident_error_rate", "wrong answers stated >= 0.9"),
    ("missing confidence", "missing_confidence.count", "answered items without a confidence"),
)
#: metrics key -> its one-line definition (the third column of SUMMARY_ROWS)
METRIC_MEANINGS: dict[str, str] = {key: meaning for _, key, meaning in SUMMARY_ROWS}
SLICE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("n", "n"), ("accuracy", "accuracy"), ("refusal", "refusal_rate"), ("ECE", "ece"),
    ("smooth ECE", "smece.value"), ("Brier", "brier"), ("AUROC", "auroc"),
    ("mean conf.", "mean_confidence"), ("overconf. err.", "overconfident_error_rate"),
)


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    path: Path
    alt: str


@dataclass
class Lead:
    """A sentence shown in bold (the verdict)."""

    text: str


@dataclass
class Section:
    title: str
    blocks: list[str | Lead | Table | Image] = field(default_factory=list)


def build_sections(metrics: EvalResults | Mapping[str, Any], images: Mapping[str, str | os.PathLike[str]],
                   examples: Sequence[ResolvedRecord] = (), groups: Sequence[int] | None = None) -> list[Section]:
    """The report's content, format-independent; ``examples`` are the resolved items (for the list of the
    most confidently wrong answers; ``groups``: see :func:`confidently_wrong`)."""
    results = as_results(metrics)
    sections = [_summary(results)]
    for name, path in images.items():
        sections.append(Section(name, [Image(Path(path), name)]))
    wrong = confidently_wrong(examples, groups=groups)
    if wrong:
        sections.append(_wrong_examples(wrong))
    sections += [s for s in (_sources(results), _bins(results), _consistency(results), _slices(results))
                 if s is not None]
    sections.append(_run(results))
    return sections


def verdict(metrics: EvalResults | Mapping[str, Any]) -> str:
    """One line on the calibration of stated confidence, from the numbers of ``metrics``."""
    r = as_results(metrics)
    scored_bins = [b for b in r.reliability if b.count]
    if r.ece is None or r.mean_confidence is None or not scored_bins:
        return (f"No verdict on calibration: none of the {fmt(r.n_answered)} answered items has a confidence "
                f"({fmt(r.n_abstained)} abstained, {fmt(r.missing_confidence.count)} answered without one).")
    n = sum(b.count for b in scored_bins)
    accuracy = sum(b.count * (b.accuracy or 0.0) for b in scored_bins) / n
    stated = (f"mean stated confidence {fmt(r.mean_confidence, 2)} against accuracy {fmt(accuracy, 2)} "
              f"on the {fmt(n)} scored answers, ECE {fmt(r.ece, 3)}")
    if r.ece <= WELL_CALIBRATED_ECE:
        return f"Well calibrated (ECE at most {fmt(WELL_CALIBRATED_ECE, 2)}): {stated}."
    kind = "Overconfident" if r.mean_confidence > accuracy else "Underconfident"
    tail = ""
    if kind == "Overconfident" and r.overconfident_error_rate:
        tail = f"; {fmt(100 * r.overconfident_error_rate, 0)}% of wrong answers stated 0.9 or more"
    return f"{kind}: {stated}{tail}."


def confidently_wrong(records: Sequence[ResolvedRecord], k: int = N_WRONG_EXAMPLES,
                      groups: Sequence[int] | None = None) -> list[ResolvedRecord]:
    """The ``k`` wrong answers with the highest stated confidence (ties by id). ``groups``: each record's group,
    named by its first record, records of a group equal but for the id (:func:`calrl.eval.resolving.group_records`):
    then only the records of groups that can be listed are read."""
    if groups is not None:
        records = _listable(records, k, groups)
    wrong = [r for r in records if not r.abstained and not r.correct and r.confidence is not None]
    if 0 < k < len(wrong) // 4:  # only those at or above the k-th highest confidence can be listed: sort those
        values = list(map(attrgetter("confidence"), wrong))
        if not any(map(math.isnan, values)):
            cut = heapq.nlargest(k, values)[-1]
            wrong = [r for r, value in zip(wrong, values, strict=True) if value >= cut]
    return sorted(wrong, key=lambda r: (-(r.confidence or 0.0), r.id))[:k]


def _listable(records: Sequence[ResolvedRecord], k: int, groups: Sequence[int]) -> Sequence[ResolvedRecord]:
    """The records of the wrong groups whose confidence reaches the ``k``-th highest of the wrong records."""
    stated = {g: r.confidence for g in dict.fromkeys(groups)
              if not (r := records[g]).abstained and not r.correct and r.confidence is not None}
    if any(map(math.isnan, stated.values())):
        return records
    sizes, cut, counted = collections.Counter(groups), math.inf, 0
    for group in sorted(stated, key=stated.__getitem__, reverse=True):
        if counted >= k:
            break
        cut, counted = stated[group], counted + sizes[group]
    listed = {group for group, confidence in stated.items() if confidence >= cut}
    return [records[i] for i in itertools.compress(range(len(groups)), map(listed.__contains__, groups))]


def _summary(r: EvalResults) -> Section:
    summary = Section("Summary")
    summary.blocks.append(Lead(verdict(r)))
    summary.blocks.append(_what_was_evaluated(r))
    summary.blocks.append(
        f"{fmt(r.n)} items, {fmt(r.n_answered)} answered, {fmt(r.n_abstained)} abstained. "
        f"Calibration metrics use the {fmt(r.n_scored)} answered items with a confidence "
        f"(missing-confidence policy: {r.missing_confidence.policy}).")
    summary.blocks.append(Table(["metric", "key", "value", "standard error", "meaning"],
                                [[label, f"`{key}`", fmt(lookup(r, key)), _stderr(r, key), meaning]
                                 for label, key, meaning in SUMMARY_ROWS]))
    return summary


def _stderr(r: EvalResults, key: str) -> str:
    """The metric's standard error (``stderr.<key>``) when one is recorded, else empty."""
    if r.stderr is None or not hasattr(r.stderr, key):
        return ""
    return fmt(getattr(r.stderr, key))


def _what_was_evaluated(r: EvalResults) -> str:
    c = r.config
    if c is None or not (c.model or c.predictions):
        return f"Source: `{r.source}`." if r.source else "Source: not recorded."
    if c.model:
        text = f"Model: `{c.model}`" + (f" with adapter `{c.adapter}`" if c.adapter else "")
        text += f", on `{c.dataset}`" + (f" (split `{c.split}`)" if c.split else "")
        if c.limit is not None:
            text += f", {fmt(c.limit)} items" + (f" (stratified sample, seed {fmt(c.sample_seed)})"
                                                  if c.sample_seed is not None else " (the first ones)")
        variant = (", reasons first" if c.reasons_first else "") + (", misleading hint" if c.distractor else "")
        return text + f"; prompt: {c.prompt_style}{variant}, confidence scale {c.prompt_scale}."
    return f"Predictions: `{c.predictions}`."


def _wrong_examples(wrong: Sequence[ResolvedRecord]) -> Section:
    rows = [[f"`{r.id}`", fmt(r.confidence, 2), _excerpt(r.answer), _excerpt(" / ".join(r.reference or [])),
             _excerpt(r.response)] for r in wrong]
    return Section(f"Most confidently wrong answers (top {len(wrong)})", [
        "Wrong answers sorted by stated confidence, highest first: where the model's voice misleads most.",
        Table(["id", "confidence", "parsed answer", "reference", "response"], rows)])


def _excerpt(text: str | None) -> str:
    if text is None:
        return "n/a"
    flat = " ".join(text.split()).replace("`", "'")
    return flat if len(flat) <= EXCERPT_CHARS else flat[:EXCERPT_CHARS - 3] + "..."


def _sources(r: EvalResults) -> Section | None:
    if not r.confidence_sources:
        return None
    return Section("Where confidences came from", [
        ("`given`: the file's confidence field; `explicit`: a statement such as \"Confidence: 8\"; "
         "`hedge`: a hedge phrase mapped through the lexicon; `missing`: none found; "
         "`abstained`: abstentions carry no confidence."),
        Table(["source", "count"], [[f"`{k}`", fmt(v)] for k, v in r.confidence_sources.items()])])


def _bins(r: EvalResults) -> Section | None:
    bins = r.reliability
    if not bins:
        return None
    rows = [[f"[{fmt(b.lower)}, {fmt(b.upper)}{']' if i == len(bins) - 1 else ')'}", fmt(b.count),
             fmt(b.mean_confidence), fmt(b.accuracy),
             fmt(None if not b.count or b.mean_confidence is None or b.accuracy is None
                 else b.mean_confidence - b.accuracy)]
            for i, b in enumerate(bins)]
    return Section("Reliability bins", [
        Table(["bin", "count", "mean confidence", "accuracy", "gap (conf. - acc.)"], rows)])


def _consistency(r: EvalResults) -> Section | None:
    c = r.consistency
    if c is None:
        return None
    return Section("Consistency across samples", [
        (f"{fmt(c.n_items)} answered items with samples ({fmt(c.mean_samples)} samples each on average). "
         "Answers are clustered by normalised text or numeric value; AUROC rates each signal as a predictor "
         "of correctness (entropy negated)."),
        Table(["signal", "mean", "AUROC"], [
            ["agreement rate", fmt(c.agreement_rate.mean), fmt(c.agreement_rate.auroc)],
            ["semantic entropy", fmt(c.semantic_entropy.mean), fmt(c.semantic_entropy.auroc)],
        ])])


def _slices(r: EvalResults) -> Section | None:
    if not r.slices:
        return None
    note = (f"Slices with fewer than {fmt(r.settings.min_slice_size)} items are flagged small; their numbers "
            "are noisy.")
    rows = [[key, value, "small" if m.small else ""] + [fmt(lookup(m, k)) for _, k in SLICE_COLUMNS]
            for key, values in r.slices.items() for value, m in values.items()]
    return Section("Slices", [note, Table(["slice", "value", "flag"] + [c for c, _ in SLICE_COLUMNS], rows)])


def _run(r: EvalResults) -> Section:
    """Settings, run configuration and versions: what it takes to run the evaluation again."""
    rows = [[f"`settings.{k}`", fmt(v)] for k, v in dataclasses.asdict(r.settings).items()]
    for block, value in (("config", r.config), ("versions", r.versions)):
        if value is None:
            continue
        for k, v in dataclasses.asdict(value).items():
            if isinstance(v, dict):
                rows += [[f"`{block}.{k}.{kk}`", fmt(vv)] for kk, vv in v.items()]
            elif v is not None:
                rows.append([f"`{block}.{k}`", fmt(v)])
    return Section("Settings and versions", [Table(["setting", "value"], rows)])


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
            elif isinstance(block, Lead):
                lines.append(f"**{block.text}**")
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
            elif isinstance(block, Lead):
                parts.append(f"<p><strong>{_html_cell(block.text)}</strong></p>")
            elif isinstance(block, Image):
                data = base64.b64encode(block.path.read_bytes()).decode("ascii")
                parts.append(f"<img alt=\"{html.escape(block.alt)}\" src=\"data:image/png;base64,{data}\">")
            else:
                parts.append(f"<p>{_html_cell(block)}</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(metrics: EvalResults | Mapping[str, Any], out_dir: str | os.PathLike[str], title: str,
                 images: Mapping[str, str | os.PathLike[str]] | None = None,
                 examples: Sequence[ResolvedRecord] = (), groups: Sequence[int] | None = None) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into ``out_dir``; returns their paths.

    ``images`` maps a section title to a PNG; by default ``out_dir/reliability.png`` when it exists.
    ``examples`` are the resolved items, from which the most confidently wrong answers are listed (``groups``:
    see :func:`confidently_wrong`).
    """
    out = Path(out_dir)
    if images is None:
        images = {"Reliability diagram": out / "reliability.png"} if (out / "reliability.png").exists() else {}
    sections = build_sections(metrics, images, examples, groups)
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
