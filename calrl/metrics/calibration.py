"""Calibration errors of stated confidence: binned ECE/MCE, equal-mass ECE and smooth ECE.

All functions take ``confidence`` (floating, in [0, 1]) and ``correct`` (bool or 0/1) of the same
shape; the last dimension indexes items and leading dimensions are independent rows (one result per
row). Empty input (no items) gives NaN.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from calrl.limits import DEFAULT_BINS
from calrl.metrics.binning import TieGroups, bin_sums, check_pair

_NORMS = ("l1", "l2", "max")


def _out_dtype(confidence: Tensor) -> torch.dtype:
    return confidence.dtype if confidence.is_floating_point() else torch.float32


def _nan_if_empty(value: Tensor, n: int) -> Tensor:
    return torch.full_like(value, float("nan")) if n == 0 else value


def expected_calibration_error(confidence: Tensor, correct: Tensor, n_bins: int = DEFAULT_BINS,
                               norm: str = "l1", *, validate_args: bool = True) -> Tensor:
    """Binned calibration error with equal-width bins (torchmetrics BinaryCalibrationError convention).

    ``norm="l1"``: ECE = sum_b (n_b / n) |acc_b - conf_b|; ``"l2"``: sqrt(sum_b (n_b / n)(acc_b - conf_b)^2);
    ``"max"``: MCE = max over non-empty bins of |acc_b - conf_b|. Bins are left-closed and computed in
    a way that keeps values on an edge on its upper side (:func:`calrl.metrics.binning.bin_index`); 1.0
    is in the top bin. (torchmetrics gives 1.0 a bin of its own, so the two differ when some confidence
    equals 1.0, and for values less than 5e-7 below a bin edge; elsewhere they agree.)

    Example:
        >>> import torch
        >>> from calrl.metrics import expected_calibration_error
        >>> conf = torch.tensor([[0.2, 0.4, 0.6, 0.8], [0.2, 0.4, 0.6, 0.8]])  # two rows, scored separately
        >>> right = torch.tensor([[False, False, True, True], [False, True, False, True]])
        >>> ece = expected_calibration_error(conf, right, n_bins=2)
        >>> # bins {0.2, 0.4} (mean 0.3) and {0.6, 0.8} (mean 0.7). Row 0: accuracy 0 and 1, gaps 0.3 and 0.3;
        >>> # row 1: accuracy 0.5 in both, gaps 0.2 and 0.2. ECE = 2/4 * gap + 2/4 * gap
        >>> [round(v, 4) for v in ece.tolist()]
        [0.3, 0.2]
    """
    if norm not in _NORMS:
        raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")
    out_dtype = _out_dtype(confidence)
    conf, corr = check_pair(confidence, correct, validate_args=validate_args)
    n = conf.shape[-1]
    count, conf_sum, corr_sum = bin_sums(conf, corr, n_bins)
    gap_mass = corr_sum - conf_sum  # = n_b (acc_b - conf_b)
    if norm == "l1":
        value = gap_mass.abs().sum(-1) / n
    elif norm == "l2":
        per_bin = torch.where(count > 0, gap_mass.square() / count.clamp(min=1), torch.zeros_like(gap_mass))
        value = torch.sqrt(per_bin.sum(-1) / n)
    else:
        gap = torch.where(count > 0, gap_mass.abs() / count.clamp(min=1), torch.zeros_like(gap_mass))
        value = gap.amax(-1)
    return _nan_if_empty(value, n).to(out_dtype)


def max_calibration_error(confidence: Tensor, correct: Tensor, n_bins: int = DEFAULT_BINS, *,
                          validate_args: bool = True) -> Tensor:
    """MCE: the largest |accuracy - mean confidence| over non-empty equal-width bins.

    Example:
        >>> import torch
        >>> from calrl.metrics import max_calibration_error
        >>> conf = torch.tensor([0.1, 0.3, 0.7, 0.9])
        >>> right = torch.tensor([False, False, True, False])
        >>> # bin [0, 0.5): mean 0.2, accuracy 0, gap 0.2; bin [0.5, 1]: mean 0.8, accuracy 0.5, gap 0.3
        >>> round(max_calibration_error(conf, right, n_bins=2).item(), 4)
        0.3
    """
    return expected_calibration_error(confidence, correct, n_bins, norm="max", validate_args=validate_args)


def equal_mass_ece(confidence: Tensor, correct: Tensor, n_bins: int = DEFAULT_BINS, *,
                   validate_args: bool = True) -> Tensor:
    """Equal-mass (adaptive) ECE: bins of (about) n / n_bins items after sorting by confidence.

    Ties: items with the same confidence always share a bin (a bin boundary never splits a tie), so the
    value does not depend on item order. A tied group belongs to bin ``floor(r * n_bins / n)`` where
    ``r`` is the 0-based rank of its first item; heavy ties therefore give fewer, larger bins (empty bins
    contribute nothing). Without ties the bins hold floor or ceil of n / n_bins items each.

    Example:
        >>> import torch
        >>> from calrl.metrics import equal_mass_ece, expected_calibration_error
        >>> conf = torch.tensor([0.1, 0.2, 0.3, 0.9])
        >>> right = torch.tensor([False, True, False, True])
        >>> # two items a bin: {0.1, 0.2} sum of (correct - conf) 0.7, {0.3, 0.9} -0.2: (0.7 + 0.2) / 4;
        >>> # equal-width bins [0, 0.5) and [0.5, 1] instead hold 3 and 1 items: (0.4 + 0.1) / 4
        >>> round(equal_mass_ece(conf, right, n_bins=2).item(), 4)
        0.225
        >>> round(expected_calibration_error(conf, right, n_bins=2).item(), 4)
        0.125
    """
    if not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    out_dtype = _out_dtype(confidence)
    conf, corr = check_pair(confidence, correct, validate_args=validate_args)
    n = conf.shape[-1]
    if n == 0:
        return torch.full(conf.shape[:-1], float("nan"), dtype=out_dtype, device=conf.device)
    groups = TieGroups(confidence.detach())
    gap = groups.gather(corr - conf)
    item_bin = torch.div(groups.group_start_in_row() * n_bins, n, rounding_mode="floor")
    if groups.rows > 1:
        item_bin += torch.div(torch.arange(gap.numel(), device=gap.device), n, rounding_mode="floor") * n_bins
    gap_per_bin = torch.bincount(item_bin, weights=gap, minlength=groups.rows * n_bins)
    value = gap_per_bin.reshape(*conf.shape[:-1], n_bins).abs().sum(-1) / n
    return value.to(out_dtype)


# ----------------------------------------------------------------------------------------------------
# Smooth ECE (Blasiok & Nakkiran 2023)
#
# smECE_sigma = (1/n) * integral_0^1 | sum_i (y_i - f_i) K_sigma(t, f_i) | dt, where K_sigma is the
# Gaussian kernel reflected at 0 and 1 (all reflections: the Neumann heat kernel, which integrates to 1
# over [0, 1] for every f in [0, 1], f = 0 and f = 1 included). By Poisson summation
#   K_sigma(t, f) = 1 + 2 sum_{k>=1} exp(-pi^2 k^2 sigma^2 / 2) cos(pi k t) cos(pi k f),
# so smoothing is diagonal in the cosine basis. We linearly bin the residuals onto a grid of m + 1 nodes,
# take the cosine coefficients once with one FFT of the even extension, and for each sigma only scale
# them and invert (one inverse FFT). smECE is then the trapezoid integral of |smoothed residual| over the
# nodes. The bandwidth is the fixed point sigma* = smECE_{sigma*} (smECE_sigma decreases in sigma, the
# heat semigroup being an L1 contraction), found by bisection on [SIGMA_MIN, 1].
# ----------------------------------------------------------------------------------------------------

#: Smallest bandwidth searched (relplot uses the same floor); below it smECE is reported at SIGMA_MIN.
SIGMA_MIN = 1e-3
#: Grid nodes per bandwidth: the grid spacing is at most sigma / NODES_PER_SIGMA.
NODES_PER_SIGMA = 16
_MIN_INTERVALS, _MAX_INTERVALS = 256, 16384
_BISECTION_STEPS = 26


def _check_sigma(sigma: float | None) -> None:
    if sigma is not None and not (SIGMA_MIN <= sigma <= 1):
        raise ValueError(f"sigma must lie in [{SIGMA_MIN}, 1], got {sigma!r}")


def _intervals_for(sigma: float) -> int:
    need = NODES_PER_SIGMA / max(sigma, SIGMA_MIN)
    return int(min(_MAX_INTERVALS, max(_MIN_INTERVALS, 2 ** math.ceil(math.log2(need)))))


def _grid_masses(conf: Tensor, weight: Tensor, m: int) -> Tensor:
    """Linear binning of ``weight`` located at ``conf`` onto nodes j/m, j = 0..m; shape [rows, m + 1]."""
    rows = conf.shape[0]
    pos = conf * m
    lo = pos.floor().clamp_(0, m - 1)
    frac = pos - lo
    index = (lo.to(torch.int64) + torch.arange(rows, device=conf.device).unsqueeze(1) * (m + 1)).reshape(-1)
    size = rows * (m + 1)
    masses = torch.bincount(index, weights=(weight * (1 - frac)).reshape(-1), minlength=size)
    masses += torch.bincount(index + 1, weights=(weight * frac).reshape(-1), minlength=size)
    return masses.reshape(rows, m + 1)


def _cosine_coefficients(masses: Tensor) -> Tensor:
    """2 * sum_j masses_j cos(pi k j / m) for k = 0..m (end nodes counted twice: both reflections)."""
    doubled = masses.clone()
    doubled[:, 0] *= 2
    doubled[:, -1] *= 2
    even = torch.cat([doubled, masses[:, 1:-1].flip(-1)], dim=-1)
    return torch.fft.rfft(even, dim=-1).real


def _smoothed_at_nodes(coef: Tensor, sigma: Tensor) -> Tensor:
    """Kernel-smoothed masses at the nodes (divided by m), for a bandwidth per row."""
    m = coef.shape[-1] - 1
    k = torch.arange(m + 1, device=coef.device, dtype=coef.dtype)
    damping = torch.exp(-0.5 * (math.pi * sigma.unsqueeze(-1) * k) ** 2)
    return torch.fft.irfft(coef * damping, n=2 * m, dim=-1)[:, : m + 1]


def _smece_at(coef: Tensor, sigma: Tensor, n: int) -> Tensor:
    node = _smoothed_at_nodes(coef, sigma).abs()
    integral = node.sum(-1) - 0.5 * (node[:, 0] + node[:, -1])
    return integral / n


def _fixed_point(coef: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Bisection for sigma* per row; returns (smECE at sigma*, sigma*)."""
    rows = coef.shape[0]
    lo = torch.full((rows,), SIGMA_MIN, dtype=coef.dtype, device=coef.device)
    hi = torch.ones_like(lo)
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        above = _smece_at(coef, mid, n) > mid  # the fixed point lies above mid
        lo = torch.where(above, mid, lo)
        hi = torch.where(above, hi, mid)
    return _smece_at(coef, hi, n), hi


