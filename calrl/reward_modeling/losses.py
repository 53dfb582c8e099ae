"""The PPO-M reward-model loss terms (methods.md sections 2 and 9), as pure functions of reward tensors.

BT(a, b) = -log sigmoid(r(a) - r(b) - margin). Two losses (``LOSSES``):

- ``combined`` (calrl's default): BT(chosen, rejected) + lambda * [BT(cwh, cwl) + BT(rwl, rwh)];
- ``calibration_only`` (the published script, which fine-tunes an already trained RM):
  lambda * [BT(cwh, cwl) + BT(rwl, rwh)], no BT(chosen, rejected) term.

A per-row margin (the data's ``margin`` column) enters the calibration terms, as in the reference; a
scalar ``calibration_margin`` is added to it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(better: torch.Tensor, worse: torch.Tensor, margin: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Mean of -log sigmoid(r(better) - r(worse) - margin)."""
    return -F.logsigmoid(better - worse - margin).mean()


LOSSES = ("combined", "calibration_only")


def calibrated_rm_loss(preference: torch.Tensor, calibration: torch.Tensor, lam: float, loss: str) -> torch.Tensor:
    """The total PPO-M loss from the preference term and the sum of the two calibration terms."""
    if loss == "combined":
        return preference + lam * calibration
    if loss == "calibration_only":
        return lam * calibration
    raise ValueError(f"unknown PPO-M loss {loss!r}")


def calibration_loss(chosen_high: torch.Tensor, chosen_low: torch.Tensor, rejected_high: torch.Tensor,
                     rejected_low: torch.Tensor, margin: float | torch.Tensor = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The two calibration terms: BT(cwh, cwl) and BT(rwl, rwh)."""
    return (bradley_terry_loss(chosen_high, chosen_low, margin),
            bradley_terry_loss(rejected_low, rejected_high, margin))
