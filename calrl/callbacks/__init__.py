"""Trainer callbacks: calibration evaluation during training, logged to W&B."""
