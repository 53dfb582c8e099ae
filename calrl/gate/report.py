"""The release-gate report: the typed results of ``calrl compare`` rendered as Markdown and as standalone
HTML, and the summary it prints."""

from __future__ import annotations

import base64
import dataclasses
import html
import math

from calrl.formatting import fmt as _fmt
from calrl.gate.results import (
    AccuracyCheck,
    CompareResult,
    ConfidenceSpread,
    GateResult,
    RefusalCheck,
    Sources,
)

DELTA_ROWS = (("accuracy", "Accuracy"), ("ece", "ECE"), ("brier", "Brier"), ("refusal_rate", "Refusal rate"))


def _signed(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:+.{digits}f}"


def _factor(value: float, infinite: bool) -> str:
    return "infinite" if infinite else _fmt(value, 2)


def _interval(low: float, high: float) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "n/a"
    return f"[{low:+.4f}, {high:+.4f}]"


Table = tuple[str, list[str], list[list[str]]]


def _tables(gate: GateResult) -> list[Table]:
    """(title, header, rows) of every table of the report, shared by both renderings."""
    return [_delta_table(gate), _refusal_table(gate.refusal), _accuracy_table(gate.accuracy),
            _spread_table(gate.confidence_spread), _slice_table(gate)]


def _delta_table(gate: GateResult) -> Table:
    rows = []
    for key, label in DELTA_ROWS:
        d = getattr(gate.deltas, key)
        rows.append([label, _fmt(d.baseline), _fmt(d.candidate), _signed(d.delta), _interval(d.low, d.high),
                     str(d.n_boot)])
    return (
        f"Deltas (candidate - baseline, paired bootstrap {gate.deltas.accuracy.level:.0%} interval on matched items)",
        ["metric", "baseline", "candidate", "delta", "interval", "replicates"],
        rows,
    )


def _refusal_table(ref: RefusalCheck) -> Table:
    status = [name for name, hit in (("collapse", ref.collapsed), ("explosion", ref.exploded)) if hit]
    row = [
        f"{ref.baseline_refusals}/{ref.n} ({_fmt(ref.baseline_rate, 3)})",
        f"{ref.candidate_refusals}/{ref.n} ({_fmt(ref.candidate_rate, 3)})",
        _factor(ref.factor, ref.factor_infinite),
        _factor(ref.rise_factor, ref.rise_factor_infinite),
        _fmt(ref.threshold_factor, 2),
        _fmt(ref.max_refusal_rate, 3),
        f"BLOCKED ({', '.join(status)})" if status else "ok",
    ]
    return (
        "Refusals (blocks when they fall or rise by the factor, or exceed the maximum rate)",
        ["baseline", "candidate", "fell by", "rose by", "factor", "max rate", "status"],
        [row],
    )


def _accuracy_table(acc: AccuracyCheck) -> Table:
    row = [
        _fmt(acc.baseline),
        _fmt(acc.candidate),
        _signed(-acc.drop),
        _interval(acc.interval_low, acc.interval_high),
        _fmt(acc.max_accuracy_drop, 3),
        "BLOCKED" if acc.blocked else "ok",
    ]
    return (
        "Accuracy (blocks a drop above the margin whose paired interval lies below 0)",
        ["baseline", "candidate", "change", "interval", "max drop", "status"],
        [row],
    )


def _spread_table(sp: ConfidenceSpread) -> Table:
    rows = [
        ["std", _fmt(sp.std_baseline), _fmt(sp.std_candidate), _fmt(sp.std_ratio, 3)],
        ["distinct values", _fmt(sp.distinct_baseline), _fmt(sp.distinct_candidate), _fmt(sp.distinct_ratio, 3)],
    ]
    return (
        f"Spread of stated confidence (warns below ratio {_fmt(sp.threshold_ratio, 2)})",
        ["measure", "baseline", "candidate", "ratio"],
        rows,
    )


def _slice_table(gate: GateResult) -> Table:
    rows = [
        [
            s.key,
            s.value,
            str(s.n),
            f"{s.n_scored_baseline}/{s.n_scored_candidate}",
            _fmt(s.ece_baseline),
            _fmt(s.ece_candidate),
            _signed(s.delta),
            _fmt(s.accuracy_baseline, 3),
            _fmt(s.accuracy_candidate, 3),
            s.status,
        ]
        for s in gate.slices
    ]
    config = gate.config
    return (
        (f"ECE by slice (blocks when the rise exceeds {config.slice_ece_threshold:g} "
        f"with >= {config.min_slice_size} scored items on both sides)"),
        ["key", "value", "n", "scored b/c", "ECE base", "ECE cand", "delta", "acc base", "acc cand", "status"],
        rows,
    )


def _summary_lines(gate: GateResult) -> list[str]:
    m = gate.matching
    return [
        (
            f"Matched items: {m.n_matched} (baseline {m.n_baseline}, candidate {m.n_candidate}; "
            f"only in baseline {m.n_only_baseline}, only in candidate {m.n_only_candidate})."
        ),
        (
            f"Missing-confidence policy: {m.missing_policy} (answered without confidence: baseline "
            f"{m.n_missing_confidence_baseline}, candidate {m.n_missing_confidence_candidate})."
        ),
    ]


def _source_items(sources: Sources | None) -> list[tuple[str, str]]:
    return list(dataclasses.asdict(sources).items()) if sources is not None else []


def render_markdown(gate: GateResult, image_name: str, sources: Sources | None = None) -> str:
    """Markdown report; the reliability overlay is linked as ``image_name`` beside it."""
    out = [f"# Release gate: **{gate.verdict.upper()}**", ""]
    if sources:
        out += [f"- {side}: `{src}`" for side, src in _source_items(sources)] + [""]
    out += _summary_lines(gate) + [""]
    for title, items in (("Blocking reasons", gate.reasons), ("Warnings", gate.warnings)):
        out.append(f"## {title}")
        out += [f"- `{f.code}`: {f.message}" for f in items] or ["- none"]
        out.append("")
    out += ["## Reliability (baseline and candidate)", "", f"![reliability overlay]({image_name})", ""]
    for title, header, rows in _tables(gate):
        out += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(row) + " |" for row in rows]
        out.append("")
    return "\n".join(out)


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;"
    "text-align:right}th{background:#f3f3f3}td:first-child,td:nth-child(2){text-align:left}"
    ".pass{color:#2e7d32}.blocked{color:#c62828}code{background:#f5f5f5;padding:0 3px}"
)


def render_html(gate: GateResult, png: bytes, sources: Sources | None = None) -> str:
    """Standalone HTML report with the reliability overlay embedded as base64."""
    e = html.escape
    verdict = gate.verdict
    parts = [
        (
            f"<!doctype html><html><head><meta charset='utf-8'><title>calrl release gate: {e(verdict)}"
            f"</title><style>{_CSS}</style></head><body>"
        ),
        f"<h1>Release gate: <span class='{e(verdict)}'>{e(verdict.upper())}</span></h1>",
    ]
    if sources:
        parts.append(
            "<ul>" + "".join(f"<li>{e(k)}: <code>{e(v)}</code></li>" for k, v in _source_items(sources)) + "</ul>"
        )
    parts += [f"<p>{e(line)}</p>" for line in _summary_lines(gate)]
    for title, items in (("Blocking reasons", gate.reasons), ("Warnings", gate.warnings)):
        parts.append(f"<h2>{title}</h2><ul>")
        parts += [f"<li><code>{e(f.code)}</code>: {e(f.message)}</li>" for f in items] or ["<li>none</li>"]
        parts.append("</ul>")
    b64 = base64.b64encode(png).decode("ascii")
    parts.append(
        f"<h2>Reliability (baseline and candidate)</h2><img alt='reliability overlay' "
        f"src='data:image/png;base64,{b64}' style='max-width:100%'>"
    )
    for title, header, rows in _tables(gate):
        parts.append(
            f"<h2>{e(title)}</h2><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>"
        )
        parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows]
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def summary_lines(result: CompareResult) -> list[str]:
    """What ``calrl compare`` prints: the verdict on the matched items, then every reason and warning."""
    gate, m = result.gate, result.gate.matching
    head = (f"release gate: {gate.verdict.upper()} on {m.n_matched} matched items "
            f"(only baseline {m.n_only_baseline}, only candidate {m.n_only_candidate})")
    lines = [head]
    lines += [f"  blocked [{f.code}]: {f.message}" for f in gate.reasons]
    lines += [f"  warning [{f.code}]: {f.message}" for f in gate.warnings]
    return lines
