"""The files of the calibration evals made during training: one folder per eval, written and read here.

:class:`~calrl.callbacks.calibration_eval.CalibrationEvalCallback` writes, for every eval, the folder
``<output_dir>/calibration_eval/<label>`` (``label`` is ``epoch-<k>`` or ``step-<n>``) holding

- ``predictions.jsonl``: the generated answers, in the schema ``calrl eval --predictions`` reads;
- ``metrics.json``: what :func:`calrl.eval.runner.compute_metrics` returns, plus a ``training`` entry
  (``label``, ``global_step``, ``epoch``) saying when the eval ran;
- ``reliability.png``: the reliability diagram, rendered off the training thread
  (:class:`~calrl.callbacks.plot_queue.PlotQueue`) and written beside the other two when it is ready (before
  training ends).

:func:`read_eval_history` reads those folders back, in training order, so per-epoch metrics can be read
from a run's output folder (the demo's report does) without decoding the W&B log.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calrl.errors import InputError
from calrl.io import staged_dir
from calrl.jsonio import write_json, write_jsonl

EVAL_SUBDIR = "calibration_eval"
EVAL_FILES = ("predictions.jsonl", "metrics.json", "reliability.png")
_LABEL = re.compile(r"^(epoch|step)-(\d+)$")


def epoch_label(epoch: int) -> str:
    return f"epoch-{epoch}"


def step_label(step: int) -> str:
    return f"step-{step}"


def parse_label(label: str) -> tuple[str, int] | None:
    """``("epoch", k)`` or ``("step", n)`` for an eval label; None for any other name."""
    match = _LABEL.match(label)
    return (match.group(1), int(match.group(2))) if match else None


def write_eval_folder(folder: Path, *, label: str, global_step: int, epoch: float | None,
                      metrics: dict[str, Any], records: Iterable[Any]) -> Path:
    """Write one eval's predictions and metrics into ``folder``, both or none (staged, then moved in); the
    reliability diagram is the plot queue's (see the module's docstring)."""
    meta = {"label": label, "global_step": global_step, "epoch": epoch}
    with staged_dir(folder) as tmp:
        write_jsonl(tmp / "predictions.jsonl", (r.to_json() for r in records))
        write_json(tmp / "metrics.json", {**metrics, "training": meta})
    return folder


@dataclass
class SavedEval:
    """One eval read back from its folder."""

    label: str
    kind: str  # "epoch" or "step"
    index: int  # k of epoch-k, n of step-n
    global_step: int | None
    epoch: float | None  # the trainer's (fractional) epoch when the eval ran
    metrics: dict[str, Any]
    folder: Path

    def number(self, key: str) -> float | None:
        """A top-level metric as a finite float, or None (missing, null or not finite)."""
        value = self.metrics.get(key)
        if isinstance(value, dict):  # smece: {"value", "low", "high"}
            value = value.get("value")
        try:
            number = float(value)
        except (TypeError, ValueError):
            return None
        return number if math.isfinite(number) else None


def read_eval_history(output_dir: str | Path, *, subdir: str = EVAL_SUBDIR,
                      kind: str | None = None) -> list[SavedEval]:
    """The evals saved under ``<output_dir>/<subdir>``, in training order (by global step, then label).

    ``kind`` keeps only ``"epoch"`` or ``"step"`` evals. A folder whose name is not an eval label (for
    example a staging folder left by a killed process) is skipped; a labelled folder without a readable
    ``metrics.json`` is an :class:`~calrl.errors.InputError` naming the file. No folder: an empty list.
    """
    if kind not in (None, "epoch", "step"):
        raise ValueError(f"kind must be 'epoch', 'step' or None, got {kind!r}")
    root = Path(output_dir) / subdir
    if not root.is_dir():
        return []
    out = []
    for folder in root.iterdir():
        parsed = parse_label(folder.name)
        if parsed is None or not folder.is_dir() or (kind is not None and parsed[0] != kind):
            continue
        path = folder / "metrics.json"
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"cannot read the calibration eval's metrics: {exc}", path=str(path)) from exc
        training = metrics.pop("training", None) or {}
        out.append(SavedEval(label=folder.name, kind=parsed[0], index=parsed[1],
                             global_step=training.get("global_step"), epoch=training.get("epoch"),
                             metrics=metrics, folder=folder))

    def order(e: SavedEval) -> tuple[float, int, int]:
        step = e.global_step if e.global_step is not None else math.inf
        return (step, 0 if e.kind == "step" else 1, e.index)

    return sorted(out, key=order)
