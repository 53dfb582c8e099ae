"""Post-hoc calibrators against brute force, scikit-learn and a synthetic overconfident set."""

import json

import pytest
import torch

from calrl.errors import InputError
from calrl.recalibration.calibrators import EPS, FORMAT, METHODS, T_BOUNDS, Calibrator, fit_calibrator


def _nll(p, y, eps=EPS):
    p = p.clamp(eps, 1 - eps)
    return -(y * torch.log(p) + (1 - y) * torch.log1p(-p)).mean(-1)


def _ece(conf, correct, n_bins=15):
    """Plain equal-width-bin ECE by a hand loop (independent of calrl.metrics)."""
    total = 0.0
    n = len(conf)
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        mask = [(lo <= c < hi) or (b == n_bins - 1 and c == 1.0) for c in conf.tolist()]
        idx = torch.tensor(mask)
        if idx.any():
            total += idx.sum().item() / n * abs(conf[idx].mean().item() - correct[idx].float().mean().item())
    return total


def _overconfident(n, seed):
    """True P(correct) in [0.3, 0.9]; stated confidence pushed towards the extremes (logit * 3)."""
    g = torch.Generator().manual_seed(seed)
    p_true = torch.rand(n, generator=g, dtype=torch.float64) * 0.6 + 0.3
    correct = torch.rand(n, generator=g, dtype=torch.float64) < p_true
    stated = torch.sigmoid(torch.logit(p_true) * 3)
    return stated, correct


def _verbalized(n, seed):
    """Discrete stated confidences (tenths, clustered high) with many ties."""
    g = torch.Generator().manual_seed(seed)
    stated = torch.randint(3, 11, (n,), generator=g).to(torch.float64) / 10
    correct = torch.rand(n, generator=g, dtype=torch.float64) < stated * 0.7
    return stated, correct


@pytest.mark.parametrize("make", [_overconfident, _verbalized])
def test_temperature_matches_brute_force(make):
    conf, correct = make(500, 1)
    cal = fit_calibrator(conf, correct, "temperature")
    t = cal.params["temperature"]
    z = torch.logit(conf.clamp(EPS, 1 - EPS))
    y = correct.to(torch.float64).unsqueeze(0)

    def losses(grid):
        return _nll(torch.sigmoid(z.unsqueeze(0) / grid.unsqueeze(1)), y)

    coarse = torch.arange(0.05, 50.0, 1e-2, dtype=torch.float64)
    centre = coarse[int(losses(coarse).argmin())].item()
    fine = torch.arange(centre - 0.02, centre + 0.02, 1e-5, dtype=torch.float64)
    fine_losses = losses(fine)
    best = fine[int(fine_losses.argmin())].item()
    assert abs(t - best) < 1e-3
    fitted = _nll(torch.sigmoid(z / t), correct.double()).item()
    assert fitted <= fine_losses.min().item() + 1e-12
    assert cal.nll_after == pytest.approx(fitted)
    assert cal.nll_before == pytest.approx(_nll(conf, correct.double()).item())


def test_temperature_on_overconfident_set_is_above_one_and_refused_on_one_class():
    conf, correct = _overconfident(1000, 2)
    fitted = fit_calibrator(conf, correct, "temperature")
    assert fitted.params["temperature"] > 1.5 and fitted.warnings == []
    for method in ("temperature", "platt"):
        for label, word in ((True, "correct"), (False, "wrong")):
            with pytest.raises(InputError, match=f"all 3 items are {word}: {method} scaling needs both"):
                fit_calibrator(torch.tensor([0.6, 0.7, 0.8]), torch.full((3,), label), method)
    # one-class sets are fine for the binning methods (every bin maps to the observed frequency)
    assert fit_calibrator(torch.tensor([0.6, 0.7]), torch.ones(2, dtype=torch.bool), "isotonic").apply(
        torch.tensor([0.65])).item() == 1.0
    # separable by confidence: the temperature runs to its lower bound, and says so
    separable = fit_calibrator(torch.tensor([0.2, 0.3, 0.7, 0.8]), torch.tensor([0, 0, 1, 1]), "temperature")
    assert separable.params["temperature"] == pytest.approx(T_BOUNDS[0], rel=1e-6)
    assert len(separable.warnings) == 1 and "bound" in separable.warnings[0]
    assert Calibrator.from_dict(separable.to_dict()).warnings == separable.warnings
    no_signal = fit_calibrator(torch.full((6,), 0.5), torch.tensor([1, 0, 1, 1, 0, 1]), "temperature")
    assert no_signal.params["temperature"] == 1.0


