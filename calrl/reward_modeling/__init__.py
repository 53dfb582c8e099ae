"""Reward modeling: calibrated preference data, the calibrated reward trainer, the confidence-bias probe."""
