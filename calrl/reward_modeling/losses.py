"""The PPO-M reward-model loss terms (methods.md section 2), as pure functions of reward tensors.

BT(a, b) = -log sigmoid(r(a) - r(b) - margin); the calibrated loss adds
lambda * [BT(cwh, cwl) + BT(rwl, rwh)] to the ordinary BT(chosen, rejected).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(better: torch.Tensor, worse: torch.Tensor, margin: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Mean of -log sigmoid(r(better) - r(worse) - margin)."""
    return -F.logsigmoid(better - worse - margin).mean()


def calibration_loss(chosen_high: torch.Tensor, chosen_low: torch.Tensor, rejected_high: torch.Tensor,
                     rejected_low: torch.Tensor, margin: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The two calibration terms: BT(cwh, cwl) and BT(rwl, rwh)."""
    return (bradley_terry_loss(chosen_high, chosen_low, margin),
            bradley_terry_loss(rejected_low, rejected_high, margin))
