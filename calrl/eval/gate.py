"""The release gate: compare a candidate's calibration with a baseline's on the same items.

Rules (all thresholds live in :class:`GateConfig`):

* Items are matched by ``id``; only shared items are compared. No shared id is bad input.
* Accuracy (abstentions count as not correct), ECE and Brier (answered items with a confidence) are
  reported per side with the candidate-minus-baseline delta and a paired bootstrap interval: each
  replicate resamples the matched items once and recomputes both sides on that same resample.
* Refusal collapse blocks when ``baseline_rate / candidate_rate >= refusal_collapse_factor`` (on the
  matched items, so the ratio of refusal counts). A candidate with no refusal at all gets an infinite
  raw factor; so that one or two baseline refusals cannot block, the decision floors the candidate's
  count at one refusal (``effective_factor = baseline_refusals / max(candidate_refusals, 1)``): with no
  candidate refusal the gate blocks exactly when the baseline refused at least ``factor`` items.
* ECE rise blocks when the ECE of the whole matched set, or of one slice value, rose by more than
  ``slice_ece_threshold`` and both sides have at least ``min_slice_size`` scored items there.
  Smaller slices are listed (status ``small``) and warned about when their ECE rose, never blocking.
* Confidence collapse warns (never blocks) when the candidate's standard deviation of stated
  confidence falls below ``collapse_spread_ratio`` times the baseline's, or its number of distinct
  confidence values falls below that ratio times the baseline's.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from calrl.errors import InputError
from calrl.eval.records import ResolvedRecord
from calrl.metrics import brier_score, expected_calibration_error, paired_bootstrap

MISSING_POLICIES = ("exclude", "half", "error")


@dataclass
class GateConfig:
    """Thresholds of the release gate (see the module docstring for the exact rules)."""

    refusal_collapse_factor: float = 5.0
    slice_ece_threshold: float = 0.05
    min_slice_size: int = 30
    collapse_spread_ratio: float = 0.5
    n_bins: int = 15
    n_boot: int = 1000
    seed: int = 0
    confidence_level: float = 0.95
    missing_policy: str = "exclude"

    def __post_init__(self) -> None:
        if not self.refusal_collapse_factor > 1.0:
            raise InputError(
                f"must be > 1, got {self.refusal_collapse_factor}", field="refusal_collapse_factor"
            )
        if not 0.0 <= self.slice_ece_threshold < 1.0:
            raise InputError(
                f"must be in [0, 1), got {self.slice_ece_threshold}", field="slice_ece_threshold"
            )
        if self.min_slice_size < 1:
            raise InputError(f"must be >= 1, got {self.min_slice_size}", field="min_slice_size")
        if not 0.0 < self.collapse_spread_ratio <= 1.0:
            raise InputError(
                f"must be in (0, 1], got {self.collapse_spread_ratio}", field="collapse_spread_ratio"
            )
        if self.n_bins < 1:
            raise InputError(f"must be >= 1, got {self.n_bins}", field="n_bins")
        if self.n_boot < 0:
            raise InputError(f"must be >= 0, got {self.n_boot}", field="n_boot")
        if not 0.0 < self.confidence_level < 1.0:
            raise InputError(f"must be in (0, 1), got {self.confidence_level}", field="confidence_level")
        if self.missing_policy not in MISSING_POLICIES:
            raise InputError(
                f"must be one of {', '.join(MISSING_POLICIES)}, got {self.missing_policy!r}",
                field="missing_policy",
            )


@dataclass
class GateFinding:
    """One blocking reason or warning: a stable ``code``, a sentence, and the numbers behind it."""

    code: str
    message: str
    numbers: dict[str, Any] = field(default_factory=dict)


@dataclass
class GateResult:
    """Verdict of the gate with everything that led to it (``to_dict`` is the gate.json content)."""

    verdict: str  # "pass" | "blocked"
    reasons: list[GateFinding]
    warnings: list[GateFinding]
    matching: dict[str, Any]
    deltas: dict[str, dict[str, Any]]
    refusal: dict[str, Any]
    confidence_spread: dict[str, Any]
    slices: list[dict[str, Any]]
    config: GateConfig

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: non-finite numbers become ``None`` (infinite factors are flagged beside)."""
        config = asdict(self.config)
        return _json_safe(
            {
                "verdict": self.verdict,
                "reasons": [asdict(r) for r in self.reasons],
                "warnings": [asdict(w) for w in self.warnings],
                "matching": self.matching,
                "deltas": self.deltas,
                "refusal": self.refusal,
                "confidence_spread": self.confidence_spread,
                "slices": self.slices,
                "config": config,
            }
        )


