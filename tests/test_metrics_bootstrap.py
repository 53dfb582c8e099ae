"""Paired bootstrap and generic bootstrap intervals."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from calrl.metrics import (
    accuracy,
    binary_auroc,
    bootstrap_interval,
    brier_score,
    expected_calibration_error,
    paired_bootstrap,
    supports_batch,
)


def _runs(n: int = 400, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    p_true = torch.rand(n, generator=gen, dtype=torch.float64)
    correct_a = torch.rand(n, generator=gen, dtype=torch.float64) < p_true
    correct_b = torch.rand(n, generator=gen, dtype=torch.float64) < p_true
    conf_a = (0.5 + 0.5 * p_true).clamp(0, 1)  # over-confident baseline
    conf_b = p_true  # calibrated candidate
    return conf_a, correct_a, conf_b, correct_b


def _loop_reference(metric, conf_a, correct_a, conf_b, correct_b, n_boot, seed, alpha):
    """Independent reference: draw the same index matrix, evaluate one resample at a time, numpy quantiles."""
    n = conf_a.numel()
    index = torch.randint(0, n, (n_boot, n), generator=torch.Generator().manual_seed(seed))
    deltas = [metric(conf_b[i], correct_b[i]).item() - metric(conf_a[i], correct_a[i]).item() for i in index]
    return np.quantile(deltas, [alpha / 2, 1 - alpha / 2])


@pytest.mark.parametrize("metric", [expected_calibration_error, brier_score, accuracy])
def test_paired_bootstrap_matches_loop_reference(metric):
    conf_a, correct_a, conf_b, correct_b = _runs()
    result = paired_bootstrap(metric, conf_a, correct_a, conf_b, correct_b, n_boot=200,
                              generator=torch.Generator().manual_seed(1), alpha=0.1)
    low, high = _loop_reference(metric, conf_a, correct_a, conf_b, correct_b, 200, 1, 0.1)
    assert result["low"].item() == pytest.approx(low, abs=1e-12)
    assert result["high"].item() == pytest.approx(high, abs=1e-12)
    expected_delta = metric(conf_b, correct_b).item() - metric(conf_a, correct_a).item()
    assert result["delta"].item() == pytest.approx(expected_delta, abs=1e-12)
    assert result["value_a"].item() == pytest.approx(metric(conf_a, correct_a).item())


def test_batched_and_unbatched_paths_agree():
    conf_a, correct_a, conf_b, correct_b = _runs(300, 2)
    args = (conf_a, correct_a, conf_b, correct_b)
    fast = paired_bootstrap(expected_calibration_error, *args, n_boot=100, generator=torch.Generator().manual_seed(5))
    slow = paired_bootstrap(expected_calibration_error, *args, n_boot=100, generator=torch.Generator().manual_seed(5),
                            batched=False)
    for key in ("delta", "low", "high"):
        assert fast[key].item() == pytest.approx(slow[key].item(), abs=1e-12)


def test_batch_support_is_detected_through_partial():
    assert supports_batch(expected_calibration_error)
    assert supports_batch(functools.partial(expected_calibration_error, n_bins=10))
    assert not supports_batch(lambda c, y: c.mean())


def test_identical_runs_give_zero_and_a_real_gap_excludes_zero():
    conf_a, correct_a, conf_b, correct_b = _runs(2000, 3)
    same = paired_bootstrap(brier_score, conf_a, correct_a, conf_a, correct_a, n_boot=50,
                            generator=torch.Generator().manual_seed(0))
    assert same["delta"].item() == same["low"].item() == same["high"].item() == 0.0
    better = paired_bootstrap(expected_calibration_error, conf_a, correct_a, conf_b, correct_b, n_boot=300,
                              generator=torch.Generator().manual_seed(0))
    assert better["low"].item() <= better["delta"].item() <= better["high"].item() < 0


def test_non_batched_metric_and_undefined_resamples():
    # AUROC with few items: some resamples may contain one class only (NaN), which are skipped
    conf = torch.tensor([0.9, 0.2, 0.8, 0.3, 0.7])
    correct = torch.tensor([1, 0, 1, 1, 0])
    out = paired_bootstrap(lambda c, y: binary_auroc(c, y), conf, correct, conf * 0.5, correct, n_boot=200,
                           generator=torch.Generator().manual_seed(0))
    assert out["delta"].item() == 0.0 and not torch.isnan(out["low"]) and not torch.isnan(out["high"])


def test_bad_inputs_and_empty():
    conf_a, correct_a, conf_b, correct_b = _runs(50)
    with pytest.raises(ValueError):
        paired_bootstrap(brier_score, conf_a, correct_a, conf_b[:-1], correct_b[:-1])
    with pytest.raises(ValueError):
        paired_bootstrap(brier_score, conf_a, correct_a, conf_b, correct_b, alpha=1.5)
    with pytest.raises(ValueError):
        paired_bootstrap(brier_score, conf_a, correct_a, conf_b, correct_b, n_boot=0)
    empty = paired_bootstrap(brier_score, torch.empty(0), torch.empty(0), torch.empty(0), torch.empty(0))
    assert all(torch.isnan(v) for v in empty.values())


def test_bootstrap_interval_matches_loop_reference():
    conf_a, correct_a, _, _ = _runs(300, 4)
    value, low, high = bootstrap_interval(brier_score, conf_a, correct_a, n_boot=150,
                                          generator=torch.Generator().manual_seed(2))
    index = torch.randint(0, 300, (150, 300), generator=torch.Generator().manual_seed(2))
    reps = [brier_score(conf_a[i], correct_a[i]).item() for i in index]
    assert value.item() == pytest.approx(brier_score(conf_a, correct_a).item())
    assert (low.item(), high.item()) == pytest.approx(tuple(np.quantile(reps, [0.025, 0.975])), abs=1e-12)
