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

Only generation runs on the training thread. Everything after it (scoring, the eval's folder, its W&B row)
runs on the callback's background thread, one eval at a time in eval order (:mod:`calrl.callbacks.eval_output`),
and the reliability diagram is drawn by a process of its own (:class:`~calrl.callbacks.plot_queue.PlotQueue`):
training goes on meanwhile. An eval's W&B row (scalars, tables and the diagram together, at the eval's
``train/global_step``) is logged once its diagram is drawn, in the order of the evals. A failure there is raised
on the training thread at the next callback event. ``history`` holds an eval once it is scored; copies into a
checkpoint saved at an eval's step are made by the training thread once the eval's files are written.
``on_train_end`` waits for all of it, so every file and row is complete when ``train()`` returns
(:meth:`CalibrationEvalCallback.finish` does the same for a loop without that event).
An owner that goes on after ``train()`` (calrl's runners save the model) passes ``wait_at_train_end=False``
and calls :meth:`~CalibrationEvalCallback.finish` itself before the W&B run finishes: the last eval is then
scored, logged and drawn while the model is saved, and ``train()`` does not wait for it.
"""

from __future__ import annotations

import logging
import shutil
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from transformers import TrainerCallback

from calrl.callbacks.background import OrderedWorker
from calrl.callbacks.epochs import EpochBoundaryTracker
from calrl.callbacks.eval_files import EVAL_SUBDIR, epoch_label, step_label
from calrl.callbacks.eval_output import (  # noqa: F401 - EvalResult and scalar_metrics are public here too
    RELIABILITY_COLUMNS,
    SCALAR_KEYS,
    SLICE_SCALAR_KEYS,
    EvalJob,
    EvalOutputs,
    EvalResult,
    scalar_metrics,
)
from calrl.callbacks.plot_queue import PLOT_NAME, PlotQueue
from calrl.confidence import ConfidenceReader
from calrl.data.heldout import load_eval_items
from calrl.errors import ConfigError, InputError
from calrl.eval.report import N_WRONG_EXAMPLES
from calrl.eval.settings import EvalSettings
from calrl.generation.generate import PromptCache, generate_predictions
from calrl.generation.prompts import ElicitationPrompt
from calrl.generation.sharding import generation_model
from calrl.limits import check_item_slices, check_seed

logger = logging.getLogger(__name__)


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


class CalibrationEvalCallback(TrainerCallback):
    """Generate on held-out items with the current policy at each epoch end; log calibration metrics.

    ``wait_at_train_end=False``: ``on_train_end`` does not wait for the evals still being scored, logged or
    drawn; the owner must call :meth:`finish` (before the W&B run finishes and before the process exits), or
    the last evals' W&B rows are not logged and their files may be incomplete.
    """

    def __init__(self, config: CalibrationEvalConfig, *, tokenizer: Any = None,
                 wait_at_train_end: bool = True) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.wait_at_train_end = wait_at_train_end
        self.tracker = EpochBoundaryTracker()
        self.history: list[EvalResult] = []  # appended by the background thread, in eval order
        self._items: list[Any] | None = None
        self._trainer: Any = None
        self._warned_no_generate = False
        self._plots = PlotQueue()
        self._outputs = EvalOutputs(config, self._plots, self.history)
        self._worker = OrderedWorker("calrl-calibration-eval")
        self._handed = 0  # evals handed to the worker (each reaches ``history`` once scored)
        self._prompts = PromptCache()  # the held-out prompts, tokenized at the first eval
        # the evals handed over at the latest eval step: (label, future of its EvalResult)
        self._at_step: tuple[int, list[tuple[str, Future]]] | None = None
        # checkpoint copies waiting for their eval's files: (future of the EvalResult, checkpoint folder)
        self._copies: list[tuple[Future, Path]] = []

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
            self.evaluate(epoch_label(0), args, state, wait=False, **kwargs)

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
            self.evaluate(epoch_label(epoch), args, state, wait=False, **kwargs)

    def on_log(self, args, state, control, **kwargs):
        self._flush()

    def on_step_end(self, args, state, control, **kwargs):
        self._flush()
        epoch = self.tracker.step_end(state.epoch)
        if epoch is not None:
            self.evaluate(epoch_label(epoch), args, state, wait=False, **kwargs)
        n = self.config.every_n_steps
        if n and state.global_step > 0 and state.global_step % n == 0:
            self.evaluate(step_label(state.global_step), args, state, wait=False, **kwargs)

    def on_train_end(self, args, state, control, **kwargs):
        epoch = self.tracker.train_end(state.epoch)
        if epoch is not None:
            self.evaluate(epoch_label(epoch), args, state, wait=False, **kwargs)
        if self.wait_at_train_end:
            self.finish()
        else:
            self._flush()

    def scored_history(self) -> list[EvalResult]:
        """``history`` once every eval handed over is scored (its files written; its W&B row and diagram may
        still be pending): what the final model card and summary read. Raises a failed eval's error."""
        with self._outputs.scored:  # a failed job notifies no one: look again every 50 ms
            while len(self.history) < self._handed and self._worker.busy:
                self._outputs.scored.wait(timeout=0.05)
        self._worker.raise_errors()
        return self.history

    def finish(self) -> None:
        """Wait for every eval handed over (scored, its files written and its W&B row logged into the active
        W&B run: call it before the run finishes) and every reliability diagram; write the checkpoint copies
        still waiting. Raises the first error of that work not raised yet."""
        try:
            self._worker.wait()
        finally:
            self._copy_done(wait=True)
            self._plots.wait_all()  # raises a failed diagram's error; the worker process ends

    def on_save(self, args, state, control, **kwargs):
        """Copy the files of an eval made at this step into the checkpoint folder just written: now if the
        eval's files are written, else at a later event (the diagram too, when drawn)."""
        if state.is_world_process_zero and self._at_step is not None and self._at_step[0] == state.global_step:
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if checkpoint.is_dir():
                self._copies.extend((future, checkpoint) for _, future in self._at_step[1])
        self._flush()

    def _flush(self) -> None:
        """At each event: raise the error of failed background work, write the checkpoint copies whose eval is
        done and those of the diagrams finished since."""
        self._worker.raise_errors()
        self._copy_done()
        self._plots.ready()  # raises a failed diagram's error

    def _copy_done(self, *, wait: bool = False) -> None:
        waiting = []
        for future, checkpoint in self._copies:
            if not (wait or future.done()):
                waiting.append((future, checkpoint))
                continue
            if future.exception() is not None:  # raised by the worker's error check
                continue
            result: EvalResult = future.result()
            if result.folder is None or not result.folder.is_dir() or not checkpoint.is_dir():
                continue  # no files, or a checkpoint deleted since (save_total_limit)
            dest = checkpoint / self.config.output_subdir / result.label
            if dest.exists():
                shutil.rmtree(dest)
            # the diagram (and its temporary file) may still be being written: the plot queue copies it
            shutil.copytree(result.folder, dest, ignore=shutil.ignore_patterns(PLOT_NAME, ".*.tmp"))
            self._plots.copy_to(result.label, dest)
        self._copies = waiting

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, label: str, args: Any, state: Any, *, model: Any = None, processing_class: Any = None,
                 tokenizer: Any = None, wait: bool = True, **_: Any) -> EvalResult | None:
        """Run one eval: generate now (all processes, on this thread), then score it, write its files and log it
        on the callback's background thread, after the evals handed over before it.

        ``wait``: return its :class:`EvalResult` once it is scored, saved and logged (raising its error). The
        event handlers pass False and get None: the result reaches ``history`` when done. Without a W&B run,
        the scalars go through ``trainer.log`` at this step: then this waits for the scores either way. None
        when the model cannot generate."""
        main = bool(state.is_world_process_zero)
        job = EvalJob(label=label, step=state.global_step, epoch=state.epoch, output_dir=Path(args.output_dir),
                      main=main, sink=self._sink() if main else "none")
        at_step = self._at_step[1] if self._at_step is not None and self._at_step[0] == job.step else []
        if at_step and at_step[-1][0] != label:
            # The policy has not changed since the last eval (a step eval and an epoch end at the same step).
            future = self._worker.submit(self._outputs.share, job, at_step[-1][1])
            self._handed += 1
            shared = True
        else:
            records = self._generate_now(model, processing_class, tokenizer)
            if records is None:
                return None
            future = self._worker.submit(self._outputs.complete, records, job)
            self._handed += 1
            shared = False
        self._at_step = (job.step, [*at_step, (label, future)])
        if not wait and (job.sink != "trainer" or shared):
            return None
        result = self._worker.result(future)
        if job.sink == "trainer" and not shared:
            self._trainer.log(dict(result.logged))
        return result

    def _sink(self) -> str:
        """Where the main process sends an eval's scalars (see :data:`~calrl.callbacks.eval_output.SINKS`)."""
        import wandb  # 0.5 s: only the process that logs (rank 0) imports it, not the other ranks

        if wandb.run is not None:
            return "wandb"
        return "trainer" if self._trainer is not None else "log"

    def _generate_now(self, model: Any, processing_class: Any, tokenizer: Any) -> list[Any] | None:
        """The records of the current policy (None, with one warning, when the trainer's model cannot generate)."""
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
        return self._generate(wrapped, tok)

    def _generate(self, model: Any, tokenizer: Any) -> list[Any]:
        """Generate with the trainer's model; FSDP / ZeRO-3 shards are gathered for the duration (a collective)."""
        dist = _distributed_state()
        accelerator = getattr(self._trainer, "accelerator", None)
        with generation_model(model, accelerator, select=unwrap_policy) as policy, torch.no_grad():
            return generate_predictions(
                policy, tokenizer, self.items(), prompt=self.config.prompt,
                batch_size=self.config.batch_size, max_new_tokens=self.config.max_new_tokens,
                accelerator=dist, show_progress=self.config.show_progress,
                confidence_retries=self.config.confidence_retries, reader=self._reader(), cache=self._prompts,
                **self.config.generation,
            )

    def _reader(self) -> Any:
        return ConfidenceReader(self.config.confidence_parser, purpose="eval", use_hedges=self.config.use_hedges)
