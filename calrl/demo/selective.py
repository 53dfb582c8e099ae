"""The study's selective-prediction view: accuracy of the answered against coverage, over ALL held-out items.

``calrl eval``'s ``aurc`` (``metrics.json``) ranks only the answers with a stated confidence, so a policy that
abstains on the questions it cannot answer is scored on an easier set than one that answers them all: the two
areas do not compare. Here every held-out item of an eval folder's ``resolved.jsonl`` is ranked: the answers by
their stated confidence (highest first), then the answers without a stated confidence, then the abstentions
one by one, which count as not correct. Every policy's curve then ends at coverage 1 with its accuracy over all items, and
the area under it (AURC, lower is better) compares a policy that abstains with one that does not. The curve and
the area are calrl.metrics' :func:`~calrl.metrics.risk_coverage_curve` and :func:`~calrl.metrics.aurc`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from calrl.data.records import ResolvedRecord
from calrl.gate.inputs import read_resolved
from calrl.metrics import aurc, risk_coverage_curve

# The ranks of the items without a stated confidence, below every stated one (0-1): the metrics take them as
# confidences, so they are called with validate_args=False (read_resolved has already checked that every
# stated confidence lies in [0, 1] and every ``correct`` is a bool). In the curve they are the thresholds of
# the last points.
NO_CONFIDENCE = -1.0  # the answers without a stated confidence: after every stated one, tied (nothing orders them)
# the abstentions: last of all, and never correct. Each gets a rank of its own (ABSTAINED, ABSTAINED - 1, ...):
# they are all wrong, so their order cannot change the curve, and as one tie group (the metrics' rule: tied items
# enter together) the whole block would be charged the risk after all of it, a larger area than the same wrong
# answers stated with a few distinct low confidences
ABSTAINED = -2.0


def ranking(records: Iterable[ResolvedRecord]) -> tuple[torch.Tensor, torch.Tensor]:
    """(rank, correct) of every item: the stated confidence, :data:`NO_CONFIDENCE`, or for the k-th abstention
    ``ABSTAINED - k`` (see :data:`ABSTAINED`); an abstention counts as not correct."""
    rank, correct, n_abstained = [], [], 0
    for r in records:
        if r.abstained:
            rank.append(ABSTAINED - n_abstained)
            correct.append(False)
            n_abstained += 1
        else:
            rank.append(NO_CONFIDENCE if r.confidence is None else r.confidence)
            correct.append(r.correct)
    return torch.tensor(rank, dtype=torch.float64), torch.tensor(correct, dtype=torch.bool)


def selective_view(records: Iterable[ResolvedRecord]) -> dict[str, Any]:
    """``aurc_all_items`` and the ``risk_coverage`` curve (``threshold``, ``coverage``, ``accuracy`` = 1 - risk,
    one point per distinct rank, highest first; the threshold of every abstention's point is :data:`ABSTAINED`)
    over every item of ``records``."""
    rank, correct = ranking(records)
    if rank.numel() == 0:
        return {"aurc_all_items": None, "risk_coverage": {"threshold": [], "coverage": [], "accuracy": []}}
    curve = risk_coverage_curve(rank, correct, validate_args=False)
    threshold = curve["threshold"].clamp(min=ABSTAINED)
    return {"aurc_all_items": float(aurc(rank, correct, validate_args=False)),
            "risk_coverage": {"threshold": threshold.tolist(), "coverage": curve["coverage"].tolist(),
                              "accuracy": (1 - curve["risk"]).tolist()}}


def eval_folder_view(eval_dir: Path) -> dict[str, Any]:
    """:func:`selective_view` of the ``resolved.jsonl`` that ``calrl eval`` wrote into ``eval_dir``."""
    return selective_view(read_resolved(eval_dir / "resolved.jsonl"))


def accuracy_at(curve: dict[str, list[float]], coverages: Iterable[float]) -> list[float]:
    """The curve as a step function of coverage: at coverage c, the accuracy of the smallest set of top-ranked
    items it answers that covers at least c (so the area under 1 - this step function is the AURC)."""
    points = sorted(zip(curve["coverage"], curve["accuracy"]))
    out = []
    for c in coverages:
        out.append(next((acc for cov, acc in points if cov >= c - 1e-12), points[-1][1]))
    return out


def mean_curve(curves: list[dict[str, list[float]]]) -> tuple[list[float], list[float]]:
    """(coverage, accuracy) of the mean over ``curves`` of their step functions (:func:`accuracy_at`), at every
    coverage where one of them steps: its area is the mean of their areas."""
    coverages = sorted({c for curve in curves for c in curve["coverage"]})
    per_curve = [accuracy_at(curve, coverages) for curve in curves if curve["coverage"]]
    if not per_curve:
        return [], []
    return coverages, [sum(vals) / len(vals) for vals in zip(*per_curve)]
