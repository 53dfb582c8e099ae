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

After the adjustment the reference's trainer clamps the reward to [-10, 10] again (its reward function);
``final_clamp`` (on by default) does the same with ``clamp``: with w = 2, r = 9, c = 1 the difference
variant gives min(9 + 2 * 9 * 0.5, 10) = 10 (average 0), not 18.

The reference averages over each process's own micro-batch; here the batch statistic is taken over all
processes (sums reduced across ranks) so every rank keeps the same average.
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
    clamp: float = 10.0
    init_average: float | None = None
    update_before_adjust: bool = True
    avg_type: AvgType = "mean"
    final_clamp: bool = True

    def __post_init__(self) -> None:
        if self.avg_type not in ("mean", "std"):
            raise ConfigError(f"must be 'mean' or 'std', got {self.avg_type!r}", field="ppo_c_avg_type")
        if self.variant not in ("threshold", "difference"):
            raise ConfigError(f"must be 'threshold' or 'difference', got {self.variant!r}", field="ppo_c_variant")
        if not 0.0 < self.alpha <= 1.0:
            raise ConfigError(f"must be in (0, 1], got {self.alpha}", field="ppo_c_alpha")
        if self.clamp <= 0:
            raise ConfigError(f"must be positive, got {self.clamp}", field="reward_clamp")


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
    """Stateful PPO-C adjustment: keeps the moving average of clamped rewards across batches.

    ``accelerator`` (optional): with several processes the batch mean is reduced over all of them.
    """

    def __init__(self, config: PPOCConfig | None = None, *, accelerator: Any = None, **kwargs: Any) -> None:
        self.config = config if config is not None else PPOCConfig(**kwargs)
        if config is not None and kwargs:
            raise TypeError("pass either a PPOCConfig or keyword settings, not both")
        self.accelerator = accelerator
        self.average: float | None = self.config.init_average
        self.num_updates = 0

    def global_stat(self, rewards: torch.Tensor) -> float | None:
        """The running statistic's batch value (mean, or unbiased std) over every process; None if undefined."""
        r = rewards.detach().double()
        sums = torch.stack([r.sum(), (r * r).sum(), torch.tensor(float(r.numel()), dtype=torch.float64,
                                                                 device=r.device)])
        acc = self.accelerator
        if acc is not None and getattr(acc, "num_processes", 1) > 1:
            sums = acc.reduce(sums, reduction="sum")
        return batch_statistic(float(sums[0]), float(sums[1]), float(sums[2]), self.config.avg_type)

    def _update(self, batch_mean: float) -> None:
        if self.average is None:
            self.average = batch_mean
        else:
            self.average = self.config.alpha * batch_mean + (1.0 - self.config.alpha) * self.average
        self.num_updates += 1

    def clamp(self, rewards: torch.Tensor) -> torch.Tensor:
        return rewards.clamp(-self.config.clamp, self.config.clamp)

    def final(self, adjusted: torch.Tensor) -> torch.Tensor:
        """The adjusted reward as the reference's trainer passes it on: clamped again when ``final_clamp``."""
        return self.clamp(adjusted) if self.config.final_clamp else adjusted

    def __call__(self, rewards: torch.Tensor, confidence: torch.Tensor, *, update: bool = True,
                 batch_mean: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(adjusted, adjustment)`` for one batch; update the moving average unless ``update=False``.

        ``rewards`` are clamped first; ``adjusted = final(clamped + adjustment)`` (clamped again when
        ``final_clamp``) and ``adjustment`` is what the adjustment added before that clamp. ``batch_mean``
        may be passed when the caller already reduced the batch statistic (mean or std, by ``avg_type``)
        over processes; None with ``update=True`` computes it here. With ``update=False`` (e.g.
        evaluation) the current average is used and nothing changes.
        """
        if rewards.shape != confidence.shape:
            raise ValueError(f"rewards {tuple(rewards.shape)} and confidence {tuple(confidence.shape)} differ")
        clamped = self.clamp(rewards)
        pending: float | None = None  # batch mean still to fold into the average after adjusting
        if update:
            mean = self.global_stat(clamped) if batch_mean is None else batch_mean
            if mean is None:
                pass  # no statistic for this batch (one row under avg_type std): the average stays
            elif self.config.update_before_adjust or self.average is None:
                self._update(float(mean))  # the reference's order; the first batch also initialises here
            else:
                pending = float(mean)
        avg = self.average if self.average is not None else clamped.float().mean().item()
        adjustment = ppo_c_adjustment(clamped, confidence.to(clamped.device), avg, variant=self.config.variant,
                                      weight=self.config.weight, avg_type=self.config.avg_type)
        if pending is not None:
            self._update(pending)
        return self.final(clamped + adjustment), adjustment

    def state_dict(self) -> dict[str, Any]:
        return {"average": self.average, "num_updates": self.num_updates, "variant": self.config.variant}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.average = None if state.get("average") is None else float(state["average"])
        self.num_updates = int(state.get("num_updates", 0))
