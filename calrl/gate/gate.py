"""The release gate: compare a candidate's calibration with a baseline's on the same items.

Rules (all thresholds live in :class:`GateConfig`):

* Items are matched by ``id``; only shared items are compared. No shared id is bad input.
* Accuracy (abstentions count as not correct), ECE and Brier (answered items with a confidence) are
  reported per side with the candidate-minus-baseline delta and a paired bootstrap interval: each
  replicate resamples the matched items once and recomputes both sides on that same resample
  (:mod:`calrl.gate.stats`).
* Refusals are checked in both directions with one factor, on the matched items (so the ratio of
  rates is the ratio of refusal counts). *Collapse* blocks when ``baseline / candidate >=
  refusal_collapse_factor``; *explosion* blocks when ``candidate / baseline >= refusal_collapse_factor``.
  So that one or two refusals cannot block, the side divided by is floored at one refusal
  (``effective_factor = refusals_before / max(refusals_after, 1)``): with no candidate refusal the
  gate blocks exactly when the baseline refused at least ``factor`` items, and the reverse. Explosion
  also blocks when the candidate's refusal rate exceeds ``max_refusal_rate`` and the baseline's.
* Accuracy drop blocks when the candidate's accuracy is lower than the baseline's by more than
  ``max_accuracy_drop`` and the paired bootstrap interval of the change lies entirely below 0 (the
  drop is not resampling noise; with ``n_boot = 0`` the point estimate alone decides).
* ECE rise blocks when the ECE of the whole matched set, or of one slice value, rose by more than
  ``slice_ece_threshold`` and both sides have at least ``min_slice_size`` scored items there.
  Smaller slices are listed (status ``small``) and warned about when their ECE rose, never blocking.
* Confidence collapse warns (never blocks) when the candidate's standard deviation of stated
  confidence falls below ``collapse_spread_ratio`` times the baseline's, or its number of distinct
  confidence values falls below that ratio times the baseline's, or when the baseline has scored
  answers and the candidate none (it states no confidence at all, or only refuses).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch

from calrl.data.records import ResolvedRecord
from calrl.errors import InputError
from calrl.gate.config import GateConfig
from calrl.gate.results import (
    AccuracyCheck,
    ConfidenceSpread,
    Delta,
    GateFinding,
    GateResult,
    IdMatch,
    Matching,
    RefusalCheck,
    SliceRow,
)
from calrl.gate.stats import Side, Stat, accuracy_of, make_ece, paired_delta_intervals, side_tensors
from calrl.limits import check_slice_values


def _numbers(block: object, keys: tuple[str, ...]) -> dict[str, object]:
    """The named fields of a result block: the numbers behind a finding."""
    return {k: getattr(block, k) for k in keys}


# ----------------------------------------------------------------------------------------------------
# Matching


def match_records(
    baseline: Sequence[ResolvedRecord],
    candidate: Sequence[ResolvedRecord],
) -> tuple[list[ResolvedRecord], list[ResolvedRecord], IdMatch]:
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
    info = IdMatch(
        n_baseline=len(base_by_id),
        n_candidate=len(cand_by_id),
        n_matched=len(shared),
        n_only_baseline=len(only_base),
        n_only_candidate=len(only_cand),
        only_baseline_examples=only_base[:10],
        only_candidate_examples=only_cand[:10],
    )
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


# ----------------------------------------------------------------------------------------------------
# The gate


def evaluate_gate(
    baseline: Sequence[ResolvedRecord], candidate: Sequence[ResolvedRecord], config: GateConfig | None = None
) -> GateResult:
    """Match both runs by id and decide whether the candidate may replace the baseline."""
    config = config or GateConfig()
    base_recs, cand_recs, ids = match_records(baseline, candidate)
    base = side_tensors(base_recs, config.missing_policy, "baseline")
    cand = side_tensors(cand_recs, config.missing_policy, "candidate")
    matching = Matching(
        **{f.name: getattr(ids, f.name) for f in dataclasses.fields(IdMatch)},
        n_missing_confidence_baseline=base.n_missing,
        n_missing_confidence_candidate=cand.n_missing,
        missing_policy=config.missing_policy,
    )
    reasons: list[GateFinding] = []
    warnings = _matching_warnings(matching, config)
    deltas = paired_delta_intervals(
        base,
        cand,
        n_bins=config.n_bins,
        n_boot=config.n_boot,
        seed=config.seed,
        level=config.confidence_level,
    )
    refusal = _refusal_check(base, cand, config, reasons)
    accuracy = _accuracy_check(deltas.accuracy, config, reasons)
    slices = _slice_table(base_recs, cand_recs, base, cand, make_ece(config.n_bins), config, reasons, warnings)
    spread = _spread_check(base, cand, config, warnings)
    return GateResult(
        verdict="blocked" if reasons else "pass",
        reasons=reasons,
        warnings=warnings,
        matching=matching,
        deltas=deltas,
        refusal=refusal,
        accuracy=accuracy,
        confidence_spread=spread,
        slices=slices,
        config=config,
    )


def _matching_warnings(matching: Matching, config: GateConfig) -> list[GateFinding]:
    warnings = []
    if matching.n_only_baseline or matching.n_only_candidate:
        warnings.append(
            GateFinding(
                code="unmatched_ids",
                message=f"{matching.n_only_baseline} baseline id(s) and "
                f"{matching.n_only_candidate} candidate id(s) have no counterpart; "
                f"compared on the {matching.n_matched} shared items",
                numbers=_numbers(matching, ("n_matched", "n_only_baseline", "n_only_candidate")),
            )
        )
    n_base, n_cand = matching.n_missing_confidence_baseline, matching.n_missing_confidence_candidate
    if config.missing_policy != "error" and (n_base or n_cand):
        warnings.append(
            GateFinding(
                code="missing_confidence",
                message=f"answered items without a confidence: baseline {n_base}, candidate {n_cand} "
                f"(policy: {config.missing_policy})",
                numbers={"baseline": n_base, "candidate": n_cand, "policy": config.missing_policy},
            )
        )
    return warnings


def _factor(before: int, after: int) -> tuple[float, float]:
    """(raw factor before / after, effective factor before / max(after, 1)); 0 refusals before -> 0."""
    if before == 0:
        return (math.nan if after == 0 else 0.0), 0.0
    return (math.inf if after == 0 else before / after), before / max(after, 1)


_REFUSAL_NUMBERS = ("baseline_rate", "candidate_rate", "baseline_refusals", "candidate_refusals", "n")


def _refusal_check(base: Side, cand: Side, config: GateConfig, reasons: list[GateFinding]) -> RefusalCheck:
    n = int(base.abstained.numel())
    k_base, k_cand = int(base.abstained.sum()), int(cand.abstained.sum())
    rate_base, rate_cand = k_base / n, k_cand / n
    threshold = config.refusal_collapse_factor
    raw_fall, eff_fall = _factor(k_base, k_cand)
    raw_rise, eff_rise = _factor(k_cand, k_base)
    collapsed = eff_fall >= threshold
    over_rate = rate_cand > config.max_refusal_rate and rate_cand > rate_base
    exploded = eff_rise >= threshold or over_rate
    info = RefusalCheck(
        baseline_rate=rate_base,
        candidate_rate=rate_cand,
        delta=rate_cand - rate_base,
        baseline_refusals=k_base,
        candidate_refusals=k_cand,
        n=n,
        factor=raw_fall,
        factor_infinite=math.isinf(raw_fall),
        effective_factor=eff_fall,
        rise_factor=raw_rise,
        rise_factor_infinite=math.isinf(raw_rise),
        effective_rise_factor=eff_rise,
        threshold_factor=threshold,
        max_refusal_rate=config.max_refusal_rate,
        collapsed=collapsed,
        exploded=exploded,
        blocked=collapsed or exploded,
    )
    counts = f"from {rate_base:.3f} ({k_base}/{n}) to {rate_cand:.3f} ({k_cand}/{n})"
    if collapsed:
        shown = "infinite (no candidate refusal)" if math.isinf(raw_fall) else f"{raw_fall:.2f}"
        reasons.append(
            GateFinding(
                code="refusal_collapse",
                message=f"refusal rate fell {counts}: factor {shown} >= {threshold:g}",
                numbers=_numbers(info, _REFUSAL_NUMBERS + ("factor", "factor_infinite", "effective_factor",
                                                           "threshold_factor")),
            )
        )
    if exploded:
        why = []
        if eff_rise >= threshold:
            shown = "infinite (no baseline refusal)" if math.isinf(raw_rise) else f"{raw_rise:.2f}"
            why.append(f"factor {shown} >= {threshold:g}")
        if over_rate:
            why.append(f"above the maximum refusal rate {config.max_refusal_rate:g}")
        reasons.append(
            GateFinding(
                code="refusal_explosion",
                message=f"refusal rate rose {counts}: " + " and ".join(why),
                numbers=_numbers(info, _REFUSAL_NUMBERS + ("rise_factor", "rise_factor_infinite",
                                                           "effective_rise_factor", "threshold_factor",
                                                           "max_refusal_rate")),
            )
        )
    return info


def _accuracy_check(delta: Delta, config: GateConfig, reasons: list[GateFinding]) -> AccuracyCheck:
    """Block when accuracy fell by more than ``max_accuracy_drop`` and the paired interval is below 0."""
    drop = -delta.delta
    has_interval = not math.isnan(delta.high)
    significant = delta.high < 0.0 if has_interval else drop > 0.0
    blocked = drop > config.max_accuracy_drop and significant
    info = AccuracyCheck(
        baseline=delta.baseline,
        candidate=delta.candidate,
        drop=drop,
        interval_low=delta.low,
        interval_high=delta.high,
        level=delta.level,
        max_accuracy_drop=config.max_accuracy_drop,
        significant=significant,
        blocked=blocked,
    )
    if blocked:
        where = (f"paired {delta.level:.0%} interval of the change [{delta.low:+.4f}, {delta.high:+.4f}]"
                 if has_interval else "no bootstrap interval (n_boot 0)")
        reasons.append(
            GateFinding(
                code="accuracy_drop",
                message=f"accuracy fell from {delta.baseline:.4f} to {delta.candidate:.4f} "
                f"(-{drop:.4f} > {config.max_accuracy_drop:g}; {where})",
                numbers=dataclasses.asdict(info),
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
    per_key: dict[str, int] = {}
    for key, _ in groups:
        per_key[key] = per_key.get(key, 0) + 1
    check_slice_values(per_key)
    return dict(sorted(groups.items()))


def _slice_table(
    base_recs: Sequence[ResolvedRecord],
    cand_recs: Sequence[ResolvedRecord],
    base: Side,
    cand: Side,
    ece: Stat,
    config: GateConfig,
    reasons: list[GateFinding],
    warnings: list[GateFinding],
) -> list[SliceRow]:
    """ECE per slice value; the whole matched set is the first row (key and value ``"all"``)."""
    n = int(base.correct.numel())
    groups = {("all", "all"): list(range(n)), **_slice_groups(base_recs, cand_recs)}
    rows: list[SliceRow] = []
    for (key, value), positions in groups.items():
        idx = torch.tensor(positions, dtype=torch.long)
        n_b, n_c = int(base.scored[idx].sum()), int(cand.scored[idx].sum())
        e_b, e_c = ece(base, idx), ece(cand, idx)
        delta = e_c - e_b
        rose = not math.isnan(delta) and delta > config.slice_ece_threshold
        large = min(n_b, n_c) >= config.min_slice_size
        status = ("blocked" if rose else "ok") if large else "small"
        row = SliceRow(
            key=key,
            value=value,
            n=len(positions),
            n_scored_baseline=n_b,
            n_scored_candidate=n_c,
            ece_baseline=e_b,
            ece_candidate=e_c,
            delta=delta,
            accuracy_baseline=accuracy_of(base, idx),
            accuracy_candidate=accuracy_of(cand, idx),
            status=status,
        )
        rows.append(row)
        _slice_findings(row, config, reasons, warnings)
    return rows


_SLICE_NUMBERS = ("key", "value", "n_scored_baseline", "n_scored_candidate", "ece_baseline", "ece_candidate", "delta")


def _slice_findings(row: SliceRow, config: GateConfig, reasons: list[GateFinding], warnings: list[GateFinding]) -> None:
    """The blocking reason (status ``blocked``) or the warning (a small slice whose ECE rose) of a row."""
    rose = not math.isnan(row.delta) and row.delta > config.slice_ece_threshold
    where = "the whole matched set" if row.key == "all" else f"slice {row.key}={row.value}"
    rise = f"ECE of {where} rose from {row.ece_baseline:.4f} to {row.ece_candidate:.4f}"
    scored = f"{row.n_scored_baseline}/{row.n_scored_candidate} scored items"
    numbers = {**_numbers(row, _SLICE_NUMBERS), "threshold": config.slice_ece_threshold}
    if row.status == "blocked":
        reasons.append(
            GateFinding(
                code="ece_rise" if row.key == "all" else "slice_ece_rise",
                message=f"{rise} (+{row.delta:.4f} > {config.slice_ece_threshold:g}) on {scored}",
                numbers=numbers,
            )
        )
    elif row.status == "small" and rose:
        warnings.append(
            GateFinding(
                code="small_slice_ece_rise",
                message=f"{rise} (+{row.delta:.4f}) but it has only {scored} (< {config.min_slice_size}); "
                "not blocking",
                numbers={**numbers, "min_slice_size": config.min_slice_size},
            )
        )


def _spread(side: Side) -> tuple[float, int, int]:
    """(std, number of distinct values (to 1e-6), number) of a side's scored confidences."""
    conf = side.confidence[side.scored]
    if conf.numel() == 0:
        return math.nan, 0, 0
    distinct = int(torch.unique(torch.round(conf * 1e6)).numel())
    return float(conf.std(unbiased=False)), distinct, int(conf.numel())


