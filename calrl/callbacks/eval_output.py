"""What becomes of a calibration eval after generation: its scores, files and W&B row.

:class:`~calrl.callbacks.calibration_eval.CalibrationEvalCallback` generates on the training thread and hands
the records over, with an :class:`EvalJob` (the eval's label, step and epoch, read from the trainer's state
when the eval ran: the state moves on meanwhile), to :class:`EvalOutputs`, whose methods run on the callback's
background thread (:class:`~calrl.callbacks.background.OrderedWorker`), one eval at a time, in eval order:

- scoring: :func:`~calrl.eval.resolving.resolve_records` and :func:`~calrl.eval.runner.compute_results`, the
  logged scalars (:func:`scalar_metrics`);
- files: the eval's folder (:func:`~calrl.callbacks.eval_files.write_eval_folder`); the reliability diagram
  is asked of the plot queue (:class:`~calrl.callbacks.plot_queue.PlotQueue`, a process of its own);
- the W&B row: scalars, tables (:class:`~calrl.callbacks.wandb_panels.WandbPanels`) and the diagram
  together, at the eval's ``train/global_step``, logged once the diagram is drawn; then the run summary.

Only the main process writes and logs; the others score (every process holds the same metrics). Without a W&B
run, the scalars go through ``trainer.log``, which must run on the training thread at the eval's step: the
callback waits for the scores there (see :meth:`CalibrationEvalCallback.evaluate`).
"""

from __future__ import annotations

import functools
import io
import logging
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from calrl.callbacks.eval_files import write_eval_folder
from calrl.callbacks.plot_queue import PlotQueue
from calrl.callbacks.wandb_panels import WandbPanels, summary_panel
from calrl.eval.resolving import resolve_records
from calrl.eval.runner import compute_results
from calrl.eval.schema import EvalResults

logger = logging.getLogger(__name__)

SCALAR_KEYS = ("ece", "brier", "auroc", "accuracy", "refusal_rate", "mean_confidence")
SLICE_SCALAR_KEYS = ("ece", "brier", "refusal_rate")
RELIABILITY_COLUMNS = ("lower", "upper", "count", "mean_confidence", "accuracy")
#: Where an eval's scalars go: the active W&B run, ``trainer.log`` (on the training thread), the logger, or
#: nowhere (a process other than the main one).
SINKS = ("wandb", "trainer", "log", "none")


@dataclass
class EvalResult:
    """One calibration eval during training."""

    label: str
    step: int
    epoch: float | None
    metrics: dict[str, Any]
    logged: dict[str, float]
    records: list[Any] = field(repr=False, default_factory=list)
    folder: Path | None = None
    resolved: list[Any] = field(repr=False, default_factory=list)  # ``records`` parsed and graded


@dataclass(frozen=True)
class EvalJob:
    """An eval as the training thread hands it over: when it ran and where its outputs go."""

    label: str
    step: int
    epoch: float | None
    output_dir: Path
    main: bool  # the process that writes the files and logs (rank 0)
    sink: str  # one of SINKS


def scalar_metrics(results: Any, *, slice_keys: list[str] | None = None, prefix: str = "eval") -> dict[str, float]:
    """The scalars to log from the typed results of an eval (:class:`calrl.eval.schema.EvalResults`, or its
    ``metrics.json`` mapping); a missing value is NaN, so each key appears in every eval."""
    if not isinstance(results, EvalResults):
        results = EvalResults.from_json(results)

    def num(value: Any) -> float:
        return float("nan") if value is None else float(value)

    out = {f"{prefix}/{key}": num(getattr(results, key)) for key in SCALAR_KEYS}
    out[f"{prefix}/smece"] = num(results.smece.value)
    out[f"{prefix}/n"] = float(results.n)
    if results.n_answered:
        out[f"{prefix}/missing_confidence_rate"] = results.missing_confidence.count / results.n_answered
    for key, values in results.slices.items():
        if slice_keys is not None and key not in slice_keys:
            continue
        for value, group in values.items():
            for name in SLICE_SCALAR_KEYS:
                out[f"{prefix}/slice/{key}={value}/{name}"] = num(getattr(group, name))
    return out


