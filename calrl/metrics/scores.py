"""Scores of confidence against correctness: Brier score, AUROC, risk-coverage curve and AURC.

The last dimension indexes items, leading dimensions are independent rows. Empty input gives NaN.
"""

from __future__ import annotations

import torch
from torch import Tensor

from calrl.metrics.binning import TieGroups, accumulation_dtype, check_pair


def _out_dtype(x: Tensor) -> torch.dtype:
    return x.dtype if x.is_floating_point() else torch.float32


def brier_score(confidence: Tensor, correct: Tensor, *, validate_args: bool = True) -> Tensor:
    """Mean squared error of the stated confidence: mean (q - correct)^2 (0 is perfect)."""
    check_pair(confidence, correct, validate_args=validate_args)
    out_dtype = _out_dtype(confidence)
    squared = (confidence - correct.to(confidence.dtype)).square()
    return (squared.sum(-1, dtype=accumulation_dtype(confidence.device)) / confidence.shape[-1]).to(out_dtype)


def accuracy(confidence: Tensor, correct: Tensor, *, validate_args: bool = True) -> Tensor:
    """Share of correct items (``confidence`` is only checked; the signature matches the other metrics)."""
    out_dtype = _out_dtype(confidence)
    _, corr = check_pair(confidence, correct, validate_args=validate_args)
    return corr.mean(-1).to(out_dtype)


def binary_auroc(scores: Tensor, labels: Tensor) -> Tensor:
    """Area under the ROC curve of ``scores`` for ``labels`` (True / 1 = positive, e.g. correct).

    Ties count one half (the average-rank / Mann-Whitney convention, equal to
    ``sklearn.metrics.roc_auc_score``). ``scores`` may be any real values (confidence, negative entropy).
    When only one class is present (or the input is empty) the AUROC is undefined and NaN is returned
    (scikit-learn raises instead).
    """
    if scores.shape != labels.shape or scores.ndim == 0:
        raise ValueError(f"scores and labels must have the same non-scalar shape, got {tuple(scores.shape)} "
                         f"and {tuple(labels.shape)}")
    if not scores.is_floating_point():
        raise ValueError(f"scores must be a floating tensor, got {scores.dtype}")
    out_dtype = scores.dtype
    acc = accumulation_dtype(scores.device)
    lead, n = scores.shape[:-1], scores.shape[-1]
    if n == 0:
        return torch.full(lead, float("nan"), dtype=out_dtype, device=scores.device)
    groups = TieGroups(scores.detach())
    positive = groups.group_sum(groups.gather(labels.to(acc)))
    size = groups.group_size(acc)
    negative = size - positive
    negatives_below = groups.cumsum_within_rows(negative) - negative
    wins = groups.row_sum(positive * (negatives_below + 0.5 * negative))
    n_pos = groups.row_sum(positive)
    n_neg = n - n_pos
    return (wins / (n_pos * n_neg)).reshape(lead).to(out_dtype)


def risk_coverage_curve(confidence: Tensor, correct: Tensor, *, validate_args: bool = True) -> dict[str, Tensor]:
    """Selective risk as a function of coverage, tied confidences grouped (1-D input).

    One point per distinct confidence, highest first: answering every item with confidence >= the
    ``threshold`` gives ``coverage`` (share of items answered) and ``risk`` (error rate among them).
    Items with the same confidence enter together, never split by sort order.
    """
    if confidence.ndim != 1:
        raise ValueError("risk_coverage_curve takes 1-D inputs")
    out_dtype = _out_dtype(confidence)
    conf, corr = check_pair(confidence, correct, validate_args=validate_args)
    n = conf.numel()
    if n == 0:
        empty = conf.new_empty(0, dtype=out_dtype)
        return {"threshold": empty, "coverage": empty.clone(), "risk": empty.clone()}
    groups = TieGroups(confidence.detach(), descending=True)
    size = groups.group_size(conf.dtype)
    errors = groups.group_sum(1 - groups.gather(corr))
    answered = torch.cumsum(size, 0)
    starts = (answered - size).to(torch.int64)
    threshold = confidence.detach()[groups.order[starts]]
    return {"threshold": threshold.to(out_dtype), "coverage": (answered / n).to(out_dtype),
            "risk": (torch.cumsum(errors, 0) / answered).to(out_dtype)}


def aurc(confidence: Tensor, correct: Tensor, *, validate_args: bool = True) -> Tensor:
    """Area under the risk-coverage curve (lower is better), tied confidences grouped.

    AURC = sum over distinct confidences c (highest first) of (n_c / n) * risk(c), where risk(c) is the
    error rate among items with confidence >= c: the risk-coverage step curve integrated over coverage.
    Without ties this is the usual (1/n) sum_k risk of the k most confident items.
    """
    out_dtype = _out_dtype(confidence)
    conf, corr = check_pair(confidence, correct, validate_args=validate_args)
    lead, n = conf.shape[:-1], conf.shape[-1]
    if n == 0:
        return torch.full(lead, float("nan"), dtype=out_dtype, device=conf.device)
    groups = TieGroups(confidence.detach(), descending=True)
    size = groups.group_size(conf.dtype)
    errors = groups.group_sum(1 - groups.gather(corr))
    risk = groups.cumsum_within_rows(errors) / groups.cumsum_within_rows(size)
    return (groups.row_sum(size * risk) / n).reshape(lead).to(out_dtype)
