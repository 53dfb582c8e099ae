"""Bootstrap intervals: paired (baseline vs candidate on matched items) and for smooth ECE.

Resamples are drawn as index matrices ``[rows, n]`` in chunks and evaluated in one call per chunk when
the metric accepts leading batch dimensions (every metric of :mod:`calrl.metrics` does); otherwise the
metric is called once per resample. Intervals are percentile intervals; resamples where the metric is
undefined (NaN, e.g. AUROC of a resample with one class) are left out of the quantiles.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor

from calrl.limits import DEFAULT_BINS
from calrl.metrics.binning import bin_index, check_pair
from calrl.metrics.calibration import expected_calibration_error, smooth_ece, smooth_ece_weighted

MetricFn = Callable[[Tensor, Tensor], Tensor]

#: Resampled items held in memory at once (rows * n).
CHUNK_ELEMENTS = 1 << 22


def supports_batch(metric_fn: Callable) -> bool:
    """Whether ``metric_fn`` (or the function a ``functools.partial`` wraps) accepts ``[rows, n]`` inputs.

    A function says so with a ``supports_batch = True`` attribute, as the batched metrics of calrl.metrics do.

    Example:
        >>> import functools
        >>> from calrl.metrics import expected_calibration_error, supports_batch
        >>> supports_batch(expected_calibration_error)
        True
        >>> supports_batch(functools.partial(expected_calibration_error, n_bins=10))  # looks through partial
        True
        >>> supports_batch(lambda confidence, correct: (confidence - correct.float()).abs().mean())
        False
    """
    while isinstance(metric_fn, functools.partial):
        metric_fn = metric_fn.func
    return bool(getattr(metric_fn, "supports_batch", False))


def _resample_indices(rows: int, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    gen_device = generator.device if generator is not None else device
    return torch.randint(0, n, (rows, n), generator=generator, device=gen_device).to(device)


def _percentile_interval(values: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    probs = torch.tensor([alpha / 2, 1 - alpha / 2], dtype=values.dtype, device=values.device)
    low, high = torch.nanquantile(values, probs)
    return low, high


def _check_alpha(alpha: float, n_boot: int) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    if not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")


def _evaluate(metric_fn: MetricFn, confidence: Tensor, correct: Tensor, batched: bool) -> Tensor:
    if batched:
        return metric_fn(confidence, correct).reshape(-1)
    return torch.stack([metric_fn(c, y).reshape(()) for c, y in zip(confidence, correct)])


def paired_bootstrap(metric_fn: MetricFn, conf_a: Tensor, correct_a: Tensor, conf_b: Tensor, correct_b: Tensor,
                     n_boot: int = 1000, generator: torch.Generator | None = None, alpha: float = 0.05, *,
                     batched: bool | None = None) -> dict[str, Tensor]:
    """Difference ``metric_fn(b) - metric_fn(a)`` (b = candidate, a = baseline) on matched items, with a
    percentile interval from ``n_boot`` paired resamples (the same item indices for both runs).

    ``metric_fn(confidence, correct) -> Tensor``. ``batched`` (default: the function's
    ``supports_batch`` attribute) says whether it accepts ``[rows, n]`` inputs and returns ``[rows]``.
    Returns ``{"delta", "low", "high", "value_a", "value_b"}`` (0-dim tensors); NaN for empty input.
    Pass a seeded ``generator`` for reproducible intervals.

    Example:
        >>> import torch
        >>> from calrl.metrics import expected_calibration_error, paired_bootstrap
        >>> right = torch.arange(200) < 150  # 150 of 200 items right in both runs
        >>> baseline = torch.full((200,), 0.9, dtype=torch.float64)  # states 0.9: ECE |0.75 - 0.9| = 0.15
        >>> candidate = torch.full((200,), 0.75, dtype=torch.float64)  # states 0.75: ECE 0
        >>> out = paired_bootstrap(expected_calibration_error, baseline, right, candidate, right, n_boot=1000,
        ...                        generator=torch.Generator().manual_seed(0))
        >>> # a resample with share right p has change |0.75 - p| - |0.9 - p|: -0.15 for p <= 0.75, 2p - 1.65
        >>> # above (high: -0.03 = 2 * 0.81 - 1.65). The interval lies below 0: the candidate is better
        >>> {key: round(value.item(), 4) for key, value in out.items()}
        {'delta': -0.15, 'low': -0.15, 'high': -0.03, 'value_a': 0.15, 'value_b': 0.0}
    """
    _check_alpha(alpha, n_boot)
    for conf, corr, name in ((conf_a, correct_a, "conf_a"), (conf_b, correct_b, "conf_b")):
        check_pair(conf, corr, validate_args=False, name=name)
        if conf.ndim != 1:
            raise ValueError(f"{name} must be 1-D (one entry per matched item)")
    if conf_a.shape != conf_b.shape:
        raise ValueError(f"runs a and b must have the same items, got {conf_a.numel()} and {conf_b.numel()}")
    if batched is None:
        batched = supports_batch(metric_fn)
    value_a = metric_fn(conf_a, correct_a).reshape(())
    value_b = metric_fn(conf_b, correct_b).reshape(())
    delta = value_b - value_a
    n = conf_a.numel()
    if n == 0:
        nan = torch.full_like(delta, float("nan"))
        return {"delta": nan, "low": nan.clone(), "high": nan.clone(), "value_a": nan.clone(),
                "value_b": nan.clone()}
    rows_per_chunk = max(1, CHUNK_ELEMENTS // n)
    deltas = []
    for start in range(0, n_boot, rows_per_chunk):
        rows = min(rows_per_chunk, n_boot - start)
        index = _resample_indices(rows, n, generator, conf_a.device)
        a = _evaluate(metric_fn, conf_a[index], correct_a[index], batched)
        b = _evaluate(metric_fn, conf_b[index], correct_b[index], batched)
        deltas.append(b - a)
    low, high = _percentile_interval(torch.cat(deltas), alpha)
    return {"delta": delta, "low": low, "high": high, "value_a": value_a, "value_b": value_b}


def bootstrap_interval(metric_fn: MetricFn, confidence: Tensor, correct: Tensor, n_boot: int = 1000,
                       generator: torch.Generator | None = None, alpha: float = 0.05, *,
                       batched: bool | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """``(value, low, high)``: the metric on all items and a percentile bootstrap interval (1-D input).

    Example:
        >>> import torch
        >>> from calrl.metrics import accuracy, bootstrap_interval
        >>> conf = torch.full((20,), 0.8, dtype=torch.float64)
        >>> right = torch.arange(20) < 15  # 15 of 20 right
        >>> value, low, high = bootstrap_interval(accuracy, conf, right, n_boot=1000,
        ...                                       generator=torch.Generator().manual_seed(0))
        >>> # about 0.75 -+ 1.96 * sqrt(0.75 * 0.25 / 20) = 0.75 -+ 0.19, in steps of 1/20
        >>> round(value.item(), 4), round(low.item(), 4), round(high.item(), 4)
        (0.75, 0.55, 0.95)
    """
    _check_alpha(alpha, n_boot)
    check_pair(confidence, correct, validate_args=False)
    if confidence.ndim != 1:
        raise ValueError("bootstrap_interval takes 1-D inputs")
    if batched is None:
        batched = supports_batch(metric_fn)
    value = metric_fn(confidence, correct).reshape(())
    n = confidence.numel()
    if n == 0:
        return value, torch.full_like(value, float("nan")), torch.full_like(value, float("nan"))
    rows_per_chunk = max(1, CHUNK_ELEMENTS // n)
    values = []
    for start in range(0, n_boot, rows_per_chunk):
        rows = min(rows_per_chunk, n_boot - start)
        index = _resample_indices(rows, n, generator, confidence.device)
        values.append(_evaluate(metric_fn, confidence[index], correct[index], batched))
    low, high = _percentile_interval(torch.cat(values), alpha)
    return value, low, high


#: smooth_ece_bootstrap draws its resamples as counts over the distinct (confidence, correct) pairs when there
#: are at most this many of them and at most a quarter as many as items.
MAX_COUNTED_PAIRS = 4096
#: Above this many items, confidences that take too many distinct values are rounded to multiples of
#: ``ROUNDING`` (the spacing of the finest smooth-ECE grid) *for the resamples only*, and counted.
ROUNDED_ABOVE = 1 << 17
ROUNDING = 2.0**-14


def _counted_pairs(confidence: Tensor, correct: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The distinct (confidence, correct) pairs and how many items each has: (confidences, corrects, counts)."""
    conf = confidence.reshape(-1)
    right, n_right = torch.unique(conf[correct], return_counts=True)
    wrong, n_wrong = torch.unique(conf[~correct], return_counts=True)
    labels = torch.cat([torch.ones_like(right, dtype=torch.bool), torch.zeros_like(wrong, dtype=torch.bool)])
    return torch.cat([right, wrong]), labels, torch.cat([n_right, n_wrong])


