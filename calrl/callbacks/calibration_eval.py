"""Calibration evaluation during training: generate on a held-out set at every epoch end, log the metrics.

:class:`CalibrationEvalCallback` works with every trainer calrl uses, whose loops fire callbacks differently:

- ``transformers.Trainer`` subclasses (TRL's GRPO, RLOO and reward trainers) and calrl's own PPO trainer
  fire ``on_epoch_begin`` and ``on_epoch_end``: the eval runs at ``on_epoch_end``.
- a custom loop that fires only ``on_step_end`` and ``on_train_end`` (as TRL 1.12's PPOTrainer did) with
  ``state.epoch`` set before ``on_step_end``: an epoch ends at the step where ``int(state.epoch)`` increases,
  and a final partial epoch ends at ``on_train_end``.

:class:`~calrl.callbacks.epochs.EpochBoundaryTracker` turns either event stream into one eval per epoch (a trainer that fires
``on_epoch_begin`` is never read from ``on_step_end``, so no epoch is evaluated twice). With several
processes the items are split between them and the predictions gathered, so every item counts once and
every process holds the same metrics; only the main process logs and writes files.

Each eval logs ``eval/ece``, ``eval/brier``, ``eval/auroc``, ``eval/accuracy``, ``eval/refusal_rate``,
``eval/mean_confidence``, ``eval/smece``, ``eval/slice/<key>=<value>/{ece,brier,refusal_rate}``, a reliability
diagram (``eval/reliability_diagram``) and table (``eval/reliability_table``) to the active W&B run, or,
without one, its scalars through ``trainer.log`` when the callback was attached with :meth:`attach`. In a
W&B run it also logs the reliability curves of every eval so far as one line chart
(``eval/reliability_curve``), the most confidently wrong answers (``eval/confidently_wrong``) and keeps the
run summary's ``calibration/...`` keys (final and best ECE) up to date (see :mod:`calrl.callbacks.wandb_panels`).
It writes ``predictions.jsonl``, ``metrics.json`` and ``reliability.png`` to
``<output_dir>/calibration_eval/<label>`` (``epoch-<k>`` or ``step-<n>``; see :mod:`calrl.callbacks.eval_files`,
which also reads them back), and copies them into ``checkpoint-<step>/calibration_eval/<label>`` when a
checkpoint is saved at the step of the eval, so ``calrl eval --predictions`` can re-read them.

The reliability diagram is rendered off the training thread (:class:`~calrl.callbacks.plot_queue.PlotQueue`):
training goes on while it is drawn, and its ``wandb.Image`` is decoded by the queue's reader thread. An eval's
W&B row (scalars, tables and the diagram together, at the eval's ``train/global_step``) is logged at the first
callback event after its diagram is ready, in the order of the evals; ``on_train_end`` waits for every
diagram, so all files and rows are complete when ``train()`` returns (:meth:`CalibrationEvalCallback.finish`
does the same for a loop without that event).
An owner that goes on after ``train()`` (calrl's runners save the model) passes ``wait_at_train_end=False``
and calls :meth:`~CalibrationEvalCallback.finish` itself before the W&B run finishes: the last diagram is
then drawn while the model is saved, and ``train()`` does not wait for it.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import shutil
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from PIL import Image
from transformers import TrainerCallback

from calrl.callbacks.epochs import EpochBoundaryTracker
from calrl.callbacks.eval_files import EVAL_SUBDIR, epoch_label, step_label, write_eval_folder
from calrl.callbacks.plot_queue import PLOT_NAME, PlotQueue
from calrl.callbacks.wandb_panels import WandbPanels, summary_panel
from calrl.confidence import ConfidenceReader
from calrl.data.heldout import load_eval_items
from calrl.errors import ConfigError, InputError
from calrl.eval.report import N_WRONG_EXAMPLES
from calrl.eval.resolving import resolve_records
from calrl.eval.runner import compute_results
from calrl.eval.schema import EvalResults
from calrl.eval.settings import EvalSettings
from calrl.generation.generate import generate_predictions
from calrl.generation.prompts import ElicitationPrompt
from calrl.generation.sharding import generation_model
from calrl.limits import check_item_slices, check_seed

logger = logging.getLogger(__name__)

SCALAR_KEYS = ("ece", "brier", "auroc", "accuracy", "refusal_rate", "mean_confidence")
SLICE_SCALAR_KEYS = ("ece", "brier", "refusal_rate")
RELIABILITY_COLUMNS = ("lower", "upper", "count", "mean_confidence", "accuracy")


@dataclass
class CalibrationEvalConfig(EvalSettings):
    """What to evaluate during training and how: the keys of :class:`~calrl.eval.settings.EvalSettings`
    (described there; the recipe's ``eval:`` section has the same ones), and these.

    ``eval_items`` is a list of :class:`~calrl.data.heldout.EvalItem` or a dataset spec for
    :func:`~calrl.data.heldout.load_eval_items` (loaded once, when training starts). ``eval_on_start`` adds an
    eval of the initial policy (``epoch-0`` at step 0; not repeated when a run resumes; the recipe key
    ``eval.at_start``, on by default in recipes). ``generation``: more :func:`generate_predictions` settings
    (``do_sample`` ...). ``n_confidently_wrong`` is how many of each eval's most confidently wrong answers go
    into the W&B table ``eval/confidently_wrong`` (0: no table); ``log_table`` turns every W&B table and chart
    off.
    """

    eval_items: Any = None
    eval_split: str | None = None
    eval_limit: int | None = None
    prompt: Any = None  # calrl.generation.prompts.ElicitationPrompt; None = the default prompt
    eval_on_start: bool = False
    save_predictions: bool = True
    generation: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    output_subdir: str = EVAL_SUBDIR
    log_image: bool = True
    log_table: bool = True
    n_confidently_wrong: int = N_WRONG_EXAMPLES
    show_progress: bool = False

    def __post_init__(self) -> None:
        if self.eval_items is None or (not isinstance(self.eval_items, str) and len(self.eval_items) == 0):
            raise ConfigError("needs held-out items (a list of EvalItem or a dataset spec)",
                              field="eval_items")
        super().__post_init__()  # the EvalSettings keys
        try:
            check_seed(self.seed, field="seed")
        except InputError as exc:
            raise ConfigError(exc.reason, field="seed") from None
        if not isinstance(self.eval_items, str):  # the slices of a list of items: bounded before any model runs
            try:
                check_item_slices(self.eval_items)
            except InputError as exc:
                raise ConfigError(exc.reason, field="eval_items") from None
        n = self.n_confidently_wrong
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ConfigError(f"must be a non-negative integer, got {n!r}", field="n_confidently_wrong")
        if self.prompt is None:
            self.prompt = ElicitationPrompt()


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


def unwrap_policy(model: Any) -> Any:
    """The generating model inside wrappers: DDP/DeepSpeed ``.module``, PPO's ``PolicyAndValueWrapper``."""
    for _ in range(8):
        if model is None or callable(getattr(model, "generate", None)):
            return model
        if isinstance(getattr(model, "policy", None), torch.nn.Module):
            model = model.policy
        elif isinstance(getattr(model, "module", None), torch.nn.Module):
            model = model.module
        else:
            return model
    return model


def _tokenizer_of(processing_class: Any) -> Any:
    """The tokenizer itself, or the one inside a multimodal processor."""
    inner = getattr(processing_class, "tokenizer", None)
    return inner if inner is not None else processing_class


def _distributed_state() -> Any:
    """An ``accelerate.PartialState`` when several processes run, else None."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return None
    if torch.distributed.get_world_size() < 2:
        return None

    return PartialState()


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


class CalibrationEvalCallback(TrainerCallback):
    """Generate on held-out items with the current policy at each epoch end; log calibration metrics.

    ``wait_at_train_end=False``: ``on_train_end`` does not wait for the diagrams still being drawn; the owner
    must call :meth:`finish` (before the W&B run finishes and before the process exits), or the last evals'
    W&B rows are not logged and their diagrams may be written after the process has ended.
    """

    def __init__(self, config: CalibrationEvalConfig, *, tokenizer: Any = None,
                 wait_at_train_end: bool = True) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.wait_at_train_end = wait_at_train_end
        self.tracker = EpochBoundaryTracker()
        self.history: list[EvalResult] = []
        self._items: list[Any] | None = None
        self._trainer: Any = None
        self._warned_no_generate = False
        self._panels = WandbPanels(config.n_confidently_wrong)
        self._plots = PlotQueue()
        # W&B rows not logged yet, in eval order: (payload, the future of its diagram's wandb.Image, or None)
        self._rows: deque[tuple[dict[str, Any], Future | None]] = deque()

    # ------------------------------------------------------------------ wiring
    def attach(self, trainer: Any) -> CalibrationEvalCallback:
        """Add this callback to ``trainer`` and log through ``trainer.log`` when no W&B run is active."""
        self._trainer = trainer
        if self not in getattr(getattr(trainer, "callback_handler", None), "callbacks", []):
            trainer.add_callback(self)
        return self

    def items(self) -> list[Any]:
        if self._items is None:
            source, limit = self.config.eval_items, self.config.eval_limit
            if isinstance(source, str):
                self._items = load_eval_items(source, split=self.config.eval_split, limit=limit)
            else:
                self._items = list(source)[:limit] if limit else list(source)
        return self._items

    # ------------------------------------------------------------------ events
    def on_train_begin(self, args, state, control, **kwargs):
        self.tracker.train_begin(state.epoch)
        self.items()  # a bad dataset spec fails now, not after the first epoch
        if state.is_world_process_zero:
            self.warm_up()
        if self.config.eval_on_start and state.global_step == 0:  # a resumed run has its start eval already
            self.evaluate(epoch_label(0), args, state, **kwargs)

    def warm_up(self) -> None:
        """Start the process that draws the diagrams (it imports matplotlib, seconds of CPU): at
        ``on_train_begin``, or earlier (calrl's runners call it before they load the models, so that the
        import overlaps the loading, not training). Call it on the main process only."""
        if self.config.save_predictions or self.config.log_image:
            self._plots.warm_up()

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.tracker.epoch_begin()
        self._flush()

    def on_epoch_end(self, args, state, control, **kwargs):
        epoch = self.tracker.epoch_end(state.epoch)
        if epoch is not None:
            self.evaluate(epoch_label(epoch), args, state, **kwargs)

    def on_log(self, args, state, control, **kwargs):
        self._flush()

    def on_step_end(self, args, state, control, **kwargs):
        self._flush()
        epoch = self.tracker.step_end(state.epoch)
        if epoch is not None:
            self.evaluate(epoch_label(epoch), args, state, **kwargs)
        n = self.config.every_n_steps
        if n and state.global_step > 0 and state.global_step % n == 0:
            self.evaluate(step_label(state.global_step), args, state, **kwargs)

    def on_train_end(self, args, state, control, **kwargs):
        epoch = self.tracker.train_end(state.epoch)
        if epoch is not None:
            self.evaluate(epoch_label(epoch), args, state, **kwargs)
        if self.wait_at_train_end:
            self.finish()
        else:
            self._flush()

    def finish(self) -> None:
        """Wait for every reliability diagram, write its copies and log the W&B rows still waiting for it
        (into the active W&B run: call it before the run finishes)."""
        self._flush(wait=True)

    def on_save(self, args, state, control, **kwargs):
        """Copy the files of an eval made at this step into the checkpoint folder just written."""
        if not state.is_world_process_zero:
            return
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not checkpoint.is_dir():
            return
        for result in self.history:
            if result.step == state.global_step and result.folder is not None and result.folder.is_dir():
                dest = checkpoint / self.config.output_subdir / result.label
                if dest.exists():
                    shutil.rmtree(dest)
                # the diagram (and its temporary file) may still be being written: the plot queue copies it
                shutil.copytree(result.folder, dest, ignore=shutil.ignore_patterns(PLOT_NAME, ".*.tmp"))
                self._plots.copy_to(result.label, dest)
        self._flush()

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, label: str, args: Any, state: Any, *, model: Any = None, processing_class: Any = None,
                 tokenizer: Any = None, **_: Any) -> EvalResult | None:
        """Run one eval now (all processes), then log and save it (main process)."""
        previous = self.history[-1] if self.history else None
        if previous is not None and previous.step == state.global_step and previous.label != label:
            # The policy has not changed since the last eval (a step eval and an epoch end at the same step).
            result = EvalResult(label=label, step=state.global_step, epoch=state.epoch,
                                metrics=previous.metrics, logged=previous.logged, records=previous.records,
                                resolved=previous.resolved)
            self._save(result, args, state)
            self.history.append(result)
            self._log_panels(result, state)  # its scalars were logged with the previous label
            return result
        wrapped = model if model is not None else getattr(self._trainer, "model", None)
        policy = unwrap_policy(wrapped)
        candidates = (self.tokenizer, processing_class, tokenizer,
                      getattr(self._trainer, "processing_class", None))
        tok = _tokenizer_of(next((c for c in candidates if c is not None), None))
        if policy is None or not callable(getattr(policy, "generate", None)):
            if not self._warned_no_generate:
                logger.warning("CalibrationEvalCallback: the trainer's model (%s) cannot generate; no "
                               "calibration eval is run.", type(policy).__name__)
                self._warned_no_generate = True
            return None
        if tok is None:
            raise ConfigError("CalibrationEvalCallback needs a tokenizer: the trainer passes none, give "
                              "tokenizer=...", field="tokenizer")

        records = self._generate(wrapped, tok)
        resolved = self._resolve(records)
        results = self._results(resolved)
        metrics = results.to_json()
        logged = scalar_metrics(results, slice_keys=self.config.slice_keys)
        logged["eval/epoch"] = float(state.epoch or 0.0)
        result = EvalResult(label=label, step=state.global_step, epoch=state.epoch, metrics=metrics,
                            logged=logged, records=records, resolved=resolved)
        self._save(result, args, state)
        self.history.append(result)
        self._log(result, state)
        return result

    def _generate(self, model: Any, tokenizer: Any) -> list[Any]:
        """Generate with the trainer's model; FSDP / ZeRO-3 shards are gathered for the duration (a collective)."""
        dist = _distributed_state()
        accelerator = getattr(self._trainer, "accelerator", None)
        with generation_model(model, accelerator, select=unwrap_policy) as policy, torch.no_grad():
            return generate_predictions(
                policy, tokenizer, self.items(), prompt=self.config.prompt,
                batch_size=self.config.batch_size, max_new_tokens=self.config.max_new_tokens,
                accelerator=dist, show_progress=self.config.show_progress,
                confidence_retries=self.config.confidence_retries, reader=self._reader(), **self.config.generation,
            )

    def _reader(self) -> Any:
        return ConfidenceReader(self.config.confidence_parser, purpose="eval", use_hedges=self.config.use_hedges)

    def _resolve(self, records: list[Any]) -> list[Any]:
        return resolve_records(records, use_hedges=self.config.use_hedges, grader=self.config.grader,
                               confidence_parser=self.config.confidence_parser)

    def _results(self, resolved: list[Any]) -> Any:
        return compute_results(resolved, n_bins=self.config.n_bins, missing_policy=self.config.missing_policy,
                               min_slice_size=self.config.min_slice_size, n_boot=self.config.n_boot,
                               seed=self.config.seed)

    # ------------------------------------------------------------------ output
    def _save(self, result: EvalResult, args: Any, state: Any) -> None:
        if not state.is_world_process_zero:
            return
        if self.config.save_predictions:
            folder = Path(args.output_dir) / self.config.output_subdir / result.label
            result.folder = write_eval_folder(folder, label=result.label, global_step=result.step,
                                              epoch=result.epoch, metrics=result.metrics, records=result.records)
        if result.folder is not None or self.config.log_image:
            self._plots.submit(result.label, result.metrics, result.folder)

    def _log(self, result: EvalResult, state: Any) -> None:
        if not state.is_world_process_zero:
            return
        import wandb  # 0.5 s: only the process that logs (rank 0) imports it, not the other ranks

        run = wandb.run
        if run is not None:
            payload: dict[str, Any] = dict(result.logged)
            if self.config.log_table:
                bins = result.metrics.get("reliability", [])
                rows = [[row.get(c) for c in RELIABILITY_COLUMNS] for row in bins]
                payload["eval/reliability_table"] = wandb.Table(columns=list(RELIABILITY_COLUMNS), data=rows)
                self._panels.add(result)
                payload.update(self._panels.payload(wandb, run.name or run.id))
            payload["train/global_step"] = state.global_step
            image = None
            if self.config.log_image:  # decoded off the training thread when the diagram is finished
                image = self._plots.then(result.label, functools.partial(_wandb_image, caption=result.label))
            self._rows.append((payload, image))
            self._flush()
        elif self._trainer is not None:
            self._trainer.log(dict(result.logged))
        else:
            logger.info("calibration eval %s: %s", result.label,
                        {k: round(v, 4) for k, v in result.logged.items() if not math.isnan(v)})

    def _log_panels(self, result: EvalResult, state: Any) -> None:
        """Log the tables and summary of an eval that shares the previous eval's generation (no scalars)."""
        if not state.is_world_process_zero:
            return
        import wandb  # 0.5 s: only the process that logs (rank 0) imports it, not the other ranks

        run = wandb.run
        if run is None:
            return
        if self.config.log_table:
            self._panels.add(result)
            self._rows.append(({**self._panels.payload(wandb, run.name or run.id),
                                "train/global_step": state.global_step}, None))
            self._flush()
        else:
            run.summary.update(summary_panel(self.history))

    def _flush(self, *, wait: bool = False) -> None:
        """Write the finished diagrams' copies and log the W&B rows whose diagram is ready, in eval order
        (with ``wait``: all of them)."""
        if wait:
            self._plots.ready(wait=True)
            self._log_ready(wait=True)
            self._plots.wait_all()  # after logging: the diagrams of evals without a folder are deleted
        else:
            self._plots.ready()  # writes the copies of the diagrams finished since; raises a failed one's error
            self._log_ready()

    def _log_ready(self, *, wait: bool = False) -> None:
        if not self._rows:
            return
        import wandb  # 0.5 s: rows exist only in a process that logs to W&B (see _log)

        run = wandb.run
        while self._rows and (wait or self._rows[0][1] is None or self._rows[0][1].done()):
            payload, image = self._rows.popleft()
            if run is None:  # the run was finished by someone else: nothing to log into
                continue
            if image is not None:
                payload["eval/reliability_diagram"] = image.result()
            run.log(payload)
            run.summary.update(summary_panel(self.history))


def _wandb_image(diagram: Path | bytes, *, caption: str) -> Any:
    """The ``wandb.Image`` of a finished diagram: its path in the eval's folder, or its bytes."""
    import wandb  # 0.5 s: only a process that logs to W&B gets here (see _log)

    if isinstance(diagram, Path):
        return wandb.Image(str(diagram), caption=caption)

    return wandb.Image(Image.open(io.BytesIO(diagram)), caption=caption)
