"""Smooth ECE and the smooth reliability curve against a direct implementation of the definition
(Blasiok & Nakkiran 2023) on small n and against the reference package relplot."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from calrl.metrics import (
    expected_calibration_error,
    smooth_ece,
    smooth_ece_bootstrap,
    smooth_ece_with_bandwidth,
    smooth_reliability_curve,
)
from calrl.metrics.calibration import SIGMA_MIN


def _reflected_kernel(t: np.ndarray, f: np.ndarray, sigma: float) -> np.ndarray:
    """K[a, i] = sum over all reflections of f_i at 0 and 1 (images f + 2k and -f + 2k) of the Gaussian
    density phi_sigma(t_a - image); every K[:, i] integrates to 1 over [0, 1]."""
    diff = t[:, None] - f[None, :]
    summ = t[:, None] + f[None, :]
    total = np.zeros_like(diff)
    for k in range(-4, 5):
        total += np.exp(-0.5 * ((diff - 2 * k) / sigma) ** 2) + np.exp(-0.5 * ((summ - 2 * k) / sigma) ** 2)
    return total / (sigma * np.sqrt(2 * np.pi))


def direct_smece(f: np.ndarray, y: np.ndarray, sigma: float, n_t: int = 8001, *,
                 residual: np.ndarray | None = None, n: int | None = None) -> float:
    """(1/n) * integral over [0, 1] of |sum_i (y_i - f_i) K_sigma(t, f_i)| dt, trapezoid on n_t points.
    (``residual``/``n`` given: items already merged by confidence, residuals summed.)"""
    t = np.linspace(0, 1, n_t)
    residual = y - f if residual is None else residual
    smoothed = np.abs(_reflected_kernel(t, f, sigma) @ residual)
    return float(np.trapezoid(smoothed, t) / (len(f) if n is None else n))


def direct_fixed_point(f: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    values, inverse = np.unique(f, return_inverse=True)  # merge tied confidences (the sum is linear)
    residual = np.bincount(inverse, weights=y - f)
    lo, hi = SIGMA_MIN, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        above = direct_smece(values, None, mid, 4001, residual=residual, n=len(f)) > mid
        lo, hi = (mid, hi) if above else (lo, mid)
    return direct_smece(values, None, hi, residual=residual, n=len(f)), hi


def _data(n: int, seed: int, power: float = 1.0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    conf = torch.rand(n, generator=gen, dtype=dtype)
    correct = torch.rand(n, generator=gen, dtype=dtype) < conf.pow(power)
    return conf, correct


@pytest.mark.parametrize("sigma", [0.02, 0.05, 0.2, 0.7])
@pytest.mark.parametrize("seed", [0, 1])
def test_fixed_bandwidth_matches_direct_definition(sigma, seed):
    conf, correct = _data(40, seed, power=2.0)
    conf[:3] = torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64)  # masses on the boundary count fully
    expected = direct_smece(conf.numpy(), correct.double().numpy(), sigma)
    # linear binning onto the grid (spacing <= sigma / 16) is the only approximation: ~1e-4 relative
    assert smooth_ece(conf, correct, sigma=sigma).item() == pytest.approx(expected, rel=2e-4, abs=1e-6)


@pytest.mark.parametrize("seed,power", [(0, 1.0), (1, 1.0), (2, 2.5)])
def test_self_consistent_bandwidth_matches_direct_definition(seed, power):
    conf, correct = _data(30, seed, power)
    value, sigma = smooth_ece_with_bandwidth(conf, correct)
    expected_value, expected_sigma = direct_fixed_point(conf.numpy(), correct.double().numpy())
    assert sigma.item() == pytest.approx(expected_sigma, abs=5e-5)
    assert value.item() == pytest.approx(expected_value, abs=5e-5)
    assert value.item() == pytest.approx(sigma.item(), abs=1e-5)  # fixed point: smECE(sigma*) = sigma*


@pytest.mark.parametrize("n,seed,power", [(300, 0, 1.0), (2000, 1, 1.0), (2000, 2, 1.5), (20000, 3, 1.0)])
def test_matches_relplot(n, seed, power):
    relplot = pytest.importorskip("relplot")
    conf, correct = _data(n, seed, power)
    f, y = conf.numpy(), correct.double().numpy()
    value, sigma = smooth_ece_with_bandwidth(conf, correct)
    ref_value, ref_sigma = relplot.smECE(f, y, return_width=True)
    # relplot bisects to 1/1024 in sigma, evaluates on a 200-point mesh and weights mass near 0 and 1
    # half; the two agree to about 1e-3 (relative 1 %)
    assert value.item() == pytest.approx(ref_value, abs=1e-3, rel=1e-2)
    assert sigma.item() == pytest.approx(ref_sigma, abs=2e-3)
    assert smooth_ece(conf, correct, sigma=0.05).item() == pytest.approx(
        relplot.smECE_sigma(f, y, 0.05), abs=1e-3, rel=1e-2)


def test_decreases_with_bandwidth_and_is_bounded_by_binned_ece_without_sign_change():
    conf, correct = _data(3000, 4, power=1.0)
    values = [smooth_ece(conf, correct, sigma=s).item() for s in (0.005, 0.01, 0.03, 0.1, 0.3, 1.0)]
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(values))
    # when the residual has one sign everywhere (always over-confident), every smoothing of it and
    # every binning of it integrate to |mean(correct - confidence)|
    conf = torch.linspace(0.05, 0.95, 500, dtype=torch.float64)
    correct = torch.zeros(500, dtype=torch.bool)
    gap = conf.mean().item()
    assert smooth_ece(conf, correct).item() == pytest.approx(gap, abs=1e-9)
    assert smooth_ece(conf, correct, sigma=0.03).item() == pytest.approx(gap, abs=1e-9)
    assert expected_calibration_error(conf, correct).item() == pytest.approx(gap, abs=1e-12)


def test_perfectly_calibrated_reads_lower_than_binned_ece():
    """methods.md: on calibrated samples of n = 100, smooth ECE reads well below 15-bin ECE (which is
    inflated by per-bin noise). Averaged over 20 samples to make the comparison stable."""
    smooth, binned = [], []
    for seed in range(20):
        conf, correct = _data(100, 100 + seed)
        smooth.append(smooth_ece(conf, correct).item())
        binned.append(expected_calibration_error(conf, correct, n_bins=15).item())
    assert np.mean(smooth) < 0.75 * np.mean(binned)


def test_verbalized_discrete_confidences_and_float32():
    gen = torch.Generator().manual_seed(5)
    conf = torch.randint(0, 11, (500,), generator=gen).float() / 10
    correct = torch.rand(500, generator=gen) < conf * 0.8
    value = smooth_ece(conf, correct)
    assert value.dtype == torch.float32
    expected_value, _ = direct_fixed_point(conf.double().numpy(), correct.double().numpy())
    assert value.item() == pytest.approx(expected_value, abs=1e-4)


def test_rows_edge_cases_and_bad_arguments():
    conf, correct = _data(200, 6)
    rows = torch.stack([conf, conf.flip(0)]), torch.stack([correct, correct])
    batched = smooth_ece(*rows)
    assert batched.shape == (2,)
    assert batched[0].item() == pytest.approx(smooth_ece(conf, correct).item(), abs=1e-7)
    assert torch.isnan(smooth_ece(torch.empty(0), torch.empty(0)))
    assert smooth_ece(torch.full((5,), 0.5), torch.tensor([1, 0, 1, 0, 1])).item() == pytest.approx(0.1, abs=1e-7)
    with pytest.raises(ValueError):
        smooth_ece(conf, correct, sigma=0.0)
    with pytest.raises(ValueError):
        smooth_ece(conf + 1, correct)


def test_smooth_reliability_curve():
    conf, correct = _data(400, 7, power=2.0)
    curve = smooth_reliability_curve(conf, correct, n_points=101)
    x, y, density = curve["x"], curve["y"], curve["density"]
    assert x.shape == y.shape == density.shape == (101,)
    assert np.trapezoid(density.numpy(), x.numpy()) == pytest.approx(1.0, abs=1e-3)
    # y(t) = t + sum_i K(t, f_i)(y_i - f_i) / sum_i K(t, f_i), directly
    sigma = curve["sigma"].item()
    assert sigma == pytest.approx(smooth_ece_with_bandwidth(conf, correct)[1].item())
    f, yy = conf.numpy(), correct.double().numpy()
    kernel = _reflected_kernel(x.numpy(), f, sigma)
    expected_y = x.numpy() + kernel @ (yy - f) / kernel.sum(1)
    np.testing.assert_allclose(y.numpy(), expected_y, atol=2e-4)
    np.testing.assert_allclose(density.numpy(), kernel.mean(1), rtol=2e-3, atol=1e-4)
    # a single confidence level, calibrated: the curve is the diagonal
    flat = smooth_reliability_curve(torch.full((10,), 0.5), torch.tensor([1, 0] * 5), sigma=0.1)
    np.testing.assert_allclose(flat["y"].numpy(), flat["x"].numpy(), atol=1e-9)
    empty = smooth_reliability_curve(torch.empty(0), torch.empty(0))
    assert torch.isnan(empty["y"]).all()


def test_smooth_ece_bootstrap_interval():
    conf, correct = _data(500, 8, power=1.3)
    value, low, high = smooth_ece_bootstrap(conf, correct, n_boot=100, generator=torch.Generator().manual_seed(0))
    assert value.item() == pytest.approx(smooth_ece(conf, correct).item())
    assert low.item() < value.item() < high.item()
    again = smooth_ece_bootstrap(conf, correct, n_boot=100, generator=torch.Generator().manual_seed(0))
    assert (again[1].item(), again[2].item()) == (low.item(), high.item())
    # more items -> narrower interval
    big_conf, big_correct = _data(8000, 9, power=1.3)
    _, big_low, big_high = smooth_ece_bootstrap(big_conf, big_correct, n_boot=100,
                                                generator=torch.Generator().manual_seed(0))
    assert (big_high - big_low).item() < (high - low).item()
    # each replicate equals smooth_ece on the resampled items
    gen = torch.Generator().manual_seed(3)
    index = torch.randint(0, 500, (1, 500), generator=gen)
    from calrl.metrics import bootstrap_interval

    _, low1, high1 = bootstrap_interval(smooth_ece, conf, correct, n_boot=1,
                                        generator=torch.Generator().manual_seed(3), batched=False)
    single = smooth_ece(conf[index[0]], correct[index[0]])
    assert low1.item() == pytest.approx(single.item()) and high1.item() == pytest.approx(single.item())
