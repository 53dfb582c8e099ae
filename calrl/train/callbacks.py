"""Callbacks the runners add: fault detection, and PPO's epoch checkpoints and resume.

TRL's PPOTrainer loop fires only ``on_train_begin``, ``on_step_end``, ``on_save`` and ``on_train_end``,
resets ``global_step`` to 0 at the start of ``train()``, never reloads a checkpoint, and does not save the
value model. The PPO callbacks here fill those gaps from the outside, at the events the loop does fire.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from calrl.errors import TrainingFault
from calrl.train.common import check_finite_loss

VALUE_MODEL_DIR = "value_model"
_EPS = 1e-6


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


class PPOEpochCheckpointCallback(TrainerCallback):
    """Save a checkpoint at every epoch boundary of TRL's PPO loop (when ``int(state.epoch)`` increases).

    The PPO loop has no epoch events, so ``save_strategy: epoch`` would never save; this sets
    ``control.should_save`` at the step where an epoch ends (the same step the calibration eval runs at) and
    at the end of training.
    """

    def __init__(self) -> None:
        self.last_epoch = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.last_epoch = math.floor((state.epoch or 0.0) + _EPS)

    def on_step_end(self, args, state, control, **kwargs):
        epoch = math.floor((state.epoch or 0.0) + _EPS)
        if epoch > self.last_epoch:
            self.last_epoch = epoch
            control.should_save = True
        return control

    def on_train_end(self, args, state, control, **kwargs):
        saved = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not saved.is_dir():
            control.should_save = True
        return control


class ValueModelSaveCallback(TrainerCallback):
    """Save PPO's value model into each checkpoint (TRL saves only the policy), for resuming."""

    def __init__(self, value_model: Any) -> None:
        self.value_model = value_model

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            self.value_model.save_pretrained(folder / VALUE_MODEL_DIR)


class PPOResumeCallback(TrainerCallback):
    """Continue TRL's PPO loop from a checkpoint: step count, episode, optimizer and LR scheduler.

    The runner loads the policy (and value model) weights from the checkpoint before building the trainer.
    ``PPOTrainer.train()`` sets ``global_step = episode = 0`` and then fires ``on_train_begin`` before its
    loop; here the counters are set back to the checkpoint's, the remaining number of updates is what the
    loop runs (``args.num_total_batches`` is read after this event), and the optimizer and scheduler states
    are restored. The data order restarts from the seed (the PPO dataloader has no resumable state).
    """

    def __init__(self, checkpoint: str) -> None:
        self.checkpoint = Path(checkpoint)
        self.resumed_step = 0

    def on_train_begin(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
        import json

        saved = json.loads((self.checkpoint / "trainer_state.json").read_text())
        step = int(saved["global_step"])
        self.resumed_step = step
        state.global_step = step
        state.episode = int(saved.get("episode") or step * args.batch_size)
        state.epoch = float(saved.get("epoch") or 0.0)
        state.log_history = list(saved.get("log_history") or [])
        args.num_total_batches = max(0, state.max_steps - step)
        optim_file = self.checkpoint / "optimizer.pt"
        if optimizer is not None and optim_file.is_file():
            optimizer.load_state_dict(torch.load(optim_file, map_location="cpu", weights_only=True))
        sched_file = self.checkpoint / "scheduler.pt"
        if lr_scheduler is not None and sched_file.is_file():
            lr_scheduler.load_state_dict(torch.load(sched_file, map_location="cpu", weights_only=True))
        return control
