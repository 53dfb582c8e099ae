"""Calibration metrics as pure tensor functions (no I/O, no globals; any device)."""
