"""The eval cost fixes: counted smooth-ECE bootstrap, the grid of all-zero resamples, small slices without a
bootstrap, and the vectorised spacing normalisation (same output as the per-character version)."""

from __future__ import annotations

import torch

from calrl.confidence.lexicon import find_probability_phrases, normalise_spacing, original_span
from calrl.data.records import ResolvedRecord
from calrl.eval.runner import compute_results
from calrl.metrics import calibration as C
from calrl.metrics.bootstrap import bootstrap_interval, multinomial_counts, smooth_ece_bootstrap


def _discrete(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    conf = torch.randint(0, 11, (n,), generator=g).double() / 10
    return conf, torch.rand(n, generator=g, dtype=torch.float64) < conf**1.5


def test_weighted_smooth_ece_equals_the_items_written_out():
    conf, corr = _discrete(500)
    points, counts = torch.unique(torch.stack([conf, corr.double()]), dim=1, return_counts=True)
    weighted = C.smooth_ece_weighted(points[0], points[1] > 0.5, counts.unsqueeze(0))
    torch.testing.assert_close(weighted[0], C.smooth_ece(conf, corr), rtol=1e-9, atol=1e-12)


def test_multinomial_counts_sum_to_n_and_have_the_multinomial_mean():
    counts = torch.tensor([5, 30, 65])
    draws = multinomial_counts(counts, 4000, torch.Generator().manual_seed(0))
    assert draws.shape == (4000, 3) and bool((draws.sum(-1) == 100).all()) and bool((draws >= 0).all())
    torch.testing.assert_close(draws.mean(0), counts.double(), atol=0.5, rtol=0)
    p = counts.double() / 100
    torch.testing.assert_close(draws.var(0), 100 * p * (1 - p), rtol=0.1, atol=0)


def test_counted_bootstrap_matches_index_resampling():
    conf, corr = _discrete(4000)
    value, low, high = smooth_ece_bootstrap(conf, corr, n_boot=400, generator=torch.Generator().manual_seed(1))
    v2, low2, high2 = bootstrap_interval(C.smooth_ece, conf, corr, n_boot=400, batched=True,
                                         generator=torch.Generator().manual_seed(1))
    assert float(value) == float(v2)
    assert abs(float(high - low) - float(high2 - low2)) < 0.3 * float(high2 - low2)  # same spread
    assert abs(float(low) - float(low2)) < 0.01 and abs(float(high) - float(high2)) < 0.01


def test_an_all_zero_resample_does_not_force_the_finest_grid(monkeypatch):
    grids = []
    real = C._intervals_for
    monkeypatch.setattr(C, "_intervals_for", lambda sigma: grids.append(real(sigma)) or grids[-1])
    conf = torch.tensor([[1.0] * 8, [0.9, 0.8, 0.7, 0.6, 0.3, 0.2, 1.0, 1.0]], dtype=torch.float64)
    corr = torch.tensor([[True] * 8, [True, False, True, True, False, False, True, True]])
    values = C.smooth_ece(conf, corr)
    assert float(values[0]) == 0.0
    torch.testing.assert_close(values[1], C.smooth_ece(conf[1], corr[1]))
    assert max(grids) < C._MAX_INTERVALS, grids


def _record(i: int, domain: str) -> ResolvedRecord:
    return ResolvedRecord(id=f"q{i}", abstained=False, correct=i % 3 != 0, confidence=0.1 * (i % 10),
                          confidence_source="given", hedged=False, slice={"domain": domain})


def test_small_slices_get_no_bootstrap_interval():
    records = [_record(i, "big") for i in range(60)] + [_record(i, "small") for i in range(60, 70)]
    results = compute_results(records, min_slice_size=30, n_boot=50)
    big, small = results.slices["domain"]["big"], results.slices["domain"]["small"]
    assert small.small and small.smece.value is not None and small.smece.low is None and small.smece.high is None
    assert not big.small and big.smece.low is not None and big.smece.high is not None
    assert results.smece.low is not None


def _per_character(text: str) -> tuple[str, list[int]]:
    """The reference behaviour: one character at a time (before the join of split contractions)."""
    chars, index = [], []
    for i, ch in enumerate(text):
        for low in {"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"}.get(ch, ch).lower():
            chars.append(low)
            index.append(i)
    return "".join(chars), index


def test_normalise_spacing_maps_back_to_the_original_text():
    for text, expected in [("I \u2019m NOT sure", "i'm not sure"), ("don ' t know", "don't know"),
                           ("İ think so", "i\u0307 think so"), ("Paris. Confidence: 8", "paris. confidence: 8")]:
        norm, index = normalise_spacing(text)
        assert norm == expected
        assert len(index) == len(norm)
        if "'" not in text and "\u2019" not in text:
            assert (norm, list(index)) == _per_character(text)
    text = "Well, I ' m not sure: Lyon"
    match = find_probability_phrases(text)[0]
    assert match.phrase == "i'm not sure" and text[match.span[0]:match.span[1]] == "I ' m not sure"
    norm, index = normalise_spacing(text)
    assert original_span(index, 6, 18) == (6, 20)
