"""Reward modeling: calibrated preference data, the calibrated reward trainer, the confidence-bias probe."""

from calrl.reward_modeling.calibrated_data import (
    CALIBRATED_TEXT_COLUMNS,
    CalibratedPairsConfig,
    build_calibrated_pairs,
)
from calrl.reward_modeling.probe import (
    RewardModelProbeCallback,
    log_reward_model_report,
    reward_model_report,
    write_reward_model_report,
)
from calrl.reward_modeling.trainer import (
    CalibratedPreferenceCollator,
    CalibratedRewardConfig,
    CalibratedRewardTrainer,
    bradley_terry_loss,
    calibration_loss,
    tokenize_response,
)

__all__ = [
    "CALIBRATED_TEXT_COLUMNS",
    "CalibratedPairsConfig",
    "CalibratedPreferenceCollator",
    "CalibratedRewardConfig",
    "CalibratedRewardTrainer",
    "RewardModelProbeCallback",
    "bradley_terry_loss",
    "build_calibrated_pairs",
    "calibration_loss",
    "log_reward_model_report",
    "reward_model_report",
    "tokenize_response",
    "write_reward_model_report",
]
