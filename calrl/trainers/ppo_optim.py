"""The optimiser side of PPO: the critic's own parameter groups and clipping, globally whitened advantages.

The reference gives the critic its own optimiser (its own learning rate, gradients clipped apart from the actor's)
and whitens advantages over its whole replay buffer; trl 1.12 has one optimiser, one clipping norm and whitens each
process's batch. calrl keeps trl 1.12's by default and offers the reference's by name
(``critic_learning_rate``, ``critic_max_grad_norm``, ``advantage_whitening: global``; docs/fidelity.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from calrl.trainers.ppo_compile import named_module
from calrl.trainers.ppo_core import token_logprobs
from calrl.trainers.ppo_rollout import Rollout, temperature_scaled


class StepCheck(NamedTuple):
    """One optimiser step under ``max_step_kl``: the approximate KL of the step kept (0 when it was undone), of the
    step as the optimiser took it, and how many times it was halved (``step_backtracks + 1``: undone)."""

    kl: float
    raw_kl: float
    halvings: int


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
    (:meth:`_critic_optimizer`), gradient clipping (:meth:`_clip_gradients`) and the bounded step
    (:meth:`_bounded_step`).

    Expects on ``self`` (``transformers.Trainer`` and ``CalibratedPPOTrainer`` provide them): ``args`` (a
    ``CalibratedPPOConfig``: ``learning_rate``, ``critic_learning_rate``, ``weight_decay``, ``max_grad_norm``,
    ``critic_max_grad_norm``, ``max_step_kl``, ``step_backtracks``, ``temperature``), ``accelerator``, ``model``
    (the policy-and-value wrapper), ``optimizer``, ``pad_token_id``, ``get_decay_parameter_names`` and
    ``get_optimizer_cls_and_kwargs``.
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

    def _bounded_step(self, rollout: Rollout, trained: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> StepCheck:
        """``optimizer.step()``; under ``max_step_kl`` the step is then checked and bounded.

        ``trained``: the mini-batch's micro-batches as ``(row indices, token log-probabilities of the training
        forward)``, i.e. the policy before the step. A step whose approximate KL (:meth:`_step_kl`) is above
        ``max_step_kl`` is halved, parameter by parameter towards where it started (``p = old + (p - old) / 2``),
        until it is at or below the bound; after ``step_backtracks`` halvings it is undone. The optimiser's moments
        keep the gradient (as a line search on a trust region does: Schulman et al. 2015, TRPO). PPO's clipping
        bounds the policy ratio only through the gradient of the next mini-batch, after the step; this bounds the
        step itself. One more no-grad forward of the policy per optimiser step, one per halving, and a copy of the
        trained parameters.
        """
        limit = self.args.max_step_kl
        if limit is None:
            self.optimizer.step()
            return StepCheck(0.0, 0.0, 0)
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        before = [p.detach().clone() for p in params]
        self.optimizer.step()
        raw = kl = self._step_kl(rollout, trained)
        halvings = 0
        with torch.no_grad():
            while kl > limit and halvings < self.args.step_backtracks:
                for param, old in zip(params, before):
                    param.sub_(old).mul_(0.5).add_(old)
                halvings += 1
                kl = self._step_kl(rollout, trained)
            if kl > limit:
                for param, old in zip(params, before):
                    param.copy_(old)
                return StepCheck(0.0, raw, halvings + 1)
        return StepCheck(kl, raw, halvings)

    def _step_kl(self, rollout: Rollout, trained: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> float:
        """The mean over the response tokens of ``trained``'s rows (over every process) of
        ``0.5 * (log p_now - log p_trained)**2``, the policy now against its log-probabilities in ``trained``."""
        acc = self.accelerator
        total = torch.zeros(2, dtype=torch.float64, device=acc.device)
        with torch.no_grad():
            for idx, logprobs in trained:
                logits, _ = self.model(rollout.query_responses[idx], self.pad_token_id, "policy", rollout.context_length)
                now = token_logprobs(temperature_scaled(logits, self.args.temperature),
                                     rollout.responses[idx]).float()
                keep = ~rollout.padding[idx]
                total += torch.stack([(0.5 * (now - logprobs) ** 2)[keep].sum().double(),
                                      keep.sum().double()]).to(acc.device)
        if acc.num_processes > 1:
            total = acc.reduce(total, reduction="sum")
        return float(total[0] / total[1].clamp(min=1.0))


def pooled_moments(accelerator: Any, keep: torch.Tensor,
                   *values: torch.Tensor) -> list[tuple[float, float, float]]:
    """Per tensor of ``values``: the sum, sum of squares and count of its entries where ``keep``, over every process
    (float64, one reduction for all of them)."""
    rows = [v[keep].double() for v in values]
    local = torch.stack([torch.stack([r.sum(), (r * r).sum(), torch.tensor(float(r.numel()), dtype=torch.float64,
                                                                            device=r.device)]) for r in rows])
    total = accelerator.reduce(local.to(accelerator.device), reduction="sum") if accelerator.num_processes > 1 \
        else local
    return [tuple(float(x) for x in row) for row in total.cpu()]


def global_moments(accelerator: Any, advantages: torch.Tensor, padding: torch.Tensor,
                   whitening: str) -> tuple[float, float, float] | None:
    """``whitening == "global"``: the unmasked advantages' sum, sum of squares and count over every process, for
    :func:`calrl.trainers.ppo_core.whitened_advantages`; ``"local"``: None (this process's batch)."""
    if whitening == "local":
        return None
    return pooled_moments(accelerator, ~padding, advantages)[0]
