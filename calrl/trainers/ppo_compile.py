"""``torch.compile`` in calrl's PPO: what ``TrainingArguments.torch_compile`` (with ``torch_compile_backend`` and
``torch_compile_mode``) compiles.

- The trained module (policy and value model, :class:`~calrl.trainers.ppo_rollout.PolicyAndValue`): compiled by
  ``accelerate`` when the trainer prepares it, as ``transformers.Trainer`` does for any model (accelerate's dynamo
  plugin, built by the Trainer from the same three keys). That covers the training forward and the rollout's value
  forward (and a LoRA run's reference), each compiled for its own grad mode.
- Generation: the generating policy's ``forward`` (the transformers model under a PEFT wrapper) is compiled once
  for generation alone (no gradients, eval mode, KV cache) with ``dynamic=True`` and is the model's ``forward``
  only while it generates (:meth:`CompiledForwards.generating`): the rollout's sampling and the evaluation's
  greedy decoding. The training forward keeps its own compiled graph (the trained module's), so neither
  recompiles on the other's grad mode or cache state.
- The frozen models (reference, reward model): their backbone (``model.<base_model_prefix>``, what both the
  reference forward and the reward pipeline's reading call) compiled in place with ``nn.Module.compile`` and
  ``dynamic=True``; the module objects and their state dicts stay as they were.

Generation and the frozen models are compiled only where the trained module is neither FSDP- nor DeepSpeed-sharded
(one process, DDP); under FSDP or DeepSpeed only accelerate's compile of the trained module applies. With
``torch_compile`` off nothing here runs. The first updates pay the compile time (tens of seconds on a CPU).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from accelerate.utils import DistributedType, is_compiled_module

from calrl.errors import ConfigError, did_you_mean

#: strategies under which only accelerate's compile of the trained module applies
SHARDED = (DistributedType.DEEPSPEED, DistributedType.FSDP)
#: ``torch.compile``'s modes (its documentation's list)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def check_compile_keys(backend: str | None, mode: str | None) -> None:
    """Refuse, in one line, a ``torch_compile_backend`` torch does not know or a ``torch_compile_mode`` that is not
    one of ``torch.compile``'s (checked with the recipe, not at the first compile)."""
    if backend is not None:
        known = torch.compiler.list_backends(exclude_tags=())  # imports torch._dynamo: only when a backend is named
        if backend not in known:
            raise ConfigError(f"torch.compile has no backend {backend!r}{did_you_mean(backend, known)}; it has "
                              f"{', '.join(torch.compiler.list_backends())}", field="torch_compile_backend")
    if mode is not None and mode not in COMPILE_MODES:
        raise ConfigError(f"must be one of {', '.join(COMPILE_MODES)}, got {mode!r}{did_you_mean(mode, COMPILE_MODES)}",
                          field="torch_compile_mode")


def compile_options(args: Any) -> dict[str, Any] | None:
    """``torch.compile``'s keyword arguments from a ``TrainingArguments``' ``torch_compile`` keys (None when off).

    ``dynamic=True``: the rollout's shapes change with every prompt batch and every generated token.
    """
    if not getattr(args, "torch_compile", False):
        return None
    options: dict[str, Any] = {"backend": args.torch_compile_backend or "inductor", "dynamic": True}
    if args.torch_compile_mode is not None:
        options["mode"] = args.torch_compile_mode
    return options


def named_module(model: Any, accelerator: Any) -> Any:
    """The prepared trained module as its parameter names and state dict are read (checkpoints, the critic's
    gradient groups): one process or DDP under accelerate's compile, the module inside the compile layer (whose own
    names carry torch's prefix: a checkpoint of the compiled module held no policy weights); otherwise ``model``."""
    if is_compiled_module(model) and accelerator.distributed_type not in SHARDED:
        return accelerator.unwrap_model(model, keep_torch_compile=False)
    return model


def generating_model(model: Any) -> torch.nn.Module:
    """The module whose ``forward`` ``generate`` calls at every token: the transformers model under a PEFT wrapper."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class CompiledForwards:
    """The forwards a PPO run compiles beside accelerate's trained module (module docstring); inert when
    ``options`` is None (``torch_compile`` off) or the run is sharded (``distributed_type`` in :data:`SHARDED`)."""

    def __init__(self, options: dict[str, Any] | None, distributed_type: Any = None) -> None:
        self.options = None if distributed_type in SHARDED else options
        self._generation: tuple[torch.nn.Module, Any] | None = None

    @property
    def active(self) -> bool:
        return self.options is not None

    def compile_frozen(self, model: torch.nn.Module | None) -> None:
        """Compile a frozen model's backbone in place (the whole model when it has no ``base_model_prefix``)."""
        if model is None or self.options is None:
            return
        backbone = getattr(model, getattr(model, "base_model_prefix", "") or "", None)
        (backbone if isinstance(backbone, torch.nn.Module) else model).compile(**self.options)

    def _generation_forward(self, target: torch.nn.Module) -> Any:
        if self._generation is None or self._generation[0] is not target:
            self._generation = (target, torch.compile(target.forward, **self.options))
        return self._generation[1]

    @contextmanager
    def generating(self, model: Any) -> Iterator[None]:
        """While the block runs, ``model`` generates with its compiled generation forward (its own ``forward``
        attribute is restored afterwards)."""
        if self.options is None:
            yield
            return
        target = generating_model(model)
        own = vars(target).get("forward")  # an instance attribute someone else set, kept as it was
        target.forward = self._generation_forward(target)
        try:
            yield
        finally:
            if own is None:
                del target.forward
            else:
                target.forward = own
