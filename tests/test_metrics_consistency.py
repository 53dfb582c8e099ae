"""Consistency signals over sampled answers: entropy over clusters, majority share, agreement."""

from __future__ import annotations

import math

import pytest
import torch

from calrl.metrics import agreement_rate, cluster_counts, discrete_semantic_entropy, majority_share

IDS = torch.tensor([
    [0, 0, 1, 1],     # two clusters of 2: H = ln 2, majority 1/2
    [7, 7, 7, -1],    # one cluster (ids are arbitrary), one padding slot: H = 0, majority 1
    [0, 1, 2, -1],    # three singletons: H = ln 3, majority 1/3
    [3, 5, 3, 3],     # 3 + 1: H = -(3/4 ln 3/4 + 1/4 ln 1/4), majority 3/4
    [-1, -1, -1, -1],  # no samples: NaN
])


def test_cluster_counts():
    counts, n_valid = cluster_counts(IDS)
    assert n_valid.tolist() == [4, 3, 3, 4, 0]
    assert counts.tolist() == [[2, 2, 0, 0], [3, 0, 0, 0], [1, 1, 1, 0], [3, 1, 0, 0], [0, 0, 0, 0]]


def test_discrete_semantic_entropy_hand_values():
    entropy = discrete_semantic_entropy(IDS)
    expected = [math.log(2), 0.0, math.log(3), -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))]
    assert entropy[:4].tolist() == pytest.approx(expected, abs=1e-6)
    assert torch.isnan(entropy[4])
    assert str(entropy[1].item()) == "0.0"  # not -0.0
    bits = discrete_semantic_entropy(IDS, base=2)
    assert bits[0].item() == pytest.approx(1.0) and bits[2].item() == pytest.approx(math.log2(3))


def test_majority_share_and_agreement():
    assert majority_share(IDS)[:4].tolist() == pytest.approx([0.5, 1.0, 1 / 3, 0.75])
    assert torch.isnan(majority_share(IDS)[4])
    answers = torch.tensor([1, 7, 9, 5, 0])
    # agreement with the graded answer: 2/4, 3/3, 0/3 (answer in no sample cluster), 1/4, no samples
    rate = agreement_rate(IDS, answers)
    assert rate[:4].tolist() == pytest.approx([0.5, 1.0, 0.0, 0.25])
    assert torch.isnan(rate[4])
    no_answer = agreement_rate(IDS, torch.tensor([-1, 7, 0, 3, 0]))
    assert torch.isnan(no_answer[0]) and no_answer[3].item() == 0.75
    torch.testing.assert_close(agreement_rate(IDS), majority_share(IDS), equal_nan=True)


def test_relabelling_and_order_do_not_matter():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 4, (50, 10), generator=gen)
    perm = torch.argsort(torch.rand(50, 10, generator=gen), dim=1)
    shuffled = torch.gather(ids, 1, perm) * 13 + 100  # other labels, other order
    torch.testing.assert_close(discrete_semantic_entropy(ids), discrete_semantic_entropy(shuffled))
    torch.testing.assert_close(majority_share(ids), majority_share(shuffled))


def test_bad_inputs():
    with pytest.raises(ValueError):
        discrete_semantic_entropy(torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError):
        majority_share(torch.tensor([[0.0, 1.0]]))
    with pytest.raises(ValueError):
        agreement_rate(IDS, torch.tensor([0, 1]))
    assert discrete_semantic_entropy(torch.empty(0, 5, dtype=torch.long)).numel() == 0