def _smooth_ece_rows(conf: Tensor, corr: Tensor, sigma: float | None) -> tuple[Tensor, Tensor]:
    """smECE and bandwidth per row of checked [rows, n] inputs (n > 0)."""
    return _solve(conf, corr - conf, conf.shape[-1], sigma)


def smooth_ece_weighted(confidence: Tensor, correct: Tensor, counts: Tensor) -> Tensor:
    """smECE (self-consistent bandwidth) of rows of *counted* items: row r holds ``counts[r, g]`` copies of
    the item (``confidence[g]``, ``correct[g]``); ``counts`` is [rows, G], every row summing to the same n.

    Equal to :func:`smooth_ece` on the items written out (up to float summation order); the cost depends on
    G, not n: :func:`calrl.metrics.bootstrap.smooth_ece_bootstrap` draws its resamples as counts this way.
    """
    conf, corr = check_pair(confidence, correct, validate_args=False)
    weights = counts.to(conf.dtype)
    n = round(float(weights[0].sum())) if weights.shape[0] else 0
    rows = weights.shape[0]
    if n == 0 or rows == 0:
        return torch.full((rows,), float("nan"), dtype=_out_dtype(confidence), device=conf.device)
    value, _ = _solve(conf.expand(rows, -1), weights * (corr - conf), n, None)
    return value.to(_out_dtype(confidence))