def smooth_ece_bootstrap(confidence: Tensor, correct: Tensor, n_boot: int = 200, alpha: float = 0.05,
                         generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Smooth ECE with its percentile bootstrap interval: ``(value, low, high)``.

    Each resample gets its own self-consistent bandwidth (all resamples of a chunk are solved together).
    Drawing n items with replacement is drawing how many copies of each distinct (confidence, correct) pair
    a resample holds (a multinomial). Stated confidences take few values (0-10, percents), so when there are
    few distinct pairs (see :data:`MAX_COUNTED_PAIRS`) each resample is drawn as those counts (a chain of
    binomials: the same distribution as index resampling) and solved on the counted pairs
    (:func:`~calrl.metrics.calibration.smooth_ece_weighted`): the cost no longer grows with the number of
    items (10^6 items, 22 pairs: milliseconds). With more than :data:`ROUNDED_ABOVE` items and many distinct
    confidences, the resamples (not the reported value) use confidences rounded to multiples of
    :data:`ROUNDING` (at most 3e-5 away), counted the same way. Otherwise items are resampled by index.

    Example:
        >>> import torch
        >>> from calrl.metrics import smooth_ece_bootstrap
        >>> conf = torch.full((20,), 0.9)
        >>> right = torch.tensor([True, False] * 10)
        >>> value, low, high = smooth_ece_bootstrap(conf, right, n_boot=200,
        ...                                         generator=torch.Generator().manual_seed(0))
        >>> # all items at 0.9: smECE = |0.9 - share right| (see smooth_ece), the share being 0.5 -+ 0.22 here
        >>> round(value.item(), 2), round(low.item(), 2), round(high.item(), 2)  # high: 0.60125, interpolated
        (0.4, 0.2, 0.6)
    """
    _check_alpha(alpha, n_boot)
    correct = check_pair(confidence, correct, validate_args=False)[1].bool()
    if confidence.ndim != 1:
        raise ValueError("smooth_ece_bootstrap takes 1-D inputs")
    counted = _counted_resamples(confidence, correct, n_boot, generator)
    if counted is not None:
        value = smooth_ece(confidence, correct).reshape(())
        points, labels, draws = counted
        values = smooth_ece_weighted(points, labels, draws)
        low, high = _percentile_interval(values.to(value.dtype), alpha)
        return value, low, high
    return bootstrap_interval(smooth_ece, confidence, correct, n_boot=n_boot, generator=generator, alpha=alpha,
                              batched=True)


def _counted_resamples(confidence: Tensor, correct: Tensor, n_boot: int,
                       generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor] | None:
    """``(points, labels, draws)``: the distinct (confidence, correct) pairs (confidences rounded to
    :data:`ROUNDING` when there are too many, above :data:`ROUNDED_ABOVE` items) and ``n_boot`` resamples as
    copies of each [n_boot, G]; None when the items are better resampled by index (few items, many values)."""
    n = confidence.numel()
    if n == 0:
        return None
    points, labels, counts = _counted_pairs(confidence, correct)
    if points.numel() > min(MAX_COUNTED_PAIRS, n // 4) and n > ROUNDED_ABOVE:
        points, labels, counts = _counted_pairs(torch.round(confidence / ROUNDING) * ROUNDING, correct)
    if points.numel() <= min(MAX_COUNTED_PAIRS, n // 4) or n > ROUNDED_ABOVE:
        return points, labels, multinomial_counts(counts, n_boot, generator)
    return None


def ece_resamples(confidence: Tensor, correct: Tensor, n_bins: int = DEFAULT_BINS, n_boot: int = 200,
                  generator: torch.Generator | None = None) -> Tensor:
    """ECE (equal-width bins, L1) of ``n_boot`` bootstrap resamples of the items, float64 [n_boot]; their
    standard deviation is the ECE's bootstrap standard error.

    The resamples are drawn as :func:`smooth_ece_bootstrap` draws them: as copies of each distinct (confidence,
    correct) pair when there are few (the cost does not grow with the number of items; above
    :data:`ROUNDED_ABOVE` items with many distinct confidences, rounded to multiples of :data:`ROUNDING`), else by
    index. With the same seed both draw the same resamples.

    Example:
        >>> import torch
        >>> from calrl.metrics import ece_resamples
        >>> conf = torch.tensor([0.9, 0.9, 0.6, 0.6] * 25, dtype=torch.float64)
        >>> right = torch.tensor([True, False, True, False] * 25)
        >>> values = ece_resamples(conf, right, n_bins=10, n_boot=50,
        ...                        generator=torch.Generator().manual_seed(0))
        >>> values.shape, bool((values >= 0).all())
        (torch.Size([50]), True)
    """
    conf, corr = check_pair(confidence, correct, validate_args=False)
    if conf.ndim != 1:
        raise ValueError("ece_resamples takes 1-D inputs")
    n = conf.numel()
    if n == 0 or n_boot < 1:
        return torch.empty(0, dtype=torch.float64, device=conf.device)
    counted = _counted_resamples(conf, corr.bool(), n_boot, generator)
    if counted is not None:
        points, labels, draws = counted
        gaps = draws * (points.to(torch.float64) - labels.to(torch.float64))
        per_bin = torch.zeros(n_boot, n_bins, dtype=torch.float64, device=conf.device)
        per_bin.index_add_(1, bin_index(points, n_bins), gaps)
        return per_bin.abs().sum(-1) / n
    values = []
    rows_per_chunk = max(1, CHUNK_ELEMENTS // n)
    for start in range(0, n_boot, rows_per_chunk):
        index = _resample_indices(min(rows_per_chunk, n_boot - start), n, generator, conf.device)
        values.append(expected_calibration_error(conf[index], corr[index], n_bins=n_bins).to(torch.float64))
    return torch.cat(values)


def multinomial_counts(counts: Tensor, rows: int, generator: torch.Generator | None = None) -> Tensor:
    """``rows`` draws of n = counts.sum() items with replacement from a population holding ``counts[g]`` items
    of kind g, as copies per kind [rows, G] (a chain of binomials: kind g gets Bin(left, p_g / p_left))."""
    total = float(counts.sum())
    p = counts.double() / total
    left_n = torch.full((rows,), total, dtype=torch.float64)
    left_p = 1.0
    out = torch.zeros((rows, counts.numel()), dtype=torch.float64)
    for g in range(counts.numel() - 1):
        share = min(1.0, max(0.0, float(p[g]) / left_p)) if left_p > 0 else 0.0
        drawn = torch.binomial(left_n, torch.full_like(left_n, share), generator=generator)
        out[:, g] = drawn
        left_n = left_n - drawn
        left_p -= float(p[g])
    out[:, -1] = left_n
    return out