# ----------------------------------------------------------------------------------------------------
# Matching and tensors


def match_records(
    baseline: Sequence[ResolvedRecord],
    candidate: Sequence[ResolvedRecord],
) -> tuple[list[ResolvedRecord], list[ResolvedRecord], dict[str, Any]]:
    """Pair records by ``id`` (baseline order); raise InputError on duplicates or no shared id."""
    base_by_id = _index_by_id(baseline, "baseline")
    cand_by_id = _index_by_id(candidate, "candidate")
    shared = [rid for rid in base_by_id if rid in cand_by_id]
    only_base = [rid for rid in base_by_id if rid not in cand_by_id]
    only_cand = [rid for rid in cand_by_id if rid not in base_by_id]
    if not shared:
        raise InputError(
            f"baseline ({len(base_by_id)} items) and candidate ({len(cand_by_id)} items) share no id",
            field="id",
        )
    info = {
        "n_baseline": len(base_by_id),
        "n_candidate": len(cand_by_id),
        "n_matched": len(shared),
        "n_only_baseline": len(only_base),
        "n_only_candidate": len(only_cand),
        "only_baseline_examples": only_base[:10],
        "only_candidate_examples": only_cand[:10],
    }
    return [base_by_id[r] for r in shared], [cand_by_id[r] for r in shared], info


def _index_by_id(records: Sequence[ResolvedRecord], side: str) -> dict[str, ResolvedRecord]:
    out: dict[str, ResolvedRecord] = {}
    for rec in records:
        if rec.id in out:
            raise InputError(f"duplicate id {rec.id!r} in the {side}", field="id")
        out[rec.id] = rec
    if not out:
        raise InputError(f"the {side} has no items")
    return out


@dataclass
class _Side:
    """Tensors of one side over the matched items (same order on both sides)."""

    correct: torch.Tensor  # bool, abstentions False
    abstained: torch.Tensor  # bool
    confidence: torch.Tensor  # float64, filled per the missing policy where scored
    scored: torch.Tensor  # bool: answered and has a (possibly policy-filled) confidence
    n_missing: int


def _side_tensors(records: Sequence[ResolvedRecord], policy: str, side: str) -> _Side:
    correct = torch.tensor([bool(r.correct) and not r.abstained for r in records], dtype=torch.bool)
    abstained = torch.tensor([bool(r.abstained) for r in records], dtype=torch.bool)
    raw = [r.confidence for r in records]
    has = torch.tensor([c is not None for c in raw], dtype=torch.bool)
    conf = torch.tensor([float(c) if c is not None else 0.5 for c in raw], dtype=torch.float64)
    answered = ~abstained
    n_missing = int((answered & ~has).sum())
    if n_missing and policy == "error":
        first = next(r.id for r in records if not r.abstained and r.confidence is None)
        raise InputError(
            f"{n_missing} answered item(s) of the {side} have no confidence "
            f"(first: id {first!r}); choose another missing-confidence policy",
            field="confidence",
        )
    scored = answered & has if policy == "exclude" else answered
    return _Side(correct, abstained, conf, scored, n_missing)


# ----------------------------------------------------------------------------------------------------
# Statistics on an index selection (used for point estimates and bootstrap replicates alike)

_Stat = Callable[[_Side, torch.Tensor], float]


def _accuracy(side: _Side, idx: torch.Tensor) -> float:
    return float(side.correct[idx].double().mean()) if idx.numel() else math.nan


def _refusal_rate(side: _Side, idx: torch.Tensor) -> float:
    return float(side.abstained[idx].double().mean()) if idx.numel() else math.nan


