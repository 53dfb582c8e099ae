"""The optimiser side of PPO: the critic's own parameter groups and clipping, globally whitened advantages.

The reference gives the critic its own optimiser (its own learning rate, gradients clipped apart from the actor's)
and whitens advantages over its whole replay buffer; trl 1.12 has one optimiser, one clipping norm and whitens each
process's batch. calrl keeps trl 1.12's by default and offers the reference's by name
(``critic_learning_rate``, ``critic_max_grad_norm``, ``advantage_whitening: global``; docs/fidelity.md).
"""

from __future__ import annotations

from typing import Any

import torch

from calrl.trainers.ppo_compile import named_module


def split_critic(model: Any) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    """The trained ``(name, parameter)`` pairs of the policy and of the value model (or value head)."""
    policy, critic = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            bare = name.split("module.", 1)[-1] if name.startswith("module.") else name
            (critic if bare.startswith(("value_model.", "value_head.")) else policy).append((name, param))
    return policy, critic


class PPOOptimMixin:
    """The optimiser side of :class:`~calrl.trainers.ppo.CalibratedPPOTrainer`: the critic's own parameter groups
    (:meth:`_critic_optimizer`) and gradient clipping (:meth:`_clip_gradients`).

    Expects on ``self`` (``transformers.Trainer`` and ``CalibratedPPOTrainer`` provide them): ``args`` (a
    ``CalibratedPPOConfig``: ``learning_rate``, ``critic_learning_rate``, ``weight_decay``, ``max_grad_norm``,
    ``critic_max_grad_norm``), ``accelerator``, ``model`` (the policy-and-value wrapper),
    ``get_decay_parameter_names`` and ``get_optimizer_cls_and_kwargs``.
    """

    def _critic_optimizer(self, model: Any) -> torch.optim.Optimizer:
        """``transformers.Trainer``'s optimiser class and settings, the policy's parameters at ``learning_rate`` and
        the value model's at ``critic_learning_rate`` (each with and without weight decay, as the Trainer groups
        them); the scheduler then scales both rates by one schedule, as the reference's two schedulers of one shape
        do."""
        args = self.args
        decay = set(self.get_decay_parameter_names(model))
        groups = []
        for named, lr in zip(split_critic(model), (args.learning_rate, args.critic_learning_rate)):
            for with_decay in (True, False):
                params = [p for n, p in named if (n in decay) == with_decay]
                if params:
                    groups.append({"params": params, "lr": lr,
                                   "weight_decay": args.weight_decay if with_decay else 0.0})
        optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(args, model)
        kwargs.pop("lr", None)
        return optimizer_cls(groups, **kwargs)

    def _clip_gradients(self) -> None:
        """One norm over every gradient (trl 1.12), or with ``critic_max_grad_norm`` the policy's gradients to
        ``max_grad_norm`` and the value model's to ``critic_max_grad_norm``, apart (the reference)."""
        args, acc = self.args, self.accelerator
        if args.critic_max_grad_norm is None:
            if args.max_grad_norm and args.max_grad_norm > 0:
                acc.clip_grad_norm_(self.model.parameters(), args.max_grad_norm)
            return
        policy, critic = split_critic(named_module(self.model, acc))
        if args.max_grad_norm and args.max_grad_norm > 0:
            acc.clip_grad_norm_([p for _, p in policy], args.max_grad_norm)
        acc.clip_grad_norm_([p for _, p in critic], args.critic_max_grad_norm)


def global_moments(accelerator: Any, advantages: torch.Tensor, padding: torch.Tensor,
                   whitening: str) -> tuple[float, float, float] | None:
    """``whitening == "global"``: the unmasked advantages' sum, sum of squares and count over every process, for
    :func:`calrl.trainers.ppo_core.whitened_advantages`; ``"local"``: None (this process's batch)."""
    if whitening == "local":
        return None
    kept = advantages[~padding].double()
    local = torch.stack([kept.sum(), (kept * kept).sum(), torch.tensor(float(kept.numel()), dtype=torch.float64)])
    total = accelerator.reduce(local.to(accelerator.device), reduction="sum") if accelerator.num_processes > 1 \
        else local
    return tuple(float(x) for x in total.cpu())
