"""Metrics run where their inputs live: on every available accelerator the results equal the CPU
results and every returned tensor is on the input's device (skipped when there is no accelerator)."""

from __future__ import annotations

import pytest
import torch

import calrl.metrics as M

DEVICES = [d for d in ("cuda", "mps") if (d == "cuda" and torch.cuda.is_available())
           or (d == "mps" and torch.backends.mps.is_available())]


def _data():
    gen = torch.Generator().manual_seed(0)
    conf = torch.randint(0, 101, (3000,), generator=gen).float() / 100
    correct = torch.rand(3000, generator=gen) < conf
    ids = torch.randint(-1, 4, (200, 10), generator=gen)
    return conf, correct, ids


def _calls(conf, correct, ids, gen):
    return {
        "ece": M.expected_calibration_error(conf, correct),
        "mce": M.max_calibration_error(conf, correct),
        "ece_l2": M.expected_calibration_error(conf, correct, norm="l2"),
        "ece_em": M.equal_mass_ece(conf, correct),
        "bins": M.reliability_bins(conf, correct),
        "smece": M.smooth_ece(conf, correct),
        "curve": M.smooth_reliability_curve(conf, correct),
        "brier": M.brier_score(conf, correct),
        "auroc": M.binary_auroc(conf, correct),
        "aurc": M.aurc(conf, correct),
        "rc": M.risk_coverage_curve(conf, correct),
        "entropy": M.discrete_semantic_entropy(ids),
        "share": M.majority_share(ids),
        "agree": M.agreement_rate(ids, ids[:, 0]),
        "paired": M.paired_bootstrap(M.expected_calibration_error, conf, correct, conf * 0.9, correct, n_boot=50,
                                     generator=gen),
        "smece_boot": M.smooth_ece_bootstrap(conf, correct, n_boot=20, generator=gen),
    }


def _flatten(value, prefix=""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flatten(item, f"{prefix}{key}.")
    elif isinstance(value, tuple):
        for i, item in enumerate(value):
            yield from _flatten(item, f"{prefix}{i}.")
    else:
        yield prefix, value


@pytest.mark.parametrize("device", DEVICES or [pytest.param("cuda", marks=pytest.mark.skip("no accelerator"))])
def test_same_results_on_accelerator(device):
    conf, correct, ids = _data()
    cpu = dict(_flatten(_calls(conf, correct, ids, torch.Generator().manual_seed(0))))
    # a CPU generator drives the resampling on both devices, so the resamples are identical
    acc = dict(_flatten(_calls(conf.to(device), correct.to(device), ids.to(device),
                               torch.Generator().manual_seed(0))))
    assert cpu.keys() == acc.keys()
    for key, value in acc.items():
        assert value.device.type == device, key
        torch.testing.assert_close(value.cpu(), cpu[key], equal_nan=True, rtol=1e-4, atol=1e-5,
                                   msg=lambda m, k=key: f"{k}: {m}")


def test_cpu_outputs_stay_on_cpu():
    conf, correct, ids = _data()
    for key, value in _flatten(_calls(conf, correct, ids, torch.Generator().manual_seed(0))):
        assert value.device.type == "cpu", key
