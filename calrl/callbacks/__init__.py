"""Trainer callbacks: calibration evaluation during training, logged to W&B."""

from calrl.callbacks.calibration_eval import CalibrationEvalCallback, CalibrationEvalConfig
from calrl.callbacks.epochs import EpochBoundaryTracker
from calrl.callbacks.eval_files import read_eval_history
from calrl.callbacks.wandb_utils import (
    init_wandb_run,
    normalize_report_to,
    prepare_reporting,
    read_offline_history,
    read_offline_run,
    read_offline_table,
)

__all__ = [
    "CalibrationEvalCallback",
    "CalibrationEvalConfig",
    "EpochBoundaryTracker",
    "init_wandb_run",
    "normalize_report_to",
    "prepare_reporting",
    "read_eval_history",
    "read_offline_history",
    "read_offline_run",
    "read_offline_table",
]
