"""The thresholds of the release gate (:class:`GateConfig`), validated once when built.

A module without torch, so that ``calrl compare --help`` reads its defaults without loading it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from calrl.confidence.missing import DEFAULT_EVAL_MISSING, EVAL_MISSING, check_missing_policy
from calrl.errors import InputError
from calrl.limits import (
    DEFAULT_BINS,
    DEFAULT_GATE_BOOTSTRAP,
    DEFAULT_MIN_SLICE_SIZE,
    check_bins,
    check_bootstrap,
    check_seed,
)


@dataclass(frozen=True, kw_only=True)
class GateConfig:
    """Thresholds of the release gate (see :mod:`calrl.gate.gate` for the exact rules)."""

    refusal_collapse_factor: float = 5.0  # refusals falling or rising by this factor block
    max_refusal_rate: float = 0.5  # a candidate refusing more often than this (and than the baseline) blocks
    max_accuracy_drop: float = 0.05  # a larger drop whose paired interval lies below 0 blocks
    slice_ece_threshold: float = 0.05  # an ECE rise above this (whole set or a large enough slice) blocks
    min_slice_size: int = DEFAULT_MIN_SLICE_SIZE  # scored items needed on both sides for a slice to block
    collapse_spread_ratio: float = 0.5  # the candidate's confidence spread below this share of the baseline's warns
    n_bins: int = DEFAULT_BINS
    n_boot: int = DEFAULT_GATE_BOOTSTRAP
    seed: int = 0
    confidence_level: float = 0.95
    missing_policy: str = DEFAULT_EVAL_MISSING  # answered items without a confidence: one of EVAL_MISSING

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> InputError:
            return InputError(f"must be {rule}, got {getattr(self, name)}", field=name)

        if not self.refusal_collapse_factor > 1.0 or math.isinf(self.refusal_collapse_factor):
            raise bad("refusal_collapse_factor", "a finite number > 1")
        if not 0.0 <= self.max_refusal_rate <= 1.0:
            raise bad("max_refusal_rate", "in [0, 1]")
        if not 0.0 <= self.max_accuracy_drop < 1.0:
            raise bad("max_accuracy_drop", "in [0, 1)")
        if not 0.0 <= self.slice_ece_threshold < 1.0:
            raise bad("slice_ece_threshold", "in [0, 1)")
        if self.min_slice_size < 1:
            raise bad("min_slice_size", ">= 1")
        if not 0.0 < self.collapse_spread_ratio <= 1.0:
            raise bad("collapse_spread_ratio", "in (0, 1]")
        check_bins(self.n_bins, field="n_bins")
        check_bootstrap(self.n_boot, field="n_boot")
        check_seed(self.seed)
        if not 0.0 < self.confidence_level < 1.0:
            raise bad("confidence_level", "in (0, 1)")
        check_missing_policy(self.missing_policy, EVAL_MISSING, field="missing_policy")