def _scored(side: _Side, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    keep = idx[side.scored[idx]]
    return side.confidence[keep], side.correct[keep]


def _make_ece(n_bins: int) -> _Stat:
    def ece(side: _Side, idx: torch.Tensor) -> float:
        conf, correct = _scored(side, idx)
        if conf.numel() == 0:
            return math.nan
        return float(expected_calibration_error(conf, correct, n_bins=n_bins))

    return ece


def _brier(side: _Side, idx: torch.Tensor) -> float:
    conf, correct = _scored(side, idx)
    if conf.numel() == 0:
        return math.nan
    return float(brier_score(conf, correct))


UNSCORED = -1.0  # confidence code of items left out of ECE and Brier inside the bootstrap


def _masked_mean_metric(
    metric: Callable[..., torch.Tensor],
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A batched metric over the scored items only, unscored items coded as confidence ``UNSCORED``.

    ECE and Brier are sums over items divided by their number; an item set to confidence 0 and
    correct 0 adds nothing to any bin's gap (or squared error), so the metric of the scored items is
    ``metric(all, unscored zeroed) * n / n_scored`` row by row.
    """

    def fn(confidence: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
        mask = confidence >= 0
        n_scored = mask.sum(-1)
        conf = torch.where(mask, confidence, torch.zeros_like(confidence))
        corr = torch.where(mask, correct.to(confidence.dtype), torch.zeros_like(confidence))
        total = metric(conf, corr, validate_args=False) * confidence.shape[-1]
        return torch.where(n_scored > 0, total / n_scored.clamp(min=1), torch.full_like(total, math.nan))

    fn.supports_batch = True  # type: ignore[attr-defined]
    return fn


def _share_correct(confidence: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    return correct.to(torch.float64).mean(-1)


_share_correct.supports_batch = True  # type: ignore[attr-defined]


def paired_delta_intervals(
    base: _Side, cand: _Side, *, n_bins: int, n_boot: int, seed: int, level: float
) -> dict[str, dict[str, Any]]:
    """Accuracy, ECE, Brier and refusal rate of both sides, their delta (candidate - baseline) and a
    percentile interval of the delta from ``calrl.metrics.paired_bootstrap`` (each resample draws the
    matched items once and evaluates both sides on it). Point values use the plain metrics on the
    scored items, so they equal ``compute_metrics`` on the same records.
    """
    n = int(base.correct.numel())
    full = torch.arange(n)
    points: dict[str, _Stat] = {
        "accuracy": _accuracy,
        "ece": _make_ece(n_bins),
        "brier": _brier,
        "refusal_rate": _refusal_rate,
    }

    def coded(side: _Side) -> torch.Tensor:
        return torch.where(side.scored, side.confidence, torch.full_like(side.confidence, UNSCORED))

    boot_inputs = {
        "accuracy": (_share_correct, coded(base), base.correct, coded(cand), cand.correct),
        "ece": (
            _masked_mean_metric(functools.partial(expected_calibration_error, n_bins=n_bins)),
            coded(base),
            base.correct,
            coded(cand),
            cand.correct,
        ),
        "brier": (_masked_mean_metric(brier_score), coded(base), base.correct, coded(cand), cand.correct),
        "refusal_rate": (
            _share_correct,
            base.abstained.double(),
            base.abstained,
            cand.abstained.double(),
            cand.abstained,
        ),
    }
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, dict[str, Any]] = {}
    for name, stat in points.items():
        b, c = stat(base, full), stat(cand, full)
        row = {
            "baseline": b,
            "candidate": c,
            "delta": c - b,
            "low": math.nan,
            "high": math.nan,
            "level": level,
            "n_boot": n_boot,
        }
        if n_boot > 0:
            fn, conf_a, corr_a, conf_b, corr_b = boot_inputs[name]
            res = paired_bootstrap(
                fn,
                conf_a,
                corr_a,
                conf_b,
                corr_b,
                n_boot=n_boot,
                generator=gen,
                alpha=1.0 - level,
                batched=True,
            )
            row.update(low=float(res["low"]), high=float(res["high"]))
        out[name] = row
    return out


# ----------------------------------------------------------------------------------------------------
# The gate


def evaluate_gate(
    baseline: Sequence[ResolvedRecord], candidate: Sequence[ResolvedRecord], config: GateConfig | None = None
) -> GateResult:
    """Match both runs by id and decide whether the candidate may replace the baseline."""
    config = config or GateConfig()
    base_recs, cand_recs, matching = match_records(baseline, candidate)
    base = _side_tensors(base_recs, config.missing_policy, "baseline")
    cand = _side_tensors(cand_recs, config.missing_policy, "candidate")
    matching.update(
        n_missing_confidence_baseline=base.n_missing,
        n_missing_confidence_candidate=cand.n_missing,
        missing_policy=config.missing_policy,
    )
    reasons: list[GateFinding] = []
    warnings: list[GateFinding] = []

    if matching["n_only_baseline"] or matching["n_only_candidate"]:
        warnings.append(
            GateFinding(
                "unmatched_ids",
                f"{matching['n_only_baseline']} baseline id(s) and "
                f"{matching['n_only_candidate']} candidate id(s) have no counterpart; "
                f"compared on the {matching['n_matched']} shared items",
                {k: matching[k] for k in ("n_matched", "n_only_baseline", "n_only_candidate")},
            )
        )
    if config.missing_policy != "error" and (base.n_missing or cand.n_missing):
        warnings.append(
            GateFinding(
                "missing_confidence",
                f"answered items without a confidence: baseline {base.n_missing}, candidate {cand.n_missing} "
                f"(policy: {config.missing_policy})",
                {"baseline": base.n_missing, "candidate": cand.n_missing, "policy": config.missing_policy},
            )
        )

    ece = _make_ece(config.n_bins)
    deltas = paired_delta_intervals(
        base,
        cand,
        n_bins=config.n_bins,
        n_boot=config.n_boot,
        seed=config.seed,
        level=config.confidence_level,
    )

    refusal = _refusal_check(base, cand, config, reasons)
    slices = _slice_table(base_recs, cand_recs, base, cand, ece, config, reasons, warnings)
    spread = _spread_check(base, cand, config, warnings)

    return GateResult(
        verdict="blocked" if reasons else "pass",
        reasons=reasons,
        warnings=warnings,
        matching=matching,
        deltas=deltas,
        refusal=refusal,
        confidence_spread=spread,
        slices=slices,
        config=config,
    )


def _refusal_check(
    base: _Side, cand: _Side, config: GateConfig, reasons: list[GateFinding]
) -> dict[str, Any]:
    n = int(base.abstained.numel())
    k_base, k_cand = int(base.abstained.sum()), int(cand.abstained.sum())
    rate_base, rate_cand = k_base / n, k_cand / n
    if k_base == 0:
        raw_factor = math.nan if k_cand == 0 else 0.0
        effective = 0.0
    else:
        # both sides are the same matched items, so the ratio of rates is the ratio of counts
        raw_factor = math.inf if k_cand == 0 else k_base / k_cand
        effective = k_base / max(k_cand, 1)
    blocked = effective >= config.refusal_collapse_factor
    info = {
        "baseline_rate": rate_base,
        "candidate_rate": rate_cand,
        "delta": rate_cand - rate_base,
        "baseline_refusals": k_base,
        "candidate_refusals": k_cand,
        "n": n,
        "factor": raw_factor,
        "factor_infinite": math.isinf(raw_factor),
        "effective_factor": effective,
        "threshold_factor": config.refusal_collapse_factor,
        "blocked": blocked,
    }
    if blocked:
        shown = "infinite (no candidate refusal)" if math.isinf(raw_factor) else f"{raw_factor:.2f}"
        reasons.append(
            GateFinding(
                "refusal_collapse",
                f"refusal rate fell from {rate_base:.3f} ({k_base}/{n}) to {rate_cand:.3f} ({k_cand}/{n}): "
                f"factor {shown} >= {config.refusal_collapse_factor:g}",
                {
                    k: info[k]
                    for k in (
                        "baseline_rate",
                        "candidate_rate",
                        "baseline_refusals",
                        "candidate_refusals",
                        "n",
                        "factor",
                        "factor_infinite",
                        "effective_factor",
                        "threshold_factor",
                    )
                },
            )
        )
    return info


def _slice_groups(
    base_recs: Sequence[ResolvedRecord],
    cand_recs: Sequence[ResolvedRecord],
) -> dict[tuple[str, str], list[int]]:
    """(key, value) -> matched positions; the baseline's slice labels win, the candidate's fill gaps."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, (b, c) in enumerate(zip(base_recs, cand_recs, strict=True)):
        labels = {**(c.slice or {}), **(b.slice or {})}
        for key, value in labels.items():
            groups.setdefault((str(key), str(value)), []).append(i)
    return dict(sorted(groups.items()))


def _slice_table(
    base_recs: Sequence[ResolvedRecord],
    cand_recs: Sequence[ResolvedRecord],
    base: _Side,
    cand: _Side,
    ece: _Stat,
    config: GateConfig,
    reasons: list[GateFinding],
    warnings: list[GateFinding],
) -> list[dict[str, Any]]:
    """ECE per slice value; the whole matched set is the first row (key and value ``"all"``)."""
    n = int(base.correct.numel())
    groups = {("all", "all"): list(range(n)), **_slice_groups(base_recs, cand_recs)}
    rows: list[dict[str, Any]] = []
    for (key, value), positions in groups.items():
        idx = torch.tensor(positions, dtype=torch.long)
        n_b, n_c = int(base.scored[idx].sum()), int(cand.scored[idx].sum())
        e_b, e_c = ece(base, idx), ece(cand, idx)
        delta = e_c - e_b
        rose = not math.isnan(delta) and delta > config.slice_ece_threshold
        large = min(n_b, n_c) >= config.min_slice_size
        status = ("blocked" if rose else "ok") if large else "small"
        row = {
            "key": key,
            "value": value,
            "n": len(positions),
            "n_scored_baseline": n_b,
            "n_scored_candidate": n_c,
            "ece_baseline": e_b,
            "ece_candidate": e_c,
            "delta": delta,
            "accuracy_baseline": _accuracy(base, idx),
            "accuracy_candidate": _accuracy(cand, idx),
            "status": status,
        }
        rows.append(row)
        where = "the whole matched set" if key == "all" else f"slice {key}={value}"
        numbers = {
            k: row[k]
            for k in (
                "key",
                "value",
                "n_scored_baseline",
                "n_scored_candidate",
                "ece_baseline",
                "ece_candidate",
                "delta",
            )
        }
        numbers["threshold"] = config.slice_ece_threshold
        if status == "blocked":
            reasons.append(
                GateFinding(
                    "ece_rise" if key == "all" else "slice_ece_rise",
                    f"ECE of {where} rose from {e_b:.4f} to {e_c:.4f} "
                    f"(+{delta:.4f} > {config.slice_ece_threshold:g}) on {n_b}/{n_c} scored items",
                    numbers,
                )
            )
        elif status == "small" and rose:
            numbers["min_slice_size"] = config.min_slice_size
            warnings.append(
                GateFinding(
                    "small_slice_ece_rise",
                    f"ECE of {where} rose from {e_b:.4f} to {e_c:.4f} (+{delta:.4f}) but it has only "
                    f"{n_b}/{n_c} scored items (< {config.min_slice_size}); not blocking",
                    numbers,
                )
            )
    return rows


def _spread_check(
    base: _Side, cand: _Side, config: GateConfig, warnings: list[GateFinding]
) -> dict[str, Any]:
    def spread(side: _Side) -> tuple[float, int, int]:
        conf = side.confidence[side.scored]
        if conf.numel() == 0:
            return math.nan, 0, 0
        distinct = int(torch.unique(torch.round(conf * 1e6)).numel())
        return float(conf.std(unbiased=False)), distinct, int(conf.numel())

    std_b, distinct_b, n_b = spread(base)
    std_c, distinct_c, n_c = spread(cand)
    ratio = config.collapse_spread_ratio
    std_ratio = std_c / std_b if std_b > 0 else math.nan
    distinct_ratio = distinct_c / distinct_b if distinct_b > 0 else math.nan
    std_collapsed = std_b > 0 and std_c < ratio * std_b
    distinct_collapsed = distinct_b > 1 and distinct_c < ratio * distinct_b
    info = {
        "std_baseline": std_b,
        "std_candidate": std_c,
        "std_ratio": std_ratio,
        "distinct_baseline": distinct_b,
        "distinct_candidate": distinct_c,
        "distinct_ratio": distinct_ratio,
        "n_scored_baseline": n_b,
        "n_scored_candidate": n_c,
        "threshold_ratio": ratio,
        "collapsed": bool(std_collapsed or distinct_collapsed),
    }
    if info["collapsed"]:
        parts = []
        if std_collapsed:
            parts.append(
                f"std of stated confidence fell from {std_b:.4f} to {std_c:.4f} "
                f"(ratio {std_ratio:.3f} < {ratio:g})"
            )
        if distinct_collapsed:
            parts.append(
                f"distinct confidence values fell from {distinct_b} to {distinct_c} "
                f"(ratio {distinct_ratio:.3f} < {ratio:g})"
            )
        warnings.append(
            GateFinding(
                "confidence_collapse",
                "confidence collapse: " + "; ".join(parts),
                {k: v for k, v in info.items() if k != "collapsed"},
            )
        )
    return info


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj
