"""The recalibration report of ``calrl recalibrate fit``: calibrator.json's content as Markdown and HTML."""

from __future__ import annotations

import base64
import html
import json
from typing import Any

from calrl.formatting import fmt

# keys calrl recalibrate adds to the calibrator's own dict (Calibrator.to_dict) in calibrator.json
DOC_KEYS = ("fit", "evaluation")
# key of the metrics dict -> label in the report
SUMMARY_LABELS = {
    "n_scored": "scored items",
    "accuracy_answered": "accuracy (answered)",
    "ece": "ECE",
    "mce": "MCE",
    "brier": "Brier",
    "auroc": "AUROC",
    "mean_confidence": "mean confidence",
    "overconfident_error_rate": "overconfident error rate",
}
SUMMARY_KEYS = tuple(SUMMARY_LABELS)


def warnings_of(doc: dict[str, Any]) -> list[str]:
    """The calibrator's own warnings (e.g. a temperature on its bound) and the evaluation's."""
    return list(doc.get("warnings") or []) + list(doc.get("evaluation", {}).get("warnings") or [])


def _report_rows(doc: dict[str, Any]) -> list[list[str]]:
    b, a = doc["evaluation"]["before"], doc["evaluation"]["after"]
    return [[label, fmt(b.get(k)), fmt(a.get(k))] for k, label in SUMMARY_LABELS.items()]


def _report_intro(doc: dict[str, Any]) -> list[str]:
    fit, ev = doc["fit"], doc["evaluation"]
    split = ev["split"]
    where = (
        f"a {split['holdout_fraction']:.0%} holdout of the same file (seed {split['seed']})"
        if split["kind"] == "holdout"
        else f"the separate file `{split['eval_predictions']}`"
    )
    return [
        (
            f"Method: {doc['method']}; fitted on {fit['n_fit']} answered items with a confidence from "
            f"`{fit['predictions']}` (ECE on the fit split {fmt(fit['before']['ece'])} -> "
            f"{fmt(fit['after']['ece'])})."
        ),
        (
            f"Evaluated on {ev['n_eval']} separate items: {where}. Answers are never changed; only "
            "the stated confidence is mapped."
        ),
    ] + [f"Warning: {w}" for w in warnings_of(doc)]


def render_markdown(doc: dict[str, Any], png_name: str) -> str:
    lines = ["# Recalibration report", ""] + _report_intro(doc) + [""]
    lines += ["| metric (separate split) | before | after |", "|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in _report_rows(doc)]
    params = json.dumps({k: v for k, v in doc.items() if k not in DOC_KEYS}, default=str)
    lines += ["", f"![reliability before and after]({png_name})", "", "## Calibrator", "", f"`{params}`", ""]
    return "\n".join(lines)


def render_html(doc: dict[str, Any], png: bytes) -> str:
    e = html.escape
    rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in _report_rows(doc))
    intro = "".join(f"<p>{e(p)}</p>" for p in _report_intro(doc))
    params = e(json.dumps({k: v for k, v in doc.items() if k not in DOC_KEYS}, default=str))
    b64 = base64.b64encode(png).decode("ascii")
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>calrl recalibration report</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:900px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}</style></head><body>"
        f"<h1>Recalibration report</h1>{intro}<table><tr><th>metric (separate split)</th><th>before</th>"
        f"<th>after</th></tr>{rows}</table><img alt='reliability before and after' "
        f"src='data:image/png;base64,{b64}' style='max-width:100%'><h2>Calibrator</h2><code>{params}</code>"
        "</body></html>"
    )
