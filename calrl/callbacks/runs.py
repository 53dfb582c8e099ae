"""Callbacks the runners add to every trainer: fault detection, the W&B run id in each checkpoint, progress in logs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback
from transformers.trainer_utils import has_length

from calrl.callbacks.wandb_utils import WANDB_ID_FILE
from calrl.errors import TrainingFault
from calrl.jsonio import write_json
from calrl.progress import is_terminal, progress


def check_finite_loss(logs: dict[str, Any], step: int) -> None:
    """Raise TrainingFault when a logged loss or reward is NaN or infinite."""
    for key, value in logs.items():
        if ("loss" in key or "reward" in key) and isinstance(value, float) and not math.isfinite(value):
            raise TrainingFault(f"step {step}: non-finite {key} ({value})")


class NonFiniteLossCallback(TrainerCallback):
    """Stop the run with a :class:`TrainingFault` when a logged loss or reward is NaN or infinite."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        check_finite_loss(dict(logs or {}), state.global_step)


class FiniteRewardGuard:
    """Wraps a TRL reward function: a NaN or infinite reward raises TrainingFault naming step and sample."""

    def __init__(self, func: Any, trainer: Any) -> None:
        self.func = func
        self.trainer = trainer
        self.__name__ = getattr(func, "__name__", type(func).__name__)

    def __call__(self, *args: Any, **kwargs: Any) -> list[float | None]:
        rewards = self.func(*args, **kwargs)
        for i, value in enumerate(rewards):
            if value is not None and not math.isfinite(float(value)):
                prompts = kwargs.get("prompts", args[0] if args else None)
                completions = kwargs.get("completions", args[1] if len(args) > 1 else None)
                step = self.trainer.state.global_step + 1
                raise TrainingFault(
                    f"step {step}: non-finite reward '{self.__name__}' ({float(value)}) for completion {i} "
                    f"(prompt: {_short(prompts[i] if prompts else None)!r}; "
                    f"completion: {_short(completions[i] if completions else None)!r})")
        return rewards


def guard_reward_funcs(trainer: Any) -> None:
    """Wrap every non-model reward function of a GRPO/RLOO trainer in :class:`FiniteRewardGuard`."""
    for i, func in enumerate(trainer.reward_funcs):
        if not isinstance(func, torch.nn.Module) and not isinstance(func, FiniteRewardGuard):
            trainer.reward_funcs[i] = FiniteRewardGuard(func, trainer)


def _short(value: Any, limit: int = 160) -> str:
    if isinstance(value, list):  # messages
        value = " | ".join(str(m.get("content", m)) if isinstance(m, dict) else str(m) for m in value)
    text = "" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class WandbRunIdCallback(TrainerCallback):
    """Write the active W&B run's id into each checkpoint, so ``--resume`` continues the same run."""

    def __init__(self, run: Any) -> None:
        self.run_id = getattr(run, "id", None)
        self.project = getattr(run, "project", None)

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or self.run_id is None:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            write_json(folder / WANDB_ID_FILE, {"id": self.run_id, "project": self.project})


class LineProgressCallback(ProgressCallback):
    """transformers' ``ProgressCallback`` whose bars are :func:`calrl.progress.progress` bars: whole lines in a
    log (a start line, one every ``LOG_INTERVAL`` seconds, the final state), tqdm's bar in a terminal. The
    logged metrics are still written one dict per line, as ``ProgressCallback`` writes them."""

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.training_bar = progress(total=state.max_steps, desc="training", unit="step")
        self.current_step = 0

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        if state.is_world_process_zero and self.prediction_bar is None and has_length(eval_dataloader):
            self.prediction_bar = progress(total=len(eval_dataloader), desc="evaluating", unit="batch")
        super().on_prediction_step(args, state, control, eval_dataloader=eval_dataloader, **kwargs)


def use_line_progress(trainer: Any) -> None:
    """In a log (stderr not a terminal), write the trainer's progress bar as lines (see LineProgressCallback)."""
    if getattr(trainer.args, "disable_tqdm", False) or is_terminal():
        return
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(LineProgressCallback())