def _solve(conf: Tensor, residual: Tensor, n: int, sigma: float | None) -> tuple[Tensor, Tensor]:
    """smECE and bandwidth per row, from the items' confidences and (weighted) residuals [rows, k]."""
    if sigma is not None:
        m = _intervals_for(sigma)
        coef = _cosine_coefficients(_grid_masses(conf, residual, m))
        bandwidth = torch.full((conf.shape[0],), float(sigma), dtype=conf.dtype, device=conf.device)
        return _smece_at(coef, bandwidth, n), bandwidth
    # A row whose residual is zero everywhere (every item exactly calibrated, e.g. a small bootstrap resample
    # of correct items at confidence 1) has smECE 0 at every bandwidth and grid, and its bisection runs to the
    # floor SIGMA_MIN: it must not force the finest grid on the other rows. The grid is refined from the
    # smallest bandwidth among the rows with a nonzero residual.
    active = residual.abs().amax(-1) > 0
    m = _MIN_INTERVALS
    while True:
        coef = _cosine_coefficients(_grid_masses(conf, residual, m))
        value, bandwidth = _fixed_point(coef, n)
        smallest = torch.where(active, bandwidth, torch.ones_like(bandwidth)).min()
        finer = _intervals_for(float(smallest))  # one host sync per grid refinement
        if finer <= m:
            return value, bandwidth
        m = finer


