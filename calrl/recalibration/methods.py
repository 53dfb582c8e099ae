"""Names of the post-hoc calibrators of :mod:`calrl.recalibration.calibrators`.

A module of its own so that ``calrl recalibrate --help`` lists them without importing torch.
"""

from __future__ import annotations

METHODS = ("temperature", "platt", "isotonic", "histogram")
