"""The W&B panels of the calibration evals made during training, beside their scalars.

Per eval, :class:`WandbPanels` adds rows to tables that accumulate over the run, and each eval logs the
whole table so far (W&B charts a table from the run's latest value of its key, so one panel shows every
eval, and a workspace with several runs overlays their curves):

- ``eval/reliability_curve``: a line chart (``wandb.plot.line``) of accuracy against mean stated confidence,
  one point per non-empty confidence bin and one line per ``series`` (``"<run name>: <label>"``, so the
  curves of two runs stay apart when a workspace shows both), with the diagonal of perfect calibration as
  a line of its own; its table (``eval/reliability_curve_table``) has the columns
  :data:`RELIABILITY_CURVE_COLUMNS`;
- ``eval/confidently_wrong``: the N most confident wrong answers of each eval (columns
  :data:`CONFIDENTLY_WRONG_COLUMNS`).

:func:`summary_panel` gives the run summary (``calibration/...``): the final eval's ECE, accuracy and
refusal rate, the eval with the lowest ECE (its epoch, step, accuracy and refusal rate) and the highest
accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from calrl.callbacks.eval_files import parse_label
from calrl.eval.report import N_WRONG_EXAMPLES, confidently_wrong

RELIABILITY_CURVE_KEY = "eval/reliability_curve"
RELIABILITY_CURVE_COLUMNS = ("series", "label", "epoch", "global_step", "bin_lower", "bin_upper", "bin_center",
                             "mean_confidence", "accuracy", "count")
PERFECT_CALIBRATION = "perfect calibration"
CONFIDENTLY_WRONG_KEY = "eval/confidently_wrong"
CONFIDENTLY_WRONG_COLUMNS = ("label", "epoch", "global_step", "rank", "id", "question", "response", "answer",
                             "reference", "confidence", "slice")
SUMMARY_PREFIX = "calibration"
SUMMARY_METRICS = ("ece", "accuracy", "refusal_rate")


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def eval_epoch(label: str, epoch: float | None) -> float | None:
    """The epoch an eval stands for: k for ``epoch-k`` (also a partial last epoch), else the trainer's epoch."""
    parsed = parse_label(label)
    if parsed is not None and parsed[0] == "epoch":
        return float(parsed[1])
    return None if epoch is None else float(epoch)


def reliability_curve_rows(label: str, epoch: float | None, global_step: int,
                           bins: Sequence[dict[str, Any]]) -> list[list[Any]]:
    """One row per non-empty bin of ``metrics["reliability"]`` (empty bins have no point on the curve)."""
    rows = []
    for b in bins:
        if not b.get("count"):
            continue
        rows.append([label, eval_epoch(label, epoch), global_step, b["lower"], b["upper"],
                     (b["lower"] + b["upper"]) / 2, b["mean_confidence"], b["accuracy"], b["count"]])
    return rows


def perfect_calibration_rows(bins: Sequence[dict[str, Any]]) -> list[list[Any]]:
    """The diagonal accuracy = confidence across the binned range, as a line of its own."""
    if not bins:
        return []
    lo, hi = bins[0]["lower"], bins[-1]["upper"]
    return [[PERFECT_CALIBRATION, None, None, x, x, x, x, x, None] for x in (lo, hi)]


def confidently_wrong_rows(label: str, epoch: float | None, global_step: int, records: Sequence[Any],
                           resolved: Sequence[Any], n: int) -> list[list[Any]]:
    """The ``n`` wrong answers with the highest stated confidence, most confident first, as the eval report
    picks them (:func:`calrl.eval.report.confidently_wrong`: abstentions and answers without a confidence
    are never listed). ``records`` are the generated items (for the question), ``resolved`` the same items
    parsed and graded."""
    if n <= 0:
        return []
    questions = {rec.id: rec.question for rec in records}
    rows = []
    for rank, res in enumerate(confidently_wrong(resolved, n), start=1):
        reference = " | ".join(res.reference or [])
        slices = ", ".join(f"{k}={v}" for k, v in sorted(res.slice.items()))
        rows.append([label, eval_epoch(label, epoch), global_step, rank, str(res.id), questions.get(res.id) or "",
                     res.response or "", res.answer or "", reference, float(res.confidence), slices])
    return rows