def smooth_ece(confidence: Tensor, correct: Tensor, *, sigma: float | None = None,
               validate_args: bool = True) -> Tensor:
    """Smooth ECE with the reflected Gaussian kernel.

    With ``sigma=None`` (default) the bandwidth is the self-consistent one, sigma* = smECE(sigma*)
    (bisection; floor ``SIGMA_MIN``); with a number, smECE at that fixed bandwidth.

    Example:
        >>> import torch
        >>> from calrl.metrics import smooth_ece
        >>> conf = torch.tensor([[0.9] * 10, [0.5] * 10])  # two rows, scored separately
        >>> right = torch.tensor([[True, False] * 5, [True, False] * 5])
        >>> # row 0: all 10 items sit at 0.9 with residuals (correct - conf) summing to 5 - 9 = -4; the kernel
        >>> # integrates to 1, so smECE = 4 / 10 at any bandwidth. Row 1: half right at 0.5 is calibrated: 0
        >>> [round(v, 4) for v in smooth_ece(conf, right).tolist()]
        [0.4, 0.0]
        >>> round(smooth_ece(conf[0], right[0], sigma=0.05).item(), 4)
        0.4
    """
    value, _ = smooth_ece_with_bandwidth(confidence, correct, sigma=sigma, validate_args=validate_args)
    return value


def smooth_ece_with_bandwidth(confidence: Tensor, correct: Tensor, *, sigma: float | None = None,
                              validate_args: bool = True) -> tuple[Tensor, Tensor]:
    """``(smECE, bandwidth)``; see :func:`smooth_ece`.

    Example:
        >>> import torch
        >>> from calrl.metrics import smooth_ece_with_bandwidth
        >>> conf = torch.full((10,), 0.9)
        >>> right = torch.tensor([True, False] * 5)
        >>> # smECE is 0.4 at every bandwidth here (see smooth_ece), so the fixed point sigma* = smECE is 0.4
        >>> value, bandwidth = smooth_ece_with_bandwidth(conf, right)
        >>> round(value.item(), 4), round(bandwidth.item(), 4)
        (0.4, 0.4)
    """
    _check_sigma(sigma)
    out_dtype = _out_dtype(confidence)
    conf, corr = check_pair(confidence, correct, validate_args=validate_args)
    lead, n = conf.shape[:-1], conf.shape[-1]
    if n == 0:
        nan = torch.full(lead, float("nan"), dtype=out_dtype, device=conf.device)
        return nan, nan.clone()
    value, bandwidth = _smooth_ece_rows(conf.reshape(-1, n), corr.reshape(-1, n), sigma)
    return value.reshape(lead).to(out_dtype), bandwidth.reshape(lead).to(out_dtype)


