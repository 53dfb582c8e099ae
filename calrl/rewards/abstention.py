"""Abstention as a rewarded outcome (methods.md section 5).

A response that abstains ("I don't know", a clarifying question), as detected by
``calrl.confidence.is_abstention``, gets a configured reward instead of the answer reward.

Implied threshold. With reward R_c for a correct answer, R_w for a wrong one and R_a for an
abstention (R_w < R_a < R_c), answering has expected reward p*R_c + (1-p)*R_w when the model is
correct with probability p. Abstaining is optimal iff R_a > p*R_c + (1-p)*R_w, i.e. iff

    p < (R_a - R_w) / (R_c - R_w).

Example: R_c = 1, R_w = 0, R_a = 0.3: abstain when P(correct) < 0.3. With R_w = -1, R_a = 0:
abstain when P(correct) < 0.5.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from calrl.confidence import is_abstention
from calrl.errors import ConfigError


def default_detector(text: str) -> bool:
    return is_abstention(text)


def abstention_threshold(correct_reward: float, wrong_reward: float, abstain_reward: float) -> float:
    """P(correct) below which abstaining has the higher expected reward: (R_a - R_w) / (R_c - R_w)."""
    if correct_reward <= wrong_reward:
        raise ConfigError(f"correct reward {correct_reward} must exceed wrong reward {wrong_reward}",
                          field="correct_reward")
    return (abstain_reward - wrong_reward) / (correct_reward - wrong_reward)


@dataclass
class AbstentionReward:
    """Give abstaining responses ``reward``: a number, or ``"rm"`` to keep the score they were given."""

    reward: float | Literal["rm"] = "rm"
    detector: Callable[[str], bool] = field(default=default_detector, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.reward, str):
            if self.reward != "rm":
                raise ConfigError(f"must be a number or 'rm', got {self.reward!r}", field="abstention_reward")
        elif isinstance(self.reward, bool) or not isinstance(self.reward, (int, float)):
            raise ConfigError(f"must be a number or 'rm', got {self.reward!r}", field="abstention_reward")

    @property
    def overrides(self) -> bool:
        """Whether abstaining responses get a fixed value (rather than keeping their score)."""
        return self.reward != "rm"

    def detect(self, responses: Sequence[str]) -> torch.Tensor:
        """Bool tensor: which responses abstain."""
        return torch.tensor([bool(self.detector(r)) for r in responses], dtype=torch.bool)

    def apply(self, scores: torch.Tensor, abstained: torch.Tensor) -> torch.Tensor:
        """``scores`` with abstaining entries replaced by the configured value (unchanged for ``"rm"``)."""
        if not self.overrides:
            return scores
        fixed = torch.full_like(scores, float(self.reward))
        return torch.where(abstained.to(scores.device), fixed, scores)

    def threshold(self, correct_reward: float, wrong_reward: float) -> float | None:
        """The implied P(correct) threshold, or ``None`` when abstentions keep their score."""
        if not self.overrides:
            return None
        return abstention_threshold(correct_reward, wrong_reward, float(self.reward))
