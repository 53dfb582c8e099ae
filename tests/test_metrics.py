"""calrl.metrics: binned calibration errors, Brier, AUROC, AURC against torchmetrics, scikit-learn and
hand-computed cases; exact binning of discrete confidences; edge cases; batched rows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import brier_score_loss, roc_auc_score
from torchmetrics.functional.classification import binary_calibration_error

from calrl.metrics import (
    accuracy,
    aurc,
    bin_index,
    binary_auroc,
    brier_score,
    equal_mass_ece,
    expected_calibration_error,
    max_calibration_error,
    reliability_bins,
    risk_coverage_curve,
)

T = torch.tensor


def random_data(n: int, seed: int, dtype=torch.float64, power: float = 1.5, n_bins_clear: int | None = None):
    """Continuous confidences with P(correct | q) = q ** power. With ``n_bins_clear``, values within 1e-6
    of a bin edge k / n_bins_clear are dropped (less than 5e-7 below an edge our binning counts a value
    as on the edge, by design, where float bucketing does not)."""
    gen = torch.Generator().manual_seed(seed)
    conf = torch.rand(n, generator=gen, dtype=dtype)
    correct = torch.rand(n, generator=gen, dtype=dtype) < conf.pow(power)
    if n_bins_clear is not None:
        scaled = conf.double() * n_bins_clear
        keep = (scaled - scaled.round()).abs() > 1e-6 * n_bins_clear
        conf, correct = conf[keep], correct[keep]
    return conf, correct


# --------------------------------------------------------------------------------------------- binning

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_decimal_confidences_land_in_the_bin_of_their_left_edge(dtype):
    conf = torch.tensor([k / 10 for k in range(10)], dtype=dtype)
    if dtype in (torch.float16, torch.bfloat16):  # too coarse to hold 0.1 .. 0.9 to 5e-7
        conf = torch.tensor([0.0, 0.5, 0.25, 0.75], dtype=dtype)
        assert bin_index(conf, 4).tolist() == [0, 2, 1, 3]
        return
    assert bin_index(conf, 10).tolist() == list(range(10))


@pytest.mark.parametrize("n_bins", [10, 15, 20, 4, 100])
def test_every_edge_value_goes_to_the_bin_above(n_bins):
    # the left edge k / n_bins written as a decimal (as a parser would produce it), float32 and float64
    edges = [k / n_bins for k in range(n_bins)]
    for dtype in (torch.float32, torch.float64):
        assert bin_index(torch.tensor(edges, dtype=dtype), n_bins).tolist() == list(range(n_bins))
    # below an edge by more than the 5e-7 tolerance stays below; just above stays above
    below = torch.tensor([k / n_bins - 1e-6 for k in range(1, n_bins)], dtype=torch.float64)
    assert bin_index(below, n_bins).tolist() == list(range(n_bins - 1))
    above = torch.tensor([k / n_bins + 1e-9 for k in range(n_bins)], dtype=torch.float64)
    assert bin_index(above, n_bins).tolist() == list(range(n_bins))


def test_float_edges_would_misplace_some_decimals():
    """The pitfall the binning avoids: float edges from linspace put some decimals in the bin below
    (float64, 10 bins: 0.3 -> bin 2; float32, 20 bins: 0.45 -> bin 8)."""
    for dtype, n_bins in ((torch.float64, 10), (torch.float32, 20)):
        conf = torch.tensor([k / n_bins for k in range(1, n_bins)], dtype=dtype)
        float_bins = torch.bucketize(conf, torch.linspace(0, 1, n_bins + 1, dtype=dtype), right=True) - 1
        assert float_bins.tolist() != list(range(1, n_bins))
        assert bin_index(conf, n_bins).tolist() == list(range(1, n_bins))


def test_one_is_in_the_top_bin_and_zero_in_the_first():
    assert bin_index(T([0.0, 1.0, 0.999999, 0.9999999]), 15).tolist() == [0, 14, 14, 14]


def test_reliability_bins_hand_case():
    conf = T([0.1, 0.15, 0.3, 0.6, 0.7, 0.7, 1.0])
    correct = T([True, False, False, True, True, False, False])
    bins = reliability_bins(conf, correct, n_bins=10)
    assert bins["count"].tolist() == [0, 2, 0, 1, 0, 0, 1, 2, 0, 1]
    assert bins["count"].dtype == torch.int64
    torch.testing.assert_close(bins["lower"], torch.arange(10, dtype=torch.float32) / 10)
    torch.testing.assert_close(bins["upper"], torch.arange(1, 11, dtype=torch.float32) / 10)
    # bin 1 holds 0.1 and 0.15: mean 0.125, accuracy 1/2; bin 7 holds 0.7, 0.7: accuracy 1/2
    mean_conf, acc = bins["mean_confidence"], bins["accuracy"]
    assert mean_conf[1].item() == pytest.approx(0.125)
    assert acc[1].item() == 0.5 and acc[3].item() == 0.0 and acc[6].item() == 1.0 and acc[7].item() == 0.5
    assert mean_conf[9].item() == 1.0 and acc[9].item() == 0.0
    empty = bins["count"] == 0
    assert torch.isnan(mean_conf[empty]).all() and torch.isnan(acc[empty]).all()


# ----------------------------------------------------------------------------------- ECE / MCE / l2

@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_bins", [10, 15, 20])
@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
def test_ece_matches_torchmetrics_on_continuous_data(seed, n_bins, norm):
    conf, correct = random_data(5000, seed, n_bins_clear=n_bins)
    ours = expected_calibration_error(conf, correct, n_bins=n_bins, norm=norm)
    theirs = binary_calibration_error(conf, correct.long(), n_bins=n_bins, norm=norm)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)


def test_ece_float32_matches_torchmetrics():
    conf, correct = random_data(20000, 7, dtype=torch.float32, n_bins_clear=15)
    ours = expected_calibration_error(conf, correct)
    assert ours.dtype == torch.float32
    assert ours.item() == pytest.approx(binary_calibration_error(conf, correct.long()).item(), abs=1e-6)


def test_ece_hand_case_with_confidence_one_in_the_top_bin():
    conf = T([1.0, 1.0, 0.95, 0.5])
    correct = T([1, 0, 1, 0])
    # top bin [0.9, 1]: 1.0, 1.0, 0.95 -> mean conf 2.95/3, accuracy 2/3, gap 0.95/3, weight 3/4 -> 0.2375
    # bin [0.5, 0.6): 0.5, wrong -> gap 0.5, weight 1/4 -> 0.125;  ECE = 0.3625
    assert expected_calibration_error(conf, correct, n_bins=10).item() == pytest.approx(0.3625)
    # MCE = max(0.95/3, 0.5) = 0.5; l2 = sqrt(3/4 (0.95/3)^2 + 1/4 0.5^2)
    assert max_calibration_error(conf, correct, n_bins=10).item() == pytest.approx(0.5)
    l2 = math.sqrt(0.75 * (0.95 / 3) ** 2 + 0.25 * 0.25)
    assert expected_calibration_error(conf, correct, 10, norm="l2").item() == pytest.approx(l2)
    # torchmetrics gives 1.0 a bin of its own (documented difference): |1/2 - 1| 2/4 + 0.05/4 + 0.5/4
    assert binary_calibration_error(conf, correct, n_bins=10).item() == pytest.approx(0.3875)


def test_ece_verbalized_hand_case_bins_on_edges():
    # n_bins = 10; confidences on edges 0.3, 0.6, 0.7 must each be in the bin they open
    conf = T([0.3, 0.3, 0.6, 0.7, 0.7, 0.7, 0.7])
    correct = T([0, 1, 1, 1, 1, 1, 0])
    # bins: [0.3]: conf .3 acc .5 gap .2 (x2); [0.6]: conf .6 acc 1 gap .4 (x1); [0.7]: acc .75 gap .05 (x4)
    # ECE = (2*.2 + .4 + 4*.05) / 7 = 1.0 / 7
    assert expected_calibration_error(conf, correct, n_bins=10).item() == pytest.approx(1.0 / 7)


def test_single_bin_ece_is_the_gap_between_accuracy_and_mean_confidence():
    conf, correct = random_data(1000, 3)
    expected = abs(correct.double().mean() - conf.mean()).item()
    assert expected_calibration_error(conf, correct, n_bins=1).item() == pytest.approx(expected, abs=1e-12)
    assert max_calibration_error(conf, correct, n_bins=1).item() == pytest.approx(expected, abs=1e-12)


def test_all_correct_at_confidence_one_is_perfect():
    conf = torch.ones(10)
    correct = torch.ones(10, dtype=torch.bool)
    assert expected_calibration_error(conf, correct).item() == 0.0
    assert brier_score(conf, correct).item() == 0.0
    assert torch.isnan(binary_auroc(conf, correct))  # one class
    assert aurc(conf, correct).item() == 0.0


# --------------------------------------------------------------------------------------- equal mass

def _equal_mass_reference(conf: np.ndarray, correct: np.ndarray, n_bins: int) -> float:
    """No ties: bins are contiguous runs of the sorted items with sizes from floor(r * B / n)."""
    order = np.argsort(conf, kind="stable")
    c, y = conf[order], correct[order].astype(float)
    n = len(c)
    bins = (np.arange(n) * n_bins) // n
    total = 0.0
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            total += abs(y[sel].sum() - c[sel].sum())
    return total / n


@pytest.mark.parametrize("n,n_bins", [(1000, 15), (103, 10), (7, 15)])
def test_equal_mass_ece_without_ties_matches_reference(n, n_bins):
    conf, correct = random_data(n, 11)
    ours = equal_mass_ece(conf, correct, n_bins=n_bins).item()
    assert ours == pytest.approx(_equal_mass_reference(conf.numpy(), correct.numpy(), n_bins), abs=1e-12)


def test_equal_mass_bins_hold_equal_counts_without_ties():
    # 6 items, 3 bins: {0.1, 0.2}, {0.3, 0.4}, {0.5, 0.6}; correct = 1, 1, 0, 0, 1, 1
    # gaps: |2 - 0.3| = 1.7, |0 - 0.7| = 0.7, |2 - 1.1| = 0.9 -> ECE = 3.3 / 6 = 0.55
    conf = T([0.6, 0.1, 0.4, 0.2, 0.5, 0.3])
    correct = T([1, 1, 0, 1, 1, 0])
    assert equal_mass_ece(conf, correct, n_bins=3).item() == pytest.approx(0.55)


def test_equal_mass_ties_stay_together_and_order_does_not_matter():
    # 6 items, 3 bins; four items tie at 0.8 (ranks 2..5) -> they all join bin floor(2 * 3 / 6) = 1.
    # bin 0: 0.2 (wrong), 0.4 (right): |1 - 0.6| = 0.4; bin 1: four 0.8, three right: |3 - 3.2| = 0.2
    # ECE = 0.6 / 6 = 0.1
    conf = T([0.8, 0.2, 0.8, 0.4, 0.8, 0.8])
    correct = T([1, 0, 1, 1, 0, 1])
    assert equal_mass_ece(conf, correct, n_bins=3).item() == pytest.approx(0.1)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(0))
    assert equal_mass_ece(conf[perm], correct[perm], n_bins=3).item() == pytest.approx(0.1)


# ---------------------------------------------------------------------------------------------- Brier

def test_brier_matches_sklearn_and_hand_case():
    conf, correct = random_data(3000, 5)
    expected = brier_score_loss(correct.numpy(), conf.numpy())
    assert brier_score(conf, correct).item() == pytest.approx(expected, abs=1e-12)
    # (0.9 - 1)^2 + (0.8 - 0)^2 + (0.5 - 1)^2 = 0.01 + 0.64 + 0.25 = 0.9 -> / 3 = 0.3
    assert brier_score(T([0.9, 0.8, 0.5]), T([True, False, True])).item() == pytest.approx(0.3)


def test_accuracy():
    assert accuracy(T([0.9, 0.8, 0.5, 0.1]), T([1, 0, 1, 1])).item() == 0.75


# ---------------------------------------------------------------------------------------------- AUROC

@pytest.mark.parametrize("seed", [0, 1])
def test_auroc_matches_sklearn_on_continuous_data(seed):
    conf, correct = random_data(5000, seed, dtype=torch.float32)
    assert binary_auroc(conf, correct).item() == pytest.approx(
        roc_auc_score(correct.numpy(), conf.numpy()), abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_matches_sklearn_with_heavy_ties(seed):
    gen = torch.Generator().manual_seed(seed)
    conf = torch.randint(0, 11, (2000,), generator=gen).float() / 10  # verbalized 0-10 scale
    correct = torch.rand(2000, generator=gen) < conf
    assert binary_auroc(conf, correct).item() == pytest.approx(
        roc_auc_score(correct.numpy(), conf.numpy()), abs=1e-6)


def test_auroc_hand_case_with_ties_and_any_real_scores():
    # positives: 0.9, 0.5; negatives: 0.5, 0.1. Pairs: (0.9>0.5) 1, (0.9>0.1) 1, (0.5=0.5) 1/2, (0.5>0.1) 1
    # AUROC = 3.5 / 4 = 0.875
    scores, labels = T([0.9, 0.5, 0.5, 0.1]), T([1, 1, 0, 0])
    assert binary_auroc(scores, labels).item() == pytest.approx(0.875)
    # negative scores (e.g. -entropy) and -0.0 == 0.0 tie
    assert binary_auroc(T([-2.0, -0.0, 0.0, 3.0]), T([0, 1, 0, 1])).item() == pytest.approx(
        roc_auc_score([0, 1, 0, 1], [-2.0, -0.0, 0.0, 3.0]))
    assert binary_auroc(T([0.1, 0.2], dtype=torch.float64), T([False, True])).item() == 1.0


def test_auroc_undefined_for_one_class_or_empty():
    assert torch.isnan(binary_auroc(T([0.2, 0.9]), T([1, 1])))
    assert torch.isnan(binary_auroc(T([0.2, 0.9]), T([0, 0])))
    assert torch.isnan(binary_auroc(torch.empty(0), torch.empty(0)))


# ---------------------------------------------------------------------------------------- AURC, RC

def test_aurc_without_ties_is_mean_risk_of_top_k():
    conf, correct = random_data(500, 9)
    order = np.argsort(-conf.numpy(), kind="stable")
    errors = 1 - correct.numpy()[order].astype(float)
    risks = np.cumsum(errors) / np.arange(1, 501)
    assert aurc(conf, correct).item() == pytest.approx(risks.mean(), abs=1e-12)


def test_aurc_and_curve_group_ties_hand_case():
    # conf 0.9 (right), 0.7, 0.7, 0.7 (right, wrong, wrong), 0.2 (wrong)
    # groups: 0.9 -> coverage 1/5, risk 0; 0.7 -> coverage 4/5, risk 2/4; 0.2 -> coverage 1, risk 3/5
    # AURC = 1/5 * 0 + 3/5 * 1/2 + 1/5 * 3/5 = 0.3 + 0.12 = 0.42
    conf = T([0.7, 0.2, 0.9, 0.7, 0.7])
    correct = T([0, 0, 1, 1, 0])
    assert aurc(conf, correct).item() == pytest.approx(0.42)
    curve = risk_coverage_curve(conf, correct)
    torch.testing.assert_close(curve["threshold"], T([0.9, 0.7, 0.2]))
    torch.testing.assert_close(curve["coverage"], T([0.2, 0.8, 1.0]))
    torch.testing.assert_close(curve["risk"], T([0.0, 0.5, 0.6]))
    # the result does not depend on the order of tied items (breaking ties by sort order would)
    for seed in range(5):
        perm = torch.randperm(5, generator=torch.Generator().manual_seed(seed))
        assert aurc(conf[perm], correct[perm]).item() == pytest.approx(0.42)


# --------------------------------------------------------------------------------- edge cases, rows

ALL_SCALAR = [expected_calibration_error, max_calibration_error, equal_mass_ece, brier_score, aurc, accuracy]


@pytest.mark.parametrize("fn", ALL_SCALAR)
def test_empty_input_gives_nan(fn):
    assert torch.isnan(fn(torch.empty(0), torch.empty(0, dtype=torch.bool)))


def test_empty_reliability_bins_and_curve():
    bins = reliability_bins(torch.empty(0), torch.empty(0), 5)
    assert bins["count"].tolist() == [0] * 5 and torch.isnan(bins["accuracy"]).all()
    assert risk_coverage_curve(torch.empty(0), torch.empty(0))["coverage"].numel() == 0


@pytest.mark.parametrize("fn", ALL_SCALAR)
def test_bad_arguments_raise_value_error(fn):
    with pytest.raises(ValueError):
        fn(T([0.5, 1.2]), T([1, 0]))  # out of range
    with pytest.raises(ValueError):
        fn(T([0.5, float("nan")]), T([1, 0]))
    with pytest.raises(ValueError):
        fn(T([0.5, 0.4]), T([1, 0, 1]))  # shape mismatch
    with pytest.raises(ValueError):
        fn(T([1, 0]), T([1, 0]))  # integer confidence
    with pytest.raises(ValueError):
        fn(T([0.5, 0.4]), T([1.0, 0.5]))  # correct not 0/1


def test_bad_n_bins_and_norm():
    with pytest.raises(ValueError):
        expected_calibration_error(T([0.5]), T([1]), n_bins=0)
    with pytest.raises(ValueError):
        expected_calibration_error(T([0.5]), T([1]), norm="l3")
    with pytest.raises(ValueError):
        equal_mass_ece(T([0.5]), T([1]), n_bins=0)


@pytest.mark.parametrize("fn", ALL_SCALAR + [binary_auroc])
def test_rows_equal_separate_calls(fn):
    gen = torch.Generator().manual_seed(4)
    conf = torch.randint(0, 11, (5, 300), generator=gen).double() / 10  # ties across and within rows
    conf[2] = torch.rand(300, generator=gen, dtype=torch.float64)
    correct = torch.rand(5, 300, generator=gen, dtype=torch.float64) < conf
    batched = fn(conf, correct)
    assert batched.shape == (5,)
    separate = torch.stack([fn(c, y) for c, y in zip(conf, correct)])
    torch.testing.assert_close(batched, separate, rtol=0, atol=1e-12)


def test_results_keep_dtype_and_device():
    conf, correct = random_data(100, 0, dtype=torch.float32)
    for fn in ALL_SCALAR + [binary_auroc]:
        out = fn(conf, correct)
        assert out.dtype == torch.float32 and out.device == conf.device and out.ndim == 0
