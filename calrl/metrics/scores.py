"""Scores of confidence against correctness: Brier score, AUROC, risk-coverage curve and AURC.

The last dimension indexes items, leading dimensions are independent rows. Empty input gives NaN.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from calrl.metrics.binning import TieGroups, accumulation_dtype, check_pair


def _out_dtype(x: Tensor) -> torch.dtype:
    return x.dtype if x.is_floating_point() else torch.float32


def brier_score(confidence: Tensor, correct: Tensor, *, validate_args: bool = True) -> Tensor:
    """Mean squared error of the stated confidence: mean (q - correct)^2 (0 is perfect).

    Example:
        >>> import torch
        >>> from calrl.metrics import brier_score
        >>> conf = torch.tensor([[0.75, 0.5, 1.0, 0.0], [0.75, 0.5, 1.0, 0.0]])  # two rows, scored separately
        >>> right = torch.tensor([[True, False, True, True], [True, True, True, False]])
        >>> # row 0: (0.25^2 + 0.5^2 + 0^2 + 1^2) / 4 = 1.3125 / 4; row 1: (0.25^2 + 0.5^2) / 4
        >>> brier_score(conf, right).tolist()
        [0.328125, 0.078125]
    """
    check_pair(confidence, correct, validate_args=validate_args)
    out_dtype = _out_dtype(confidence)
    squared = (confidence - correct.to(confidence.dtype)).square()
    return (squared.sum(-1, dtype=accumulation_dtype(confidence.device)) / confidence.shape[-1]).to(out_dtype)


def accuracy(confidence: Tensor, correct: Tensor, *, validate_args: bool = True) -> Tensor:
    """Share of correct items (``confidence`` is only checked; the signature matches the other metrics).

    Example:
        >>> import torch
        >>> from calrl.metrics import accuracy
        >>> conf = torch.tensor([[0.75, 0.5, 1.0, 0.0], [0.75, 0.5, 1.0, 0.0]])  # two rows, scored separately
        >>> right = torch.tensor([[True, False, True, True], [True, False, False, True]])
        >>> accuracy(conf, right).tolist()  # 3 of 4 and 2 of 4 right
        [0.75, 0.5]
    """
    out_dtype = _out_dtype(confidence)
    _, corr = check_pair(confidence, correct, validate_args=validate_args)
    return corr.mean(-1).to(out_dtype)


def binary_auroc(scores: Tensor, labels: Tensor) -> Tensor:
    """Area under the ROC curve of ``scores`` for ``labels`` (True / 1 = positive, e.g. correct).

    Ties count one half (the average-rank / Mann-Whitney convention, equal to
    ``sklearn.metrics.roc_auc_score``). ``scores`` may be any real values (confidence, negative entropy).
    When only one class is present (or the input is empty) the AUROC is undefined and NaN is returned
    (scikit-learn raises instead).

    Example:
        >>> import torch
        >>> from calrl.metrics import binary_auroc
        >>> scores = torch.tensor([0.9, 0.8, 0.8, 0.3])
        >>> labels = torch.tensor([True, True, False, False])
        >>> # of the 4 (positive, negative) pairs 3 are ordered right and one is tied (counts 1/2): 3.5 / 4
        >>> binary_auroc(scores, labels).item()
        0.875
        >>> binary_auroc(scores, torch.tensor([True, True, True, True]))  # one class only: undefined
        tensor(nan)
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


def mean_stderr(values: Tensor) -> Tensor:
    """Standard error of the mean of ``values`` over the last dimension: the sample standard deviation
    (n - 1 in the denominator) over sqrt(n), as lm-evaluation-harness' ``*_stderr`` of a mean metric.
    NaN for fewer than two values.

    Example:
        >>> import torch
        >>> from calrl.metrics import mean_stderr
        >>> round(float(mean_stderr(torch.tensor([1.0, 0.0, 1.0, 1.0]))), 4)
        0.25
    """
    if not values.is_floating_point():
        values = values.to(accumulation_dtype(values.device))
    n = values.shape[-1]
    if n < 2:
        return torch.full(values.shape[:-1], float("nan"), dtype=values.dtype, device=values.device)
    return values.std(dim=-1, correction=1) / math.sqrt(n)


def auroc_stderr(auroc: Tensor | float, n_positive: int, n_negative: int) -> Tensor:
    """Standard error of an AUROC from its value and the class sizes (Hanley and McNeil 1982, eq. 2):
    ``sqrt((A(1-A) + (n1-1)(Q1-A^2) + (n0-1)(Q2-A^2)) / (n1 n0))`` with ``Q1 = A/(2-A)``, ``Q2 = 2A^2/(1+A)``.
    NaN when the AUROC is undefined or a class is empty.

    Example:
        >>> from calrl.metrics import auroc_stderr
        >>> round(float(auroc_stderr(0.8, 50, 50)), 4)
        0.0445
    """
    a = torch.as_tensor(auroc, dtype=torch.float64)
    if n_positive < 1 or n_negative < 1:
        return torch.full_like(a, float("nan"))
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_positive - 1) * (q1 - a * a) + (n_negative - 1) * (q2 - a * a)) / (n_positive * n_negative)
    return var.clamp(min=0).sqrt()


