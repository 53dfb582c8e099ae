"""Calibration metrics as pure tensor functions (no I/O, no globals; any device).

Inputs: float ``confidence`` in [0, 1] and bool/0-1 ``correct`` of the same shape; the last dimension
indexes items, leading dimensions are independent rows (used by the bootstrap). Empty input gives NaN.
"""

from calrl.metrics.binning import bin_index, reliability_bins
from calrl.metrics.bootstrap import (
    bootstrap_interval,
    ece_resamples,
    paired_bootstrap,
    smooth_ece_bootstrap,
    supports_batch,
)
from calrl.metrics.calibration import (
    equal_mass_ece,
    expected_calibration_error,
    max_calibration_error,
    smooth_ece,
    smooth_ece_with_bandwidth,
    smooth_reliability_curve,
)
from calrl.metrics.consistency import (
    agreement_rate,
    cluster_counts,
    discrete_semantic_entropy,
    majority_share,
)
from calrl.metrics.scores import (
    accuracy,
    aurc,
    auroc_stderr,
    binary_auroc,
    brier_score,
    mean_stderr,
    paired_difference_interval,
    risk_coverage_curve,
)

# Metrics that accept [rows, n] inputs and return [rows]: the bootstrap evaluates them per chunk.
for _fn in (expected_calibration_error, max_calibration_error, equal_mass_ece, smooth_ece, brier_score,
            accuracy, binary_auroc, aurc):
    _fn.supports_batch = True
del _fn

__all__ = [
    "accuracy",
    "agreement_rate",
    "aurc",
    "auroc_stderr",
    "bin_index",
    "binary_auroc",
    "bootstrap_interval",
    "brier_score",
    "cluster_counts",
    "discrete_semantic_entropy",
    "ece_resamples",
    "equal_mass_ece",
    "expected_calibration_error",
    "majority_share",
    "max_calibration_error",
    "mean_stderr",
    "paired_bootstrap",
    "paired_difference_interval",
    "reliability_bins",
    "risk_coverage_curve",
    "smooth_ece",
    "smooth_ece_bootstrap",
    "smooth_ece_with_bandwidth",
    "smooth_reliability_curve",
    "supports_batch",
]
