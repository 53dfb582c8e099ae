"""The offline end-to-end calibration study (make demo)."""