def test_platt_matches_sklearn_logistic_regression():
    sklearn_lm = pytest.importorskip("sklearn.linear_model")
    conf, correct = _overconfident(800, 3)
    cal = fit_calibrator(conf, correct, "platt")
    z = torch.logit(conf.clamp(EPS, 1 - EPS)).numpy().reshape(-1, 1)
    ref = sklearn_lm.LogisticRegression(C=float("inf"), tol=1e-12, max_iter=10_000).fit(z, correct.numpy())
    assert cal.params["a"] == pytest.approx(ref.coef_[0, 0], abs=1e-4)
    assert cal.params["b"] == pytest.approx(ref.intercept_[0], abs=1e-4)
    expected = torch.from_numpy(ref.predict_proba(z)[:, 1])
    assert torch.allclose(cal.apply(conf), expected, atol=1e-5)


def test_platt_never_reverses_order():
    conf = torch.tensor([0.1, 0.2, 0.8, 0.9] * 10, dtype=torch.float64)
    correct = torch.tensor([1, 1, 0, 0] * 10, dtype=torch.bool)  # anti-calibrated
    cal = fit_calibrator(conf, correct, "platt")
    assert cal.params["a"] == 0.0
    assert torch.allclose(cal.apply(conf), torch.full_like(conf, 0.5), atol=1e-9)


@pytest.mark.parametrize("make", [_overconfident, _verbalized])
def test_isotonic_matches_sklearn(make):
    sklearn_iso = pytest.importorskip("sklearn.isotonic")
    conf, correct = make(600, 4)
    cal = fit_calibrator(conf, correct, "isotonic")
    ref = sklearn_iso.IsotonicRegression(out_of_bounds="clip").fit(conf.numpy(), correct.numpy().astype(float))
    # fitted values at the training points
    assert torch.allclose(cal.apply(conf), torch.from_numpy(ref.predict(conf.numpy())), atol=1e-12)
    # between training points: the step function through sklearn's thresholds
    query = torch.linspace(0, 1, 1001, dtype=torch.float64)
    kx, ky = torch.from_numpy(ref.X_thresholds_), torch.from_numpy(ref.y_thresholds_)
    expected = ky[(torch.searchsorted(kx, query, right=True) - 1).clamp(min=0)]
    assert torch.allclose(cal.apply(query), expected, atol=1e-12)


def test_histogram_binning_by_hand():
    conf = torch.tensor([0.05, 0.05, 0.3, 0.3, 0.3, 0.6, 0.7, 1.0, 1.0])
    correct = torch.tensor([0, 1, 1, 1, 0, 1, 0, 1, 1], dtype=torch.bool)
    cal = fit_calibrator(conf, correct, "histogram", n_bins=10)
    acc = cal.params["accuracy"]
    # exact-arithmetic bins: 0.3, 0.6, 0.7 sit on edges and go to the bin that starts there
    assert acc[0] == 0.5 and acc[3] == pytest.approx(2 / 3) and acc[6] == 1.0 and acc[7] == 0.0
    assert acc[9] == 1.0  # 1.0 counts in the top bin
    assert acc[1] is None and acc[5] is None
    out = cal.apply(torch.tensor([0.05, 0.35, 0.15, 0.55, 0.999]))
    assert torch.allclose(out, torch.tensor([0.5, 2 / 3, 0.15, 0.55, 1.0]))  # empty bins: identity


@pytest.mark.parametrize("method", METHODS)
def test_ece_falls_on_held_out_overconfident_set(method):
    fit_conf, fit_correct = _overconfident(3000, 5)
    test_conf, test_correct = _overconfident(3000, 6)
    cal = fit_calibrator(fit_conf, fit_correct, method)
    before = _ece(test_conf, test_correct)
    after = _ece(cal.apply(test_conf), test_correct)
    assert before > 0.1
    assert after < before / 2
    assert cal.nll_after < cal.nll_before


@pytest.mark.parametrize("method", METHODS)
def test_apply_keeps_range_shape_dtype_and_monotone_methods_keep_order(method):
    conf, correct = _verbalized(400, 7)
    cal = fit_calibrator(conf, correct, method)
    query = torch.tensor([[0.0, 0.25], [0.5, 1.0]], dtype=torch.float32)
    out = cal.apply(query)
    assert out.shape == query.shape and out.dtype == torch.float32
    assert bool(((out >= 0) & (out <= 1)).all())
    if method != "histogram":
        grid = torch.linspace(0, 1, 501, dtype=torch.float64)
        assert bool((cal.apply(grid).diff() >= -1e-12).all())