class WandbPanels:
    """The rows of the accumulating W&B tables of one training run."""

    def __init__(self, n_confidently_wrong: int = N_WRONG_EXAMPLES) -> None:
        self.n_confidently_wrong = n_confidently_wrong
        self.curve_rows: list[list[Any]] = []
        self.wrong_rows: list[list[Any]] = []

    def add(self, result: Any) -> None:
        """Add one eval (an object with ``label``, ``epoch``, ``step``, ``metrics``, ``records``, ``resolved``)."""
        bins = result.metrics.get("reliability") or []
        if not self.curve_rows:
            self.curve_rows.extend(perfect_calibration_rows(bins))
        self.curve_rows.extend(reliability_curve_rows(result.label, result.epoch, result.step, bins))
        self.wrong_rows.extend(confidently_wrong_rows(result.label, result.epoch, result.step, result.records,
                                                      result.resolved, self.n_confidently_wrong))

    def payload(self, wandb: Any, run_name: str) -> dict[str, Any]:
        """The chart and tables to pass to ``run.log`` (the whole run so far) of the run named ``run_name``."""
        rows = [[r[0] if r[0] == PERFECT_CALIBRATION else f"{run_name}: {r[0]}", *r] for r in self.curve_rows]
        table = wandb.Table(columns=list(RELIABILITY_CURVE_COLUMNS), data=rows)
        out = {RELIABILITY_CURVE_KEY: wandb.plot.line(
            table, x="mean_confidence", y="accuracy", stroke="series",
            title="Reliability curve per eval: accuracy vs mean stated confidence")}
        if self.n_confidently_wrong > 0:
            out[CONFIDENTLY_WRONG_KEY] = wandb.Table(columns=list(CONFIDENTLY_WRONG_COLUMNS),
                                                     data=[list(r) for r in self.wrong_rows])
        return out


def summary_panel(history: Sequence[Any]) -> dict[str, Any]:
    """``calibration/...`` run-summary values from the evals so far (objects with ``label``, ``epoch``,
    ``step``, ``metrics``): the final eval, the eval with the lowest ECE (earliest on ties) and the one
    with the highest accuracy. A final metric that is unknown is NaN; the best-eval keys appear once an eval
    has a finite ECE (accuracy). The eval before training (step 0) is the starting policy, not one the run
    produced: it is never the best."""
    if not history:
        return {}
    p = SUMMARY_PREFIX
    last = history[-1]
    # NaN (W&B stores null), not left out: the summary keeps a key's old value when an update leaves it out
    out: dict[str, Any] = {f"{p}/final_{k}": _finite(last.metrics.get(k)) for k in SUMMARY_METRICS}
    out.update({k: math.nan for k, v in out.items() if v is None})
    out.update({f"{p}/final_label": last.label, f"{p}/final_epoch": eval_epoch(last.label, last.epoch),
                f"{p}/final_global_step": last.step, f"{p}/n_evals": len(history)})
    trained = [r for r in history if r.step > 0]
    scored = [r for r in trained if _finite(r.metrics.get("ece")) is not None]
    if scored:
        best = min(scored, key=lambda r: _finite(r.metrics["ece"]))
        out.update({f"{p}/best_ece": _finite(best.metrics["ece"]),
                    f"{p}/best_ece_epoch": eval_epoch(best.label, best.epoch),
                    f"{p}/best_ece_global_step": best.step, f"{p}/best_ece_label": best.label,
                    f"{p}/best_ece_accuracy": _finite(best.metrics.get("accuracy")),
                    f"{p}/best_ece_refusal_rate": _finite(best.metrics.get("refusal_rate"))})
    accurate = [r for r in trained if _finite(r.metrics.get("accuracy")) is not None]
    if accurate:
        best = max(accurate, key=lambda r: _finite(r.metrics["accuracy"]))
        out.update({f"{p}/best_accuracy": _finite(best.metrics["accuracy"]),
                    f"{p}/best_accuracy_epoch": eval_epoch(best.label, best.epoch)})
    return {k: v for k, v in out.items() if v is not None}
