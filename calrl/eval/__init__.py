"""Evaluation: prediction records, the metrics runner, reports, the release gate, recalibration."""
