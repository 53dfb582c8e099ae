"""Standard errors of the headline metrics: of a mean, of an AUROC (Hanley-McNeil), of the ECE (bootstrap)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from calrl.data.records import ResolvedRecord
from calrl.eval.runner import compute_results
from calrl.eval.schema import EvalResults
from calrl.metrics import auroc_stderr, ece_resamples, expected_calibration_error, mean_stderr


def test_mean_stderr_is_the_sample_deviation_over_root_n():
    x = torch.rand(1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert float(mean_stderr(x)) == pytest.approx(np.std(x.numpy(), ddof=1) / math.sqrt(1000), rel=1e-12)
    assert math.isnan(float(mean_stderr(torch.tensor([0.5], dtype=torch.float64))))


def test_auroc_stderr_follows_hanley_mcneil():
    a, n1, n0 = 0.8, 50, 50
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    expected = math.sqrt((a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n1 * n0))
    assert float(auroc_stderr(a, n1, n0)) == pytest.approx(expected, rel=1e-12)
    assert math.isnan(float(auroc_stderr(0.5, 0, 10)))
    assert float(auroc_stderr(0.7, 400, 400)) < float(auroc_stderr(0.7, 40, 40))  # shrinks with more items


def _discrete(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    conf = torch.randint(0, 11, (n,), generator=g).double() / 10
    return conf, torch.rand(n, generator=g, dtype=torch.float64) < conf**1.5


def test_ece_resamples_drawn_as_counts_match_index_resampling():
    conf, corr = _discrete(4000)
    counted = ece_resamples(conf, corr, n_bins=10, n_boot=400, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    by_index = torch.stack([expected_calibration_error(conf[i], corr[i], n_bins=10)
                            for i in torch.randint(0, 4000, (400, 4000), generator=g)])
    assert counted.shape == (400,)
    assert float(counted.mean()) == pytest.approx(float(by_index.mean()), abs=0.002)
    assert float(counted.std()) == pytest.approx(float(by_index.std()), rel=0.2)
    again = ece_resamples(conf, corr, n_bins=10, n_boot=400, generator=torch.Generator().manual_seed(1))
    assert torch.equal(counted, again)  # same seed, same resamples


def test_ece_resamples_of_many_distinct_confidences_resample_by_index():
    g = torch.Generator().manual_seed(3)
    conf = torch.rand(500, generator=g, dtype=torch.float64)
    corr = torch.rand(500, generator=g, dtype=torch.float64) < conf
    values = ece_resamples(conf, corr, n_bins=15, n_boot=64, generator=g)
    assert values.shape == (64,) and bool((values > 0).all())


def test_results_carry_standard_errors_and_old_files_still_read():
    records = [ResolvedRecord(str(i), i % 7 == 0, i % 3 == 0 and i % 7 != 0, None if i % 7 == 0 else (i % 10) / 10,
                              "abstained" if i % 7 == 0 else "given", False) for i in range(300)]
    results = compute_results(records, n_boot=50)
    se = results.stderr
    acc = np.array([r.correct for r in records], dtype=float)
    assert se.accuracy == pytest.approx(np.std(acc, ddof=1) / math.sqrt(300))
    assert se.refusal_rate == pytest.approx(np.std([r.abstained for r in records], ddof=1) / math.sqrt(300))
    assert se.ece is not None and 0 < se.ece < 0.2 and se.auroc is not None and se.brier is not None
    assert compute_results(records, n_boot=0).stderr.ece is None  # no resamples, no ECE error
    m = results.to_json()
    assert EvalResults.from_json(m).stderr == se
    for group in [m, *(v for values in m["slices"].values() for v in values.values())]:
        group.pop("stderr", None)
    assert EvalResults.from_json(m).stderr is None  # a metrics.json written before stderr was recorded