@pytest.mark.parametrize("method", METHODS)
def test_to_dict_round_trip_is_json_safe(method):
    conf, correct = _overconfident(300, 8)
    cal = fit_calibrator(conf, correct, method)
    data = json.loads(json.dumps(cal.to_dict(), allow_nan=False))
    assert data["method"] == method and data["n"] == 300
    assert data["nll_after"] <= data["nll_before"]
    again = Calibrator.from_dict(data)
    query = torch.linspace(0, 1, 101)
    assert torch.equal(again.apply(query), cal.apply(query))


@pytest.mark.parametrize("bad, field", [
    ({"method": "magic", "params": {}}, "method"),
    ({"method": "temperature"}, "params"),
    ({"method": "temperature", "params": {"temperature": -1}}, "params"),
    ({"method": "platt", "params": {"a": 1.0}}, "params"),
    ({"method": "isotonic", "params": {"x": [0.5, 0.2], "y": [0.1, 0.2]}}, "params"),
    ({"method": "histogram", "params": {"n_bins": 2, "accuracy": [0.5]}}, "params"),
])
def test_from_dict_rejects_bad_input(bad, field):
    with pytest.raises(InputError) as err:
        Calibrator.from_dict({"format": FORMAT, **bad})
    assert err.value.field == field


def test_fit_rejects_bad_input():
    ok = torch.tensor([0.5, 0.6])
    with pytest.raises(InputError, match="known: temperature, platt, isotonic, histogram"):
        fit_calibrator(ok, torch.tensor([1, 0]), "magic")
    with pytest.raises(InputError, match="in \\[0, 1\\]"):
        fit_calibrator(torch.tensor([0.5, 1.5]), torch.tensor([1, 0]))
    with pytest.raises(InputError, match="2 items but correct has 3"):
        fit_calibrator(ok, torch.tensor([1, 0, 1]))
    with pytest.raises(InputError, match="0/1"):
        fit_calibrator(ok, torch.tensor([1, 2]))
    with pytest.raises(InputError, match="zero items"):
        fit_calibrator(torch.tensor([]), torch.tensor([]))
    cal = fit_calibrator(ok, torch.tensor([1, 0]))
    with pytest.raises(InputError):
        cal.apply(torch.tensor([float("nan")]))


def test_histogram_bins_with_the_metrics_rule():
    """The histogram calibrator puts every confidence in the bin calrl.metrics.bin_index (ECE) uses.

    0.1428572 lies 5.7e-8 above the edge 1/7: the ECE rule (edge tolerance 5e-7) puts it in bin 1; a
    rule rounding to a 1e-6 grid first (the calibrator's old rule) put it in bin 0.
    """
    from calrl.metrics import bin_index

    n_bins = 7
    values = torch.tensor([0.0, 0.1428572, 1 / 7, 2 / 7 - 1e-7, 0.5, 0.7, 1.0], dtype=torch.float64)
    assert bin_index(values[1:2], n_bins).item() == 1
    # one item per bin with a distinct accuracy per bin: the lookup returns the bin's own value
    centres = (torch.arange(n_bins, dtype=torch.float64) + 0.5) / n_bins
    conf = centres.repeat_interleave(4)
    correct = torch.tensor([[j < k % 4 + 1 for j in range(4)] for k in range(n_bins)]).reshape(-1)
    cal = fit_calibrator(conf, correct, "histogram", n_bins=n_bins)
    expected = torch.tensor(cal.params["accuracy"], dtype=torch.float64)[bin_index(values, n_bins)]
    assert torch.equal(cal.apply(values), expected)


def test_calibrator_format_and_bins_are_checked():
    cal = fit_calibrator(torch.tensor([0.2, 0.8, 0.6]), torch.tensor([0, 1, 0]), "histogram", n_bins=5)
    doc = cal.to_dict()
    for fmt, found in (("calrl.calibrator/2", "'calrl.calibrator/2'"), (None, "missing")):
        bad = {k: v for k, v in doc.items() if k != "format"} | ({"format": fmt} if fmt else {})
        with pytest.raises(InputError, match=f"field 'format': unsupported calibrator format \\({found}\\)"):
            Calibrator.from_dict(bad)
    with pytest.raises(InputError, match="field 'params.n_bins': must be an integer from 1 to 1000"):
        Calibrator.from_dict(doc | {"params": {"n_bins": 10**6, "accuracy": [None]}})
    with pytest.raises(InputError, match="field 'n_bins'"):
        fit_calibrator(torch.tensor([0.2, 0.8]), torch.tensor([0, 1]), "histogram", n_bins=1001)
