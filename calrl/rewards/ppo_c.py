"""PPO-C: adjust the reward-model score by the stated confidence (methods.md section 3).

With r the reward-model score of the response without its confidence statement (clamped to
[-clamp, clamp]), c the stated confidence in [0, 1], w the weight and avg a moving average of r:

- threshold:  adj = w * |r| * (c - 0.5);   r' = r + adj if r >= avg else r - adj
- difference: adj = w * (r - avg) * (c - 0.5); r' = r + adj

Order of the moving-average update. The reference implementation (SeanLeng1/Reward-Calibration,
``OpenRLHF/openrlhf/trainer/ppo_utils/calibrated_experience_maker.py``,
``CalibratedNaiveExperienceMaker.make_experience``) clamps r to [-10, 10], then updates
``reward_avg = mean(r) * alpha + reward_avg * (1 - alpha)``, and only then compares r with the
*updated* average and adjusts. We follow it by default (``update_before_adjust=True``);
``update_before_adjust=False`` adjusts with the average of the previous batches and updates afterwards.
The reference initialises the average from the reward model's stored mean (``reward_model.mean``);
here ``init_average`` gives that value, or ``None`` initialises it from the first batch's statistic.

``avg_type`` (the reference's option of the same name): ``mean`` tracks the batch mean of the clamped r
(above); ``std`` tracks the batch standard deviation of the clamped r (unbiased, as ``torch.std``) with the
same rate, the threshold variant then uses the signed ``adj = w * r * (c - 0.5)`` while still comparing r
with the running value, and the difference variant is unchanged. A batch of one row has no standard
deviation: it leaves the running value as it is.

The clamps before and after the adjustment are ``clamp`` terms of the reward (:mod:`calrl.rewards.terms`): the
reference clamps r to [-10, 10] before and its trainer clamps the reward again after (with w = 2, r = 9, c = 1
the difference variant then gives min(9 + 2 * 9 * 0.5, 10) = 10, average 0, not 18). The ``ppo_c`` term also
takes the batch statistic over every process (sums reduced across ranks), so every rank keeps the same average;
the reference averages over each process's own micro-batch (``ppo_c_average_cadence: per_micro_batch``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from calrl.errors import ConfigError

PPOCVariant = Literal["threshold", "difference"]
AvgType = Literal["mean", "std"]


@dataclass
class PPOCConfig:
    """Settings of the PPO-C adjustment (defaults: the reference's values)."""

    variant: PPOCVariant = "threshold"
    weight: float = 0.5
    alpha: float = 0.1
    init_average: float | None = None
    update_before_adjust: bool = True
    avg_type: AvgType = "mean"

    def __post_init__(self) -> None:
        if self.avg_type not in ("mean", "std"):
            raise ConfigError(f"must be 'mean' or 'std', got {self.avg_type!r}", field="ppo_c_avg_type")
        if self.variant not in ("threshold", "difference"):
            raise ConfigError(f"must be 'threshold' or 'difference', got {self.variant!r}", field="ppo_c_variant")
        if not 0.0 < self.alpha <= 1.0:
            raise ConfigError(f"must be in (0, 1], got {self.alpha}", field="ppo_c_alpha")


def ppo_c_adjustment(rewards: torch.Tensor, confidence: torch.Tensor, average: torch.Tensor | float, *,
                     variant: PPOCVariant, weight: float, avg_type: AvgType = "mean") -> torch.Tensor:
    """The additive adjustment r' - r of PPO-C for already clamped ``rewards`` (pure function)."""
    centred = confidence.to(rewards.dtype) - 0.5
    if variant == "threshold":
        adj = weight * (rewards if avg_type == "std" else rewards.abs()) * centred
        return torch.where(rewards >= average, adj, -adj)
    if variant == "difference":
        return weight * (rewards - average) * centred
    raise ValueError(f"unknown PPO-C variant {variant!r}")


def batch_statistic(total: float, total_sq: float, n: float, avg_type: AvgType) -> float | None:
    """Mean, or unbiased standard deviation, from the sum, the sum of squares and the count (None if undefined)."""
    if n < 1 or (avg_type == "std" and n < 2):
        return None
    mean = total / n
    if avg_type == "mean":
        return mean
    return max(0.0, (total_sq - n * mean * mean) / (n - 1)) ** 0.5


class PPOCAdjuster:
    """Stateful PPO-C adjustment: keeps the moving average of the (already clamped) rewards across batches.

    Example (threshold variant, w = 0.5, the average moving from 1 to 0.1 x 2.5 + 0.9 x 1 = 1.15 first):
        >>> import torch
        >>> from calrl.rewards.ppo_c import PPOCAdjuster
        >>> adj = PPOCAdjuster(variant="threshold", weight=0.5, init_average=1.0)
        >>> adjusted, adjustment = adj(torch.tensor([2.0, 3.0]), torch.tensor([1.0, 0.0]))
        >>> adjusted
        tensor([2.5000, 2.2500])
        >>> round(adj.average, 4)
        1.15
    """

    def __init__(self, config: PPOCConfig | None = None, **kwargs: Any) -> None:
        self.config = config if config is not None else PPOCConfig(**kwargs)
        if config is not None and kwargs:
            raise TypeError("pass either a PPOCConfig or keyword settings, not both")
        self.average: float | None = self.config.init_average
        self.num_updates = 0

    def _update(self, batch_mean: float) -> None:
        if self.average is None:
            self.average = batch_mean
        else:
            self.average = self.config.alpha * batch_mean + (1.0 - self.config.alpha) * self.average
        self.num_updates += 1

    def __call__(self, rewards: torch.Tensor, confidence: torch.Tensor, *, update: bool = True,
                 batch_mean: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(rewards + adjustment, adjustment)`` for one batch; update the moving average unless
        ``update=False``.

        ``batch_mean``: the batch statistic (mean or std, by ``avg_type``) when the caller took it (the ``ppo_c``
        term takes it over every process); None with ``update=True`` takes it over ``rewards``. With
        ``update=False`` (e.g. evaluation) the current average is used and nothing changes.
        """
        if rewards.shape != confidence.shape:
            raise ValueError(f"rewards {tuple(rewards.shape)} and confidence {tuple(confidence.shape)} differ")
        pending: float | None = None  # batch mean still to fold into the average after adjusting
        if update:
            if batch_mean is None:
                r = rewards.detach().double()
                batch_mean = batch_statistic(float(r.sum()), float((r * r).sum()), float(r.numel()),
                                             self.config.avg_type)
            if batch_mean is None:
                pass  # no statistic for this batch (one row under avg_type std): the average stays
            elif self.config.update_before_adjust or self.average is None:
                self._update(float(batch_mean))  # the reference's order; the first batch also initialises here
            else:
                pending = float(batch_mean)
        avg = self.average if self.average is not None else rewards.float().mean().item()
        adjustment = ppo_c_adjustment(rewards, confidence.to(rewards.device), avg, variant=self.config.variant,
                                      weight=self.config.weight, avg_type=self.config.avg_type)
        if pending is not None:
            self._update(pending)
        return rewards + adjustment, adjustment

    def state_dict(self) -> dict[str, Any]:
        return {"average": self.average, "num_updates": self.num_updates, "variant": self.config.variant}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.average = None if state.get("average") is None else float(state["average"])
        self.num_updates = int(state.get("num_updates", 0))
