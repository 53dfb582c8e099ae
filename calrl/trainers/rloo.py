"""RLOO with proper-scoring-rule rewards on the stated confidence.

``CalibratedRLOOTrainer`` is ``trl.RLOOTrainer`` whose reward functions are the config's reward terms
(:mod:`calrl.rewards.reward_funcs`: ``rewards``, or ``reward_funcs`` and ``reward_weights``). RLOO's leave-one-out baseline does not divide by a per-group std, so
it stays calibrated with a proper scoring rule (Bereket & Leskovec, arXiv 2508.11800). Its only scaling
option, ``normalize_advantages``, normalises over the whole generation batch (one mean and one std for all
groups), which rescales every advantage by the same factor and keeps the optimum: no warning is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

from trl import RLOOConfig, RLOOTrainer

from calrl.rewards.reward_funcs import RewardFuncsConfig
from calrl.trainers import check_trl_version
from calrl.trainers.grpo import ScoringRuleRewardsMixin
from calrl.trainers.validation import POLICY_GRADIENT_RULES, TRAINING_RULES, check_numbers

check_trl_version()


@dataclass
class CalibratedRLOOConfig(RLOOConfig, RewardFuncsConfig):
    """``trl.RLOOConfig`` plus the calibration reward options of :class:`RewardFuncsConfig`.

    ``rewards`` lists the reward terms TRL style (``[{name: brier}, {name: format, weight: 0.1}]``); or
    ``reward_funcs`` names them and ``reward_weights`` (RLOO's own option) weights them.
    """

    def __post_init__(self) -> None:
        check_numbers(self, TRAINING_RULES, POLICY_GRADIENT_RULES)
        super().__post_init__()
        self.validate_reward_options()


class CalibratedRLOOTrainer(ScoringRuleRewardsMixin, RLOOTrainer):
    """``trl.RLOOTrainer`` whose reward functions are the reward terms of ``args`` (``rewards`` or ``reward_funcs``).

    ``calibration_eval`` (a ``CalibrationEvalConfig`` or callback) adds the per-epoch calibration evaluation.
    RLOOConfig has no per-group std scaling, so ``std_scaling_warning`` stays None.
    """
