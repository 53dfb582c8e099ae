"""The typed results of the release gate, read by attribute; ``to_dict`` gives the content of ``gate.json``.

:class:`GateResult` is what :func:`calrl.gate.gate.evaluate_gate` decides: the verdict, every blocking
reason and warning (:class:`GateFinding`), and one block per check (:class:`Matching`, :class:`Deltas`,
:class:`RefusalCheck`, :class:`AccuracyCheck`, :class:`ConfidenceSpread`, one :class:`SliceRow` per slice
value). :class:`CompareResult` adds what ``calrl compare`` read (:class:`Sources`) and each side's metrics on
the matched items (:class:`SideMetrics`, the typed results of :mod:`calrl.eval.schema`).

Fields are declared in the order of their keys in ``gate.json``; serialisation is :func:`dataclasses.asdict`
made JSON-safe (NaN and infinities as null, infinite factors flagged beside them), so the file is the same
as when these results were plain dicts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from calrl.eval.schema import EvalResults
from calrl.formatting import json_safe
from calrl.gate.config import GateConfig


@dataclass(frozen=True, kw_only=True)
class GateFinding:
    """One blocking reason or warning: a stable ``code``, a sentence, and the numbers behind it."""

    code: str
    message: str
    numbers: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class IdMatch:
    """How the two runs' ids paired up (baseline order; at most 10 unmatched ids shown per side)."""

    n_baseline: int
    n_candidate: int
    n_matched: int
    n_only_baseline: int
    n_only_candidate: int
    only_baseline_examples: list[str]
    only_candidate_examples: list[str]


@dataclass(frozen=True, kw_only=True)
class Matching(IdMatch):
    """The pairing and the answered items without a confidence on each side."""

    n_missing_confidence_baseline: int
    n_missing_confidence_candidate: int
    missing_policy: str


@dataclass(frozen=True, kw_only=True)
class Delta:
    """One metric on both sides, the change (candidate - baseline) and its paired bootstrap interval
    (``low`` and ``high`` NaN without resamples)."""

    baseline: float
    candidate: float
    delta: float
    low: float
    high: float
    level: float
    n_boot: int


@dataclass(frozen=True, kw_only=True)
class Deltas:
    accuracy: Delta
    ece: Delta
    brier: Delta
    refusal_rate: Delta


@dataclass(frozen=True, kw_only=True)
class RefusalCheck:
    """Refusals in both directions on the matched items; factors are NaN (nothing to compare) or infinite
    (the side divided by has no refusal), the effective factors floor that side at one refusal."""

    baseline_rate: float
    candidate_rate: float
    delta: float
    baseline_refusals: int
    candidate_refusals: int
    n: int
    factor: float  # baseline refusals / candidate refusals
    factor_infinite: bool
    effective_factor: float
    rise_factor: float  # candidate refusals / baseline refusals
    rise_factor_infinite: bool
    effective_rise_factor: float
    threshold_factor: float
    max_refusal_rate: float
    collapsed: bool
    exploded: bool
    blocked: bool


@dataclass(frozen=True, kw_only=True)
class AccuracyCheck:
    baseline: float
    candidate: float
    drop: float  # baseline - candidate
    interval_low: float  # paired interval of the change (candidate - baseline); NaN without resamples
    interval_high: float
    level: float
    max_accuracy_drop: float
    significant: bool  # the interval lies below 0 (without resamples: the point estimate fell)
    blocked: bool


@dataclass(frozen=True, kw_only=True)
class ConfidenceSpread:
    """The spread of stated confidence on the scored items of each side (ratios NaN when undefined)."""

    std_baseline: float
    std_candidate: float
    std_ratio: float
    distinct_baseline: int
    distinct_candidate: int
    distinct_ratio: float
    n_scored_baseline: int
    n_scored_candidate: int
    threshold_ratio: float
    collapsed: bool


@dataclass(frozen=True, kw_only=True)
class SliceRow:
    """ECE of one slice value on both sides; the first row is the whole matched set (key and value "all")."""

    key: str
    value: str
    n: int
    n_scored_baseline: int
    n_scored_candidate: int
    ece_baseline: float
    ece_candidate: float
    delta: float
    accuracy_baseline: float
    accuracy_candidate: float
    status: str  # "ok", "blocked", or "small" (too few scored items to block)


@dataclass(frozen=True, kw_only=True)
class GateResult:
    """Verdict of the gate with everything that led to it (``to_dict`` is its part of gate.json)."""

    verdict: str  # "pass" or "blocked"
    reasons: list[GateFinding]
    warnings: list[GateFinding]
    matching: Matching
    deltas: Deltas
    refusal: RefusalCheck
    accuracy: AccuracyCheck
    confidence_spread: ConfidenceSpread
    slices: list[SliceRow]
    config: GateConfig

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: non-finite numbers become ``None`` (infinite factors are flagged beside)."""
        return json_safe(dataclasses.asdict(self))


@dataclass(frozen=True, kw_only=True)
class Sources:
    """Where each side's records were read (a resolved.jsonl or a predictions file)."""

    baseline: str
    candidate: str


# the metrics of each side that gate.json keeps (with the reliability bins)
SUMMARY_KEYS = ("n", "n_answered", "n_scored", "accuracy", "accuracy_answered", "refusal_rate", "ece",
                "ece_equal_mass", "mce", "brier", "auroc", "aurc", "mean_confidence", "overconfident_error_rate",
                "hedged_error_rate")


@dataclass(frozen=True, kw_only=True)
class SideMetrics:
    """The metrics of each side on the matched items, as ``calrl eval`` computes them."""

    baseline: EvalResults
    candidate: EvalResults

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Per side the :data:`SUMMARY_KEYS` and the reliability bins, JSON-safe."""
        return {name: json_safe({**{k: getattr(results, k) for k in SUMMARY_KEYS},
                                 "reliability": [dataclasses.asdict(b) for b in results.reliability]})
                for name, results in (("baseline", self.baseline), ("candidate", self.candidate))}


@dataclass(frozen=True, kw_only=True)
class CompareResult:
    """What ``calrl compare`` found: the gate's result, its inputs and each side's metrics (gate.json)."""

    gate: GateResult
    sources: Sources
    metrics: SideMetrics

    @property
    def passed(self) -> bool:
        return self.gate.passed

    def to_dict(self) -> dict[str, Any]:
        """The content of gate.json: the gate's keys, then ``sources`` and ``metrics``."""
        return {**self.gate.to_dict(), "sources": dataclasses.asdict(self.sources), "metrics": self.metrics.to_dict()}