def risk_coverage_curve(confidence: Tensor, correct: Tensor, *, validate_args: bool = True) -> dict[str, Tensor]:
    """Selective risk as a function of coverage, tied confidences grouped (1-D input).

    One point per distinct confidence, highest first: answering every item with confidence >= the
    ``threshold`` gives ``coverage`` (share of items answered) and ``risk`` (error rate among them).
    Items with the same confidence enter together, never split by sort order.

    Example:
        >>> import torch
        >>> from calrl.metrics import risk_coverage_curve
        >>> conf = torch.tensor([0.9, 0.9, 0.6, 0.3])
        >>> right = torch.tensor([True, False, True, False])
        >>> curve = risk_coverage_curve(conf, right)
        >>> # answer the two 0.9s: 1 error in 2; add 0.6: 1 in 3; add 0.3: 2 in 4
        >>> {key: [round(v, 4) for v in values.tolist()] for key, values in curve.items()}
        {'threshold': [0.9, 0.6, 0.3], 'coverage': [0.5, 0.75, 1.0], 'risk': [0.5, 0.3333, 0.5]}
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

    Example:
        >>> import torch
        >>> from calrl.metrics import aurc
        >>> conf = torch.tensor([0.9, 0.9, 0.6, 0.3])
        >>> right = torch.tensor([True, False, True, False])
        >>> # coverage steps 2/4, 1/4, 1/4 at risks 1/2, 1/3, 1/2: 2/4 * 1/2 + 1/4 * 1/3 + 1/4 * 1/2 = 0.4583
        >>> round(aurc(conf, right).item(), 4)
        0.4583
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


def _tango_statistic(delta: Tensor, n10: Tensor, n01: Tensor, n: Tensor) -> Tensor:
    """Tango's score statistic for H0: p(a right) - p(b right) = ``delta`` (decreasing in ``delta``)."""
    a = 2 * n
    b = -n10 - n01 + (2 * n - n10 + n01) * delta
    c = -n01 * delta * (1 - delta)
    q01 = ((b * b - 4 * a * c).clamp(min=0).sqrt() - b) / (2 * a)  # restricted MLE of p(a wrong, b right)
    var = n * (2 * q01 + delta * (1 - delta))
    return (n10 - n01 - n * delta) / var.clamp(min=torch.finfo(var.dtype).tiny).sqrt()


def paired_difference_interval(correct_a: Tensor, correct_b: Tensor, *, alpha: float = 0.05) -> dict[str, Tensor]:
    """Accuracy of ``a`` minus accuracy of ``b`` on the same items, with Tango's score interval.

    Paired: item i is answered by both, so only the discordant items (``a`` right and ``b`` wrong, or the
    reverse) move the difference. The two-sided ``1 - alpha`` interval is Tango's (1998) asymptotic score
    interval for a difference of paired proportions, found by bisection (float64, 100 halvings, so exact to
    the last bit of the bound): unlike the Wald or a bootstrap interval it keeps its width when no or few
    items are discordant (0 of ``n`` discordant gives +/- z^2 / (n + z^2): +/- 3.1 points at 120 items,
    +/- 0.64 at 600), so "a is at most m points less accurate than b" is supported when ``low > -m``
    (a non-inferiority test at one-sided level ``alpha / 2``). torchmetrics has no paired interval;
    statsmodels' ``mcnemar`` is the matching test (a p-value, no interval).

    Inputs are bool or 0/1 tensors of the same shape, the last dimension indexing items and leading
    dimensions independent rows; returns ``difference``, ``low``, ``high`` (float64) and the counts ``n``,
    ``a_only`` (a right, b wrong) and ``b_only``. Empty input gives NaN.

    Example:
        >>> import torch
        >>> from calrl.metrics import paired_difference_interval
        >>> a = torch.tensor([True] * 100 + [False] * 20)   # 100 of 120 right
        >>> b = a.clone()
        >>> out = paired_difference_interval(a, b)          # the same answers: difference 0, width kept
        >>> [round(out[k].item(), 4) for k in ("difference", "low", "high")]
        [0.0, -0.031, 0.031]
        >>> b[:2] = False                                   # b misses two items a gets right
        >>> out = paired_difference_interval(a, b)
        >>> [round(out[k].item(), 4) for k in ("difference", "low", "high")]
        [0.0167, -0.0149, 0.0587]
    """
    if correct_a.shape != correct_b.shape:
        raise ValueError(f"correct_a and correct_b differ in shape: {tuple(correct_a.shape)} vs "
                         f"{tuple(correct_b.shape)}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    a, b = correct_a.to(torch.bool), correct_b.to(torch.bool)
    n10 = (a & ~b).sum(-1).to(torch.float64)
    n01 = (~a & b).sum(-1).to(torch.float64)
    n = torch.full_like(n10, float(a.shape[-1]))
    diff = (n10 - n01) / n if a.shape[-1] else torch.full_like(n10, float("nan"))
    z = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(1 - alpha / 2, dtype=torch.float64))

    def solve(target: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
        # T(delta) decreases in delta: find delta with T(delta) = target between lo and hi
        for _ in range(100):
            mid = (lo + hi) / 2
            above = _tango_statistic(mid, n10, n01, n) > target
            lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
        return (lo + hi) / 2

    minus_one, one = torch.full_like(n10, -1.0), torch.full_like(n10, 1.0)
    low = solve(z, minus_one, diff.nan_to_num(0.0))
    high = solve(-z, diff.nan_to_num(0.0), one)
    if not a.shape[-1]:
        low, high = low.fill_(float("nan")), high.fill_(float("nan"))
    return {"difference": diff, "low": low, "high": high, "n": n.to(torch.int64), "a_only": n10.to(torch.int64),
            "b_only": n01.to(torch.int64)}
