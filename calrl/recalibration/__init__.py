"""Recalibration after the fact (``calrl recalibrate``): calibrators fit on one split and applied to another,
and their report."""
