"""Trainers: TRL trainers extended for calibration-aware training, each with its *Config."""