class EvalOutputs:
    """Scores, files and W&B rows of the evals of one training run (see the module docstring); ``history`` is
    the callback's list of finished evals, appended here in eval order."""

    def __init__(self, config: Any, plots: PlotQueue, history: list[EvalResult]) -> None:
        self.config = config
        self.plots = plots
        self.history = history
        self.panels = WandbPanels(config.n_confidently_wrong)
        self.scored = threading.Condition()  # notified each time an eval reaches ``history``

    # ------------------------------------------------------------------ the background jobs
    def complete(self, records: list[Any], job: EvalJob) -> EvalResult:
        """Score a new eval's records, write its files and log it."""
        result = self.score(records, job)
        self.save(result, job)
        self._record(result)
        self.log(result, job)
        return result

    def share(self, job: EvalJob, previous: Any) -> EvalResult:
        """An eval at the step of the previous one (a step eval and an epoch end at the same step: the policy
        has not changed): the previous eval's generation and scores under this label. Its scalars were logged
        with the previous label; its files, tables and summary are its own. ``previous``: the future of the
        previous eval (finished: jobs run in order; its error is this one's too)."""
        before: EvalResult = previous.result()
        result = EvalResult(label=job.label, step=job.step, epoch=job.epoch, metrics=before.metrics,
                            logged=before.logged, records=before.records, resolved=before.resolved)
        self.save(result, job)
        self._record(result)
        self.log_panels(result, job)
        return result

    def _record(self, result: EvalResult) -> None:
        with self.scored:
            self.history.append(result)
            self.scored.notify_all()

    # ------------------------------------------------------------------ steps
    def score(self, records: list[Any], job: EvalJob) -> EvalResult:
        c = self.config
        resolved = resolve_records(records, use_hedges=c.use_hedges, grader=c.grader,
                                   confidence_parser=c.confidence_parser)
        results = compute_results(resolved, n_bins=c.n_bins, missing_policy=c.missing_policy,
                                  min_slice_size=c.min_slice_size, n_boot=c.n_boot, seed=c.seed)
        logged = scalar_metrics(results, slice_keys=c.slice_keys)
        logged["eval/epoch"] = float(job.epoch or 0.0)
        return EvalResult(label=job.label, step=job.step, epoch=job.epoch, metrics=results.to_json(),
                          logged=logged, records=records, resolved=resolved)

    def save(self, result: EvalResult, job: EvalJob) -> None:
        """Write the eval's folder and ask for its diagram (main process)."""
        if not job.main:
            return
        if self.config.save_predictions:
            folder = job.output_dir / self.config.output_subdir / result.label
            result.folder = write_eval_folder(folder, label=result.label, global_step=result.step,
                                              epoch=result.epoch, metrics=result.metrics, records=result.records)
        if result.folder is not None or self.config.log_image:
            self.plots.submit(result.label, result.metrics, result.folder)

    def log(self, result: EvalResult, job: EvalJob) -> None:
        """The eval's W&B row, once its diagram is drawn (or its scalars to the logger; ``trainer.log`` is the
        training thread's)."""
        if job.sink == "log":
            logger.info("calibration eval %s: %s", result.label,
                        {k: round(v, 4) for k, v in result.logged.items() if not math.isnan(v)})
        if job.sink != "wandb":
            return
        import wandb  # imported already: the training thread saw the active run

        run = wandb.run
        if run is None:  # the run was finished by someone else: nothing to log into
            return
        payload: dict[str, Any] = dict(result.logged)
        if self.config.log_table:
            bins = result.metrics.get("reliability", [])
            rows = [[row.get(c) for c in RELIABILITY_COLUMNS] for row in bins]
            payload["eval/reliability_table"] = wandb.Table(columns=list(RELIABILITY_COLUMNS), data=rows)
            self.panels.add(result)
            payload.update(self.panels.payload(wandb, run.name or run.id))
        payload["train/global_step"] = result.step
        if self.config.log_image:  # decoded by the plot queue's reader thread when the diagram is finished
            image = self.plots.then(result.label, functools.partial(_wandb_image, caption=result.label))
            payload["eval/reliability_diagram"] = image.result()
        run.log(payload)
        run.summary.update(summary_panel(self.history))

    def log_panels(self, result: EvalResult, job: EvalJob) -> None:
        """The tables and summary of an eval that shares the previous eval's generation (no scalars)."""
        if job.sink != "wandb":
            return
        import wandb  # imported already: the training thread saw the active run

        run = wandb.run
        if run is None:
            return
        if self.config.log_table:
            self.panels.add(result)
            run.log({**self.panels.payload(wandb, run.name or run.id), "train/global_step": result.step})
        run.summary.update(summary_panel(self.history))


def _wandb_image(diagram: Path | bytes, *, caption: str) -> Any:
    """The ``wandb.Image`` of a finished diagram: its path in the eval's folder, or its bytes."""
    import wandb  # 0.5 s: only a process that logs to W&B gets here (see EvalOutputs.log)

    if isinstance(diagram, Path):
        return wandb.Image(str(diagram), caption=caption)

    return wandb.Image(Image.open(io.BytesIO(diagram)), caption=caption)
