"""Generate with a model whose parameters may be sharded (FSDP, DeepSpeed ZeRO-3) or wrapped (DDP).

:func:`generation_model` yields the bare generating model with its full parameters present on every
process for the duration of the block, and puts things back afterwards:

- DDP / single process: the wrapped module, unchanged;
- FSDP (v1 ``FullyShardedDataParallel``): inside ``summon_full_params`` (no write-back);
- FSDP2 (``fully_shard``): ``unshard()`` before, ``reshard()`` after;
- DeepSpeed ZeRO-3: inside ``deepspeed.zero.GatheredParameters`` over all parameters.

Gradient checkpointing is switched off and the KV cache on while generating (both are restored).
Every process must enter the block together: gathering is a collective operation.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch


def _is_zero3(accelerator: Any) -> bool:
    plugin = getattr(getattr(accelerator, "state", None), "deepspeed_plugin", None)
    return plugin is not None and getattr(plugin, "zero_stage", None) == 3


def _fsdp_v1_root(model: Any) -> Any:
    try:
        # torch.distributed.fsdp: 0.7 s to import, absent from a torch built without distributed support
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:  # a torch built without distributed support
        return None
    return model if isinstance(model, FullyShardedDataParallel) else None


def _fsdp2_modules(model: torch.nn.Module) -> list[Any]:
    try:
        from torch.distributed.fsdp import FSDPModule  # as in _fsdp_v1_root: 0.7 s, maybe absent
    except ImportError:
        return []
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def fsdp_sharded(model: Any) -> bool:
    """Whether ``model`` (as prepared) is sharded by FSDP (v1 root, or FSDP2 ``fully_shard`` modules)."""
    return _fsdp_v1_root(model) is not None or bool(_fsdp2_modules(model))


def reshard(model: Any) -> None:
    """Put every FSDP2 module of ``model`` back in its sharded state. A forward without gradients leaves the root
    unsharded (only a backward reshards it), its parameters then read as full tensors: state-dict functions that
    match an optimiser's (sharded) parameters to the model's need it sharded."""
    for module in _fsdp2_modules(model):
        module.reshard()


def unwrap(model: Any, accelerator: Any = None) -> Any:
    """The module inside DDP / DeepSpeed / torch.compile wrappers (``accelerator.unwrap_model`` when given)."""
    if accelerator is not None:
        return accelerator.unwrap_model(model)
    while isinstance(getattr(model, "module", None), torch.nn.Module):
        model = model.module
    return model


@contextmanager
def generation_mode(model: torch.nn.Module) -> Iterator[None]:
    """Gradient checkpointing off and ``use_cache`` on, restored afterwards; eval mode inside."""
    checkpointing = getattr(model, "is_activation_checkpointing", None)  # transformers >= 5.x name
    if checkpointing is None:
        checkpointing = getattr(model, "is_gradient_checkpointing", False)
    checkpointing = bool(checkpointing)
    config = getattr(model, "config", None)
    use_cache = getattr(config, "use_cache", None)
    was_training = model.training
    if checkpointing:
        model.gradient_checkpointing_disable()
    if config is not None and use_cache is not None:
        config.use_cache = True
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
        if config is not None and use_cache is not None:
            config.use_cache = use_cache
        if checkpointing:
            model.gradient_checkpointing_enable()


def _unshard_fsdp2(sharded: list[Any], accelerator: Any, stack: ExitStack) -> None:
    """Unshard every FSDP2 module and keep it so through the generation's many forwards: with the modules'
    reshard-after-forward on, each token's forward would all-gather again, and processes whose generations stop
    after different numbers of tokens would wait on each other forever. Restored and resharded afterwards."""
    if not sharded:
        return
    plugin = getattr(getattr(accelerator, "state", None), "fsdp_plugin", None)
    after_forward = getattr(plugin, "reshard_after_forward", True)
    for module in sharded:
        module.unshard()
        module.set_reshard_after_forward(False, recurse=False)

    def restore() -> None:
        for module in sharded:
            module.set_reshard_after_forward(after_forward, recurse=False)
            module.reshard()

    stack.callback(restore)


@contextmanager
def generation_model(model: Any, accelerator: Any = None, *, gather: bool = True,
                     select: Any = None) -> Iterator[Any]:
    """Yield the generating model with full parameters (see the module docstring).

    ``select`` picks the generating sub-module of the unwrapped model (e.g. ``lambda m: m.policy`` for a
    policy-and-value wrapper). ``gather=False`` skips gathering ZeRO-3 parameters (DeepSpeed then fetches
    them layer by layer: slower, less memory).
    """
    bare = unwrap(model, accelerator)
    target = select(bare) if select is not None else bare
    with ExitStack() as stack:
        if gather and _is_zero3(accelerator):
            import deepspeed  # optional dependency (calrl[deepspeed]): only a ZeRO-3 run has it

            stack.enter_context(deepspeed.zero.GatheredParameters(list(model.parameters())))
        root = _fsdp_v1_root(model)
        if root is not None:
            from torch.distributed.fsdp import FullyShardedDataParallel  # only an FSDP v1 run: 0.7 s

            stack.enter_context(FullyShardedDataParallel.summon_full_params(root, recurse=True, writeback=False))
        else:
            _unshard_fsdp2(_fsdp2_modules(bare), accelerator, stack)
        stack.enter_context(generation_mode(target))
        yield target
