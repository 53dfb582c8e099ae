"""Reward modeling: calibrated preference data, the PPO-M loss terms, tokenization, the confidence-bias probe.

The calibrated reward trainer itself (on TRL) is :class:`calrl.trainers.reward.CalibratedRewardTrainer`.
Nothing here imports TRL.
"""

from calrl.reward_modeling.calibrated_data import (
    CALIBRATED_TEXT_COLUMNS,
    CalibratedPairsConfig,
    build_calibrated_pairs,
)
from calrl.reward_modeling.losses import bradley_terry_loss, calibration_loss
from calrl.reward_modeling.probe import (
    RewardModelProbeCallback,
    log_reward_model_report,
    reward_model_report,
    write_reward_model_report,
)
from calrl.reward_modeling.tokenization import (
    CALIBRATED_ID_COLUMNS,
    pad_right,
    tokenize_preference_pairs,
    tokenize_response,
)

__all__ = [
    "CALIBRATED_ID_COLUMNS",
    "CALIBRATED_TEXT_COLUMNS",
    "CalibratedPairsConfig",
    "RewardModelProbeCallback",
    "bradley_terry_loss",
    "build_calibrated_pairs",
    "calibration_loss",
    "log_reward_model_report",
    "pad_right",
    "reward_model_report",
    "tokenize_preference_pairs",
    "tokenize_response",
    "write_reward_model_report",
]
