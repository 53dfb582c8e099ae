"""Trainers: TRL trainers extended for calibration-aware training, each with its *Config."""

from calrl.trainers.grpo import CalibratedGRPOConfig, CalibratedGRPOTrainer
from calrl.trainers.ppo import CalibratedPPOConfig, CalibratedPPOTrainer
from calrl.trainers.rloo import CalibratedRLOOConfig, CalibratedRLOOTrainer

__all__ = [
    "CalibratedGRPOConfig", "CalibratedGRPOTrainer", "CalibratedPPOConfig", "CalibratedPPOTrainer",
    "CalibratedRLOOConfig", "CalibratedRLOOTrainer",
]