def _spread_check(base: Side, cand: Side, config: GateConfig, warnings: list[GateFinding]) -> ConfidenceSpread:
    std_b, distinct_b, n_b = _spread(base)
    std_c, distinct_c, n_c = _spread(cand)
    ratio = config.collapse_spread_ratio
    std_ratio = std_c / std_b if std_b > 0 else math.nan
    distinct_ratio = distinct_c / distinct_b if distinct_b > 0 else math.nan
    std_collapsed = std_b > 0 and std_c < ratio * std_b
    distinct_collapsed = distinct_b > 1 and distinct_c < ratio * distinct_b
    none_scored = n_b > 0 and n_c == 0
    info = ConfidenceSpread(
        std_baseline=std_b,
        std_candidate=std_c,
        std_ratio=std_ratio,
        distinct_baseline=distinct_b,
        distinct_candidate=distinct_c,
        distinct_ratio=distinct_ratio,
        n_scored_baseline=n_b,
        n_scored_candidate=n_c,
        threshold_ratio=ratio,
        collapsed=bool(std_collapsed or distinct_collapsed or none_scored),
    )
    if info.collapsed:
        parts = []
        if none_scored:
            parts.append(
                f"the baseline states a confidence on {n_b} answered items, the candidate on none "
                "(it refuses everything or states no confidence)"
            )
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
                code="confidence_collapse",
                message="confidence collapse: " + "; ".join(parts),
                numbers={k: v for k, v in dataclasses.asdict(info).items() if k != "collapsed"},
            )
        )
    return info
