"""The one template every training runner follows (PPO, GRPO, RLOO, reward model).

1. :meth:`Runner.check` reads everything that can be wrong without a model: the output folder (a writable
   folder, holding no earlier run unless resuming or overwriting), the dataset and its columns, the held-out
   items of the calibration eval, the checkpoint to resume from (complete, of this method, whole files);
   ``calrl train-* --dry-run`` runs exactly this;
2. :meth:`Runner.build` loads the models and builds the trainer (the method's part);
3. :meth:`Runner.run` starts (or continues) the W&B run, trains, saves the model, its tokenizer and its
   model card through a staging folder (:mod:`calrl.runners.output`), and returns a
   :class:`~calrl.runners.reporting.RunResult`. When training raises (Ctrl-C included) the W&B run is marked
   failed, and the interrupted checkpoint, the staging folders and the folders the run created empty are
   removed: what is left is the complete checkpoints.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import set_seed

from calrl.callbacks.calibration_eval import CalibrationEvalCallback
from calrl.callbacks.runs import NonFiniteLossCallback, WandbRunIdCallback, use_line_progress
from calrl.errors import CalrlError
from calrl.io import write_text
from calrl.progress import is_main_process, quiet_library_bars
from calrl.runners.checkpoints import (
    CheckpointMarkerCallback,
    checkpoint_step,
    list_checkpoints,
    resolve_resume,
)
from calrl.runners.data import (
    TrainingData,
    calibration_eval_config,
    confidence_instruction,
    eval_item_texts,
    load_heldout_items,
    load_training_data,
    prompt_texts,
    with_confidence_prompts,
)
from calrl.runners.launch import check_launch
from calrl.runners.models import ModelFactory, finish_adapter_folder
from calrl.runners.output import (
    FINAL_STAGE,
    check_output_dir,
    clean_failed_run,
    clear_previous_run,
    final_stage,
    missing_folders,
    publish_final,
)
from calrl.runners.preflight import check_model_source, model_sources
from calrl.runners.recipe import TINY, Recipe
from calrl.runners.reporting import (
    RECIPE_FILE,
    RunResult,
    base_model_name,
    final_calibration_metrics,
    finish_wandb,
    model_card,
    run_recipe_text,
    saved_wandb_id,
    start_wandb,
    write_model_card,
)

logger = logging.getLogger(__name__)


class Runner:
    """Base of the method runners; subclasses implement :meth:`build` (and may extend the card)."""

    uses_heldout = True  # the per-epoch calibration eval (policies); a reward model has its probe instead
    unit = "pairs"  # what a row of a training batch is (a reward model's: a preference pair)

    def __init__(self, recipe: Recipe, callbacks: list[Any] | None = None, *, overwrite: bool = False) -> None:
        self.recipe = recipe
        self.overwrite = overwrite
        self.skipped: list[str] = []  # newer checkpoints ``--resume latest`` passed over, and why
        self.extra_callbacks = list(callbacks or [])
        self.data: TrainingData | None = None
        self.items: list[Any] | None = None
        self.eval_config: Any = None  # the calibration callback's, built by the checks with the items
        self.checkpoint: str | None = None
        self.eval_callback: Any = None
        self.tokenizer: Any = None

    # ------------------------------------------------------------------ steps
    def check(self) -> None:
        """Everything checked before any model loads; the first problem is raised."""
        for step in self.check_steps():
            step()

    def problems(self, *, hub: bool = True) -> list[CalrlError]:
        """Every problem the checks find, all of them (``--dry-run``); ``hub``: hub ids must be reachable too."""
        found = []
        for step in self.check_steps(hub=hub):
            try:
                step()
            except CalrlError as exc:
                found.append(exc)
        return found

    def check_steps(self, *, hub: bool = False) -> list[Callable[[], None]]:
        """The checks in order: output folder, model paths, training data, held-out items, checkpoint to resume."""
        recipe = self.recipe
        resuming = getattr(recipe.training, "resume_from_checkpoint", None) not in (None, "", False)

        def data() -> None:
            self.data = load_training_data(recipe)

        def heldout() -> None:
            self.items = load_heldout_items(recipe) if self.uses_heldout else None
            # built now, so that a problem with the items or the prompt template stops the run before training
            self.eval_config = calibration_eval_config(recipe, self.items) if self.items else None

        def resume() -> None:
            self.checkpoint, self.skipped = resolve_resume(recipe)

        def model(use: Any) -> Callable[[], None]:
            return lambda: check_model_source(recipe, use, hub=hub)

        uses: dict[tuple[str, str], Any] = {}
        for use in model_sources(recipe):  # a source named by one key is checked once, under its first role
            uses.setdefault((use.key, use.source), use)
        return [lambda: check_output_dir(recipe, overwrite=self.overwrite, resuming=resuming),
                *(model(u) for u in uses.values()), data, heldout, resume]

    def build(self, callbacks: list[Any]) -> Any:
        raise NotImplementedError

    def trained_source(self) -> str | None:
        return self.recipe.trained_model()

    def card_sections(self, trainer: Any) -> dict[str, dict[str, Any]]:
        return {}

    def final_metrics(self, trainer: Any, out_dir: Path) -> dict[str, Any]:
        """The metrics of the card; ``out_dir`` is the staging folder for any report file written with them."""
        return final_calibration_metrics(self.eval_callback)

    def calibration_callback(self) -> Any:
        """The per-epoch calibration eval over the held-out items (None without them); call it before the
        models are loaded: its plot worker starts now (on the main process) and imports matplotlib meanwhile.
        :meth:`run` calls its ``finish`` after saving the model (``train()`` does not wait for the last diagram)."""
        if self.eval_config is None:
            return None

        callback = CalibrationEvalCallback(self.eval_config, wait_at_train_end=False)
        if is_main_process():
            callback.warm_up()
        return callback

    def policy_inputs(self, roles: Sequence[tuple[str, str | None]]) -> tuple[list[Any], dict[str, Any], ModelFactory]:
        """What a policy's runner builds first: the per-epoch eval (before the models, so its plot worker starts
        meanwhile), the prompts with the confidence instruction on ``data.confidence_prompt_fraction`` of them, the
        dataset's columns (``prompt``, and each ``(role, column)`` of ``roles`` the data has) and the model factory
        over every text a tiny tokenizer must know; the policy's tokenizer goes to ``self.tokenizer``."""
        recipe, train = self.recipe, self.data.train
        self.eval_callback = self.calibration_callback()
        conversations, n_system = with_confidence_prompts(
            list(train["prompt"]), recipe.data.confidence_prompt_fraction, confidence_instruction(recipe),
            recipe.data.seed)
        logger.info("confidence prompt added to %d of %d prompts", n_system, len(conversations))
        columns: dict[str, Any] = {"prompt": conversations}
        for role, name in roles:
            if name and role in train.column_names:
                columns[name] = list(train[role])
        vocabulary = [*prompt_texts(train, ("prompt", "reference")), confidence_instruction(recipe),
                      *eval_item_texts(self.items, recipe)]
        factory = ModelFactory(recipe, vocabulary)
        self.tokenizer = factory.tokenizer(recipe.model.policy)
        return conversations, columns, factory

    # ------------------------------------------------------------------ template
    def run(self) -> RunResult:
        self.check()
        quiet_library_bars()
        out = Path(self.recipe.training.output_dir)
        created = missing_folders(out)
        resume_id = saved_wandb_id(self.checkpoint)
        run_handle = start_wandb(self.recipe, resume_id=resume_id)
        failed, main = True, is_main_process()
        try:
            callbacks = [NonFiniteLossCallback(), WandbRunIdCallback(run_handle), *self.extra_callbacks]
            # seed before any model is built: a freshly initialised head (a reward model's score layer on a
            # causal LM) must not depend on the process's random start (torch seeds every process differently)

            set_seed(int(getattr(self.recipe.training, "seed", 0)))
            trainer = self.build(callbacks)
            use_line_progress(trainer)
            if self.recipe.method != "ppo":  # calrl's PPO trainer marks its own checkpoints
                trainer.add_callback(CheckpointMarkerCallback(self.recipe.method))
            # TRL's trainers write their own README.md into output_dir at every checkpoint: a card for a model
            # that is not there yet. calrl's card is written with the final model (save).
            trainer.create_model_card = _no_trl_card
            check_launch(trainer.accelerator.num_processes)
            main = trainer.accelerator.is_main_process
            if main:
                print(self.startup_line(trainer), flush=True)
                self._announce(out, resume_id if run_handle is not None else None)
            trainer.accelerator.wait_for_everyone()
            trainer.train(resume_from_checkpoint=self.checkpoint)
            result = self.save(trainer, out, run_handle)
            self._finish_evals()
            failed = False
            return result
        finally:
            if failed:  # a failed save still logs the evals it measured; nothing is written after the clean-up
                self._finish_evals(quiet=True)
            if failed and main:
                clean_failed_run(out, self.recipe.method, created)
            finish_wandb(run_handle, failed=failed)

    def _finish_evals(self, *, quiet: bool = False) -> None:
        """Complete the evals still being scored, logged or drawn (the last one, while the model was saved): their
        files and W&B rows, before the run finishes. ``quiet``: a failure here must not hide the error that ended
        the run."""
        if self.eval_callback is None:
            return
        try:
            self.eval_callback.finish()
        except Exception:
            if not quiet:
                raise

    def startup_line(self, trainer: Any) -> str:
        """What runs where: processes, device, precision and the effective batch sizes (printed at start)."""
        acc, args = trainer.accelerator, trainer.args
        n = acc.num_processes
        dtype = str(next(trainer.model.parameters()).dtype).removeprefix("torch.")
        mixed = None if acc.mixed_precision in (None, "no") else str(acc.mixed_precision)
        kind = str(acc.distributed_type).rsplit(".", 1)[-1]
        return (f"train-{self.recipe.method}: {count(n, 'process', 'processes')}" + (f" ({kind})" if n > 1 else "")
                + f" on {acc.device.type}, {dtype} weights" + (f", {mixed} mixed precision" if mixed else "")
                + "; " + self.batch_sizes(args, n))

    def batch_sizes(self, args: Any, n: int) -> str:
        per, accum = args.per_device_train_batch_size, args.gradient_accumulation_steps
        return (f"batch: {per} {self.unit} per device x {accum} accumulation x {count(n, 'process', 'processes')} = "
                f"{per * accum * n} {self.unit} per optimiser step")

    def _announce(self, out: Path, resume_id: str | None) -> None:
        """Print what the run resumes from (and skipped), or what ``--overwrite`` deleted."""
        for reason in self.skipped:
            print(f"skipping {reason}", flush=True)
        if self.checkpoint:
            print(f"resuming from {self.checkpoint} (step {checkpoint_step(self.checkpoint)})"
                  + (f", continuing W&B run {resume_id}" if resume_id else ""), flush=True)
        elif self.overwrite:
            removed = clear_previous_run(out)
            if removed:
                print(f"--overwrite: deleted the earlier run's {', '.join(removed)} in {out}", flush=True)

    def save(self, trainer: Any, out: Path, run_handle: Any) -> RunResult:
        """Save the model, tokenizer, reports and card into a staging folder, then rename them into ``out``."""
        acc = trainer.accelerator
        main = acc.is_main_process
        stage = out / FINAL_STAGE
        if main:
            stage = final_stage(out)
        acc.wait_for_everyone()
        trainer.save_model(str(stage))
        metrics = self.final_metrics(trainer, stage)
        if main:
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(stage)
            write_text(stage / RECIPE_FILE, run_recipe_text(self.recipe))
            write_model_card(stage, model_card(
                self.recipe, base_model=base_model_name(self.trained_source()),
                metrics=metrics if self.uses_heldout else {},
                global_step=trainer.state.global_step, extra=self.card_sections(trainer)))
            if self.recipe.lora is not None:
                finish_adapter_folder(trainer, str(stage), self.trained_source(), self.tokenizer,
                                      final_dir=str(out))
            publish_final(stage, out)
        acc.wait_for_everyone()
        return RunResult(method=self.recipe.method, output_dir=str(out), global_step=trainer.state.global_step,
                         metrics=metrics, checkpoints=list_checkpoints(out), wandb_dir=getattr(run_handle, "dir", None),
                         resumed_from=self.checkpoint)


def count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _no_trl_card(*args: Any, **kwargs: Any) -> None:
    return None


def runner_for(recipe: Recipe, callbacks: list[Any] | None = None, *, overwrite: bool = False) -> Runner:
    """The recipe's method runner (imports only that runner's module)."""
    module = importlib.import_module(f"calrl.runners.{recipe.method}")
    return module.RUNNER(recipe, callbacks, overwrite=overwrite)


def run_recipe(recipe: Recipe, callbacks: list[Any] | None = None, *, overwrite: bool = False) -> RunResult:
    """Run the recipe's method (imports only that runner); ``callbacks`` are added to the trainer's;
    ``overwrite`` replaces an earlier run in the output folder (``--overwrite``).

    A CPU run of a tiny model uses one intra-op thread (unless ``OMP_NUM_THREADS`` says otherwise): at this
    size extra threads only add synchronisation, and on a busy 2-core machine they made the tiny PPO recipe
    3x slower.
    """
    if (recipe.trained_model() == TINY and getattr(recipe.training, "use_cpu", False)
            and "OMP_NUM_THREADS" not in os.environ):
        torch.set_num_threads(1)
    return runner_for(recipe, callbacks, overwrite=overwrite).run()