def smooth_reliability_curve(confidence: Tensor, correct: Tensor, *, sigma: float | None = None,
                             n_points: int = 201, validate_args: bool = True) -> dict[str, Tensor]:
    """Smoothed reliability diagram (1-D input).

    Returns ``x`` (``n_points`` points on [0, 1]), ``y`` = x + kernel-smoothed (correct - confidence) at
    x, i.e. the smoothed accuracy given stated confidence x (not clipped to [0, 1]: far from the data it
    follows the diagonal shifted by the nearby residual), ``density`` (the reflected-kernel density
    of the confidences, integrating to 1; where it is near 0, ``y`` rests on few items), and ``sigma``
    (the bandwidth used: sigma* unless given). Empty input: ``y`` and ``density`` are NaN.

    Example:
        >>> import torch
        >>> from calrl.metrics import smooth_reliability_curve
        >>> conf = torch.full((10,), 0.9)
        >>> right = torch.tensor([True, False] * 5)
        >>> curve = smooth_reliability_curve(conf, right, n_points=11)  # x = 0, 0.1, ..., 1
        >>> # stated 0.9, half right: smoothed accuracy 0.5 at 0.9; y = x - 0.4 (a single residual) at every x
        >>> round(curve["x"][9].item(), 4), round(curve["y"][9].item(), 4), round(curve["sigma"].item(), 4)
        (0.9, 0.5, 0.4)
        >>> torch.allclose(curve["y"], curve["x"] - 0.4, atol=1e-6)
        True
    """
    if confidence.ndim != 1:
        raise ValueError("smooth_reliability_curve takes 1-D inputs")
    if n_points < 2:
        raise ValueError("n_points must be at least 2")
    _check_sigma(sigma)
    out_dtype = _out_dtype(confidence)
    conf, corr = check_pair(confidence, correct, validate_args=validate_args)
    x = torch.linspace(0, 1, n_points, dtype=conf.dtype, device=conf.device)
    n = conf.numel()
    if n == 0:
        nan = torch.full_like(x, float("nan"))
        return {"x": x.to(out_dtype), "y": nan.to(out_dtype), "density": nan.to(out_dtype),
                "sigma": torch.tensor(float("nan"), dtype=out_dtype, device=conf.device)}
    if sigma is None:
        _, bandwidth = _smooth_ece_rows(conf.unsqueeze(0), corr.unsqueeze(0), None)
    else:
        bandwidth = torch.full((1,), float(sigma), dtype=conf.dtype, device=conf.device)
    m = _intervals_for(float(bandwidth[0]))
    weights = torch.stack([corr - conf, torch.ones_like(conf)])
    masses = _grid_masses(conf.expand(2, n), weights, m)
    nodes = _smoothed_at_nodes(_cosine_coefficients(masses), bandwidth.expand(2)) * m  # smoothed sums
    pos = x * m
    lo = pos.floor().clamp_(0, m - 1)
    frac = pos - lo
    lo = lo.to(torch.int64)
    at_x = nodes[:, lo] * (1 - frac) + nodes[:, lo + 1] * frac
    residual_sum, mass = at_x[0], at_x[1]
    return {"x": x.to(out_dtype), "y": (x + residual_sum / mass).to(out_dtype),
            "density": (mass / n).to(out_dtype), "sigma": bandwidth[0].to(out_dtype)}
