"""The one template every training runner follows (PPO, GRPO, RLOO, reward model).

1. :meth:`Runner.check` reads everything that can be wrong without a model: the dataset and its columns,
   the held-out items of the calibration eval, the checkpoint to resume from;
2. :meth:`Runner.build` loads the models and builds the trainer (the method's part);
3. :meth:`Runner.run` starts (or continues) the W&B run, trains, saves the model, its tokenizer and its
   model card, and returns a :class:`~calrl.train.reporting.RunResult`; the W&B run is marked failed when
   training raises.
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import Any

from calrl.train.checkpoints import checkpoint_step, list_checkpoints, resolve_resume
from calrl.train.data import TrainingData, load_heldout_items, load_training_data
from calrl.train.launch import check_launch
from calrl.train.recipe import TINY, Recipe
from calrl.train.reporting import (
    RunResult,
    base_model_name,
    final_calibration_metrics,
    finish_wandb,
    model_card,
    saved_wandb_id,
    start_wandb,
    write_model_card,
)

logger = logging.getLogger(__name__)


class Runner:
    """Base of the method runners; subclasses implement :meth:`build` (and may extend the card)."""

    uses_heldout = True  # the per-epoch calibration eval (policies); a reward model has its probe instead

    def __init__(self, recipe: Recipe, callbacks: list[Any] | None = None) -> None:
        self.recipe = recipe
        self.extra_callbacks = list(callbacks or [])
        self.data: TrainingData | None = None
        self.items: list[Any] | None = None
        self.checkpoint: str | None = None
        self.eval_callback: Any = None
        self.tokenizer: Any = None

    # ------------------------------------------------------------------ steps
    def check(self) -> None:
        """Everything checked before any model loads."""
        self.data = load_training_data(self.recipe)
        self.items = load_heldout_items(self.recipe) if self.uses_heldout else None
        self.checkpoint = resolve_resume(self.recipe)

    def build(self, callbacks: list[Any]) -> Any:
        raise NotImplementedError

    def trained_source(self) -> str | None:
        return self.recipe.trained_model()

    def card_sections(self, trainer: Any) -> dict[str, dict[str, Any]]:
        return {}

    def final_metrics(self, trainer: Any) -> dict[str, Any]:
        return final_calibration_metrics(self.eval_callback)

    def calibration_callback(self) -> Any:
        """The per-epoch calibration eval over the held-out items (None without them)."""
        if not self.items:
            return None
        from calrl.callbacks.calibration_eval import CalibrationEvalCallback
        from calrl.train.data import calibration_eval_config

        return CalibrationEvalCallback(calibration_eval_config(self.recipe, self.items))

    # ------------------------------------------------------------------ template
    def run(self) -> RunResult:
        from calrl.train.callbacks import NonFiniteLossCallback, WandbRunIdCallback

        self.check()
        args = self.recipe.training
        resume_id = saved_wandb_id(self.checkpoint)
        run_handle = start_wandb(self.recipe, resume_id=resume_id)
        failed = True
        try:
            callbacks = [NonFiniteLossCallback(), WandbRunIdCallback(run_handle), *self.extra_callbacks]
            trainer = self.build(callbacks)
            check_launch(trainer.accelerator.num_processes)
            main = trainer.accelerator.is_main_process
            if self.checkpoint and main:
                print(f"resuming from {self.checkpoint} (step {checkpoint_step(self.checkpoint)})"
                      + (f", continuing W&B run {resume_id}" if resume_id and run_handle is not None else ""),
                      flush=True)
            trainer.train(resume_from_checkpoint=self.checkpoint)
            trainer.save_model(args.output_dir)
            metrics = self.final_metrics(trainer)
            if main:
                if self.tokenizer is not None:
                    self.tokenizer.save_pretrained(args.output_dir)
                write_model_card(args.output_dir, model_card(
                    self.recipe, base_model=base_model_name(self.trained_source()),
                    metrics=metrics if self.uses_heldout else {},
                    global_step=trainer.state.global_step, extra=self.card_sections(trainer)))
                if self.recipe.lora is not None:
                    from calrl.train.models import finish_adapter_folder

                    finish_adapter_folder(trainer, args.output_dir, self.trained_source(), self.tokenizer)
            failed = False
            return RunResult(method=self.recipe.method, output_dir=args.output_dir,
                             global_step=trainer.state.global_step, metrics=metrics,
                             checkpoints=list_checkpoints(args.output_dir), wandb_dir=getattr(run_handle, "dir", None),
                             resumed_from=self.checkpoint)
        finally:
            finish_wandb(run_handle, failed=failed)


def run_recipe(recipe: Recipe, callbacks: list[Any] | None = None) -> RunResult:
    """Run the recipe's method (imports only that runner); ``callbacks`` are added to the trainer's.

    A CPU run of a tiny model uses one intra-op thread (unless ``OMP_NUM_THREADS`` says otherwise): at this
    size extra threads only add synchronisation, and on a busy 2-core machine they made the tiny PPO recipe
    3x slower.
    """
    if (recipe.trained_model() == TINY and getattr(recipe.training, "use_cpu", False)
            and "OMP_NUM_THREADS" not in os.environ):
        import torch

        torch.set_num_threads(1)
    module = importlib.import_module(f"calrl.train.{recipe.method}")
    return module.RUNNER(recipe, callbacks).run()
