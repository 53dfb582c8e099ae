"""PPO under DeepSpeed (ZeRO-3 above all): the frozen models as DeepSpeed inference engines, rollout generation with
ZeRO-3's hooks removed, and checkpoints through the engine. Each is TRL's or DeepSpeed's public API; calrl only
routes to it when ``accelerator.distributed_type`` is DeepSpeed (every other strategy keeps its own path).

- :func:`prepare_frozen`: ``trl.models.prepare_deepspeed`` (an eval engine, sharded at stage 3, stage 0 otherwise);
- :func:`rollout_policy`: ``trl.models.unwrap_model_for_generation`` (gathers the parameters once and removes the
  hooks that would re-fetch each module at every token), then the policy inside the policy-and-value wrapper;
- :func:`save_engine` / :func:`load_engine`: the engine's own checkpoint (``save_checkpoint`` /
  ``load_checkpoint``, every process: its partition of the weights and of the optimiser state), written inside
  calrl's staged checkpoint folder, read back through the engine on resume.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import DistributedType

from calrl.errors import InputError
from calrl.generation.sharding import generation_mode, generation_model

ENGINE_DIR = "deepspeed"  # the engine checkpoint's folder inside checkpoint-N
ENGINE_TAG = "engine"


def uses_deepspeed(accelerator: Any) -> bool:
    return getattr(accelerator, "distributed_type", None) == DistributedType.DEEPSPEED


def prepare_frozen(model: torch.nn.Module | None, accelerator: Any) -> Any:
    """A frozen model (reference, reward model) as TRL initialises it for inference under DeepSpeed."""
    if model is None:
        return None
    # imported here: optional for PPO (only DeepSpeed runs need TRL; calrl.trainers.ppo imports none)
    from trl.models import prepare_deepspeed

    return prepare_deepspeed(model.eval().requires_grad_(False), accelerator)


def bare(model: Any) -> Any:
    """The module inside a DeepSpeed engine (its ZeRO-3 hooks stay on it), or ``model`` itself."""
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, torch.nn.Module) else model


@contextmanager
def rollout_policy(trainer: Any) -> Iterator[Any]:
    """The policy to sample rollouts from, its full parameters present on every process for the block."""
    acc, gather = trainer.accelerator, trainer.args.ds3_gather_for_generation
    if not uses_deepspeed(acc):
        with generation_model(trainer.model, acc, gather=gather, select=lambda m: m.policy) as policy:
            yield policy
        return
    # imported here: optional for PPO (only DeepSpeed runs need TRL; calrl.trainers.ppo imports none)
    from trl.models import unwrap_model_for_generation

    with unwrap_model_for_generation(trainer.model, acc, gather_deepspeed3_params=gather) as wrapper, \
            generation_mode(wrapper.policy):
        yield wrapper.policy


def save_engine(trainer: Any, folder: Path) -> None:
    """Every process writes its partition of the weights and optimiser state into ``folder/deepspeed``."""
    trainer.model.save_checkpoint(str(folder / ENGINE_DIR), tag=ENGINE_TAG, save_latest=False)


def load_engine(trainer: Any, folder: Path) -> None:
    """Restore :func:`save_engine` through the engine (weights into the partitioned parameters, each process's
    optimiser partition); calrl's own scheduler and state are restored by the caller."""
    if not (folder / ENGINE_DIR / ENGINE_TAG).is_dir():
        raise InputError(f"no {ENGINE_DIR}/{ENGINE_TAG} (DeepSpeed's engine checkpoint): saved under another "
                         "strategy; resume it with that strategy", path=str(folder))
    path, _ = trainer.model.load_checkpoint(str(folder / ENGINE_DIR), tag=ENGINE_TAG, load_module_strict=True,
                                            load_optimizer_states=True, load_lr_scheduler_states=False)
    if path is None:
        raise InputError("DeepSpeed could not load its engine checkpoint", path=str(folder / ENGINE_DIR))
