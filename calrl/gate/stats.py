"""Statistics of the release gate: per-side tensors over the matched items and paired bootstrap deltas.

Accuracy (abstentions count as not correct), ECE and Brier (answered items with a confidence) and the
refusal rate are computed per side on the same item positions; each bootstrap replicate resamples the
matched items once and recomputes both sides on that same resample (``calrl.metrics.paired_bootstrap``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from calrl.data.records import ResolvedRecord
from calrl.errors import InputError
from calrl.gate.results import Delta, Deltas
from calrl.metrics import brier_score, expected_calibration_error, paired_bootstrap


@dataclass
class Side:
    """Tensors of one side over the matched items (same order on both sides)."""

    correct: torch.Tensor  # bool, abstentions False
    abstained: torch.Tensor  # bool
    confidence: torch.Tensor  # float64, filled per the missing policy where scored
    scored: torch.Tensor  # bool: answered and has a (possibly policy-filled) confidence
    n_missing: int


def side_tensors(records: Sequence[ResolvedRecord], policy: str, side: str) -> Side:
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
    return Side(correct, abstained, conf, scored, n_missing)


# ----------------------------------------------------------------------------------------------------
# Statistics on an index selection (used for point estimates and bootstrap replicates alike)

Stat = Callable[[Side, torch.Tensor], float]


def accuracy_of(side: Side, idx: torch.Tensor) -> float:
    return float(side.correct[idx].double().mean()) if idx.numel() else math.nan


def _refusal_rate(side: Side, idx: torch.Tensor) -> float:
    return float(side.abstained[idx].double().mean()) if idx.numel() else math.nan


def _scored(side: Side, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    keep = idx[side.scored[idx]]
    return side.confidence[keep], side.correct[keep]


def make_ece(n_bins: int) -> Stat:
    def ece(side: Side, idx: torch.Tensor) -> float:
        conf, correct = _scored(side, idx)
        if conf.numel() == 0:
            return math.nan
        return float(expected_calibration_error(conf, correct, n_bins=n_bins))

    return ece


def _brier(side: Side, idx: torch.Tensor) -> float:
    conf, correct = _scored(side, idx)
    if conf.numel() == 0:
        return math.nan
    return float(brier_score(conf, correct))


UNSCORED = -1.0  # confidence code of items left out of ECE and Brier inside the bootstrap


def masked_mean_metric(
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


def paired_delta_intervals(base: Side, cand: Side, *, n_bins: int, n_boot: int, seed: int, level: float) -> Deltas:
    """Accuracy, ECE, Brier and refusal rate of both sides, their delta (candidate - baseline) and a
    percentile interval of the delta from ``calrl.metrics.paired_bootstrap`` (each resample draws the
    matched items once and evaluates both sides on it). Point values use the plain metrics on the
    scored items, so they equal ``compute_metrics`` on the same records.
    """
    n = int(base.correct.numel())
    full = torch.arange(n)
    points: dict[str, Stat] = {
        "accuracy": accuracy_of,
        "ece": make_ece(n_bins),
        "brier": _brier,
        "refusal_rate": _refusal_rate,
    }

    def coded(side: Side) -> torch.Tensor:
        return torch.where(side.scored, side.confidence, torch.full_like(side.confidence, UNSCORED))

    boot_inputs = {
        "accuracy": (_share_correct, coded(base), base.correct, coded(cand), cand.correct),
        "ece": (
            masked_mean_metric(functools.partial(expected_calibration_error, n_bins=n_bins)),
            coded(base),
            base.correct,
            coded(cand),
            cand.correct,
        ),
        "brier": (masked_mean_metric(brier_score), coded(base), base.correct, coded(cand), cand.correct),
        "refusal_rate": (
            _share_correct,
            base.abstained.double(),
            base.abstained,
            cand.abstained.double(),
            cand.abstained,
        ),
    }
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, Delta] = {}
    for name, stat in points.items():  # one generator in this order: each metric's resamples follow the last's
        b, c = stat(base, full), stat(cand, full)
        low = high = math.nan
        if n_boot > 0:
            fn, conf_a, corr_a, conf_b, corr_b = boot_inputs[name]
            res = paired_bootstrap(fn, conf_a, corr_a, conf_b, corr_b, n_boot=n_boot, generator=gen,
                                   alpha=1.0 - level, batched=True)
            low, high = float(res["low"]), float(res["high"])
        out[name] = Delta(baseline=b, candidate=c, delta=c - b, low=low, high=high, level=level, n_boot=n_boot)
    return Deltas(**out)
