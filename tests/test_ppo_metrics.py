"""``val/explained_variance``: the critic's fit to the rollout's returns over the response tokens."""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch

from calrl.trainers.ppo_metrics import PPOMetricsMixin


class _OneProcess:
    device = torch.device("cpu")
    num_processes = 1

    @staticmethod
    def reduce(tensor, reduction):
        assert reduction == "sum"
        return tensor


def _explained_variance(returns, values, padding_p1):
    metrics = PPOMetricsMixin()
    metrics.accelerator = _OneProcess()
    rollout = SimpleNamespace(returns=returns, values=values, padding_p1=padding_p1)
    return metrics._explained_variance(rollout)


def test_explained_variance_matches_its_definition_over_the_response_tokens():
    gen = torch.Generator().manual_seed(0)
    returns, values = torch.randn(4, 6, generator=gen), torch.randn(4, 6, generator=gen)
    padding_p1 = torch.zeros(4, 6, dtype=torch.bool)
    padding_p1[1, 4:] = padding_p1[3, 2:] = True
    # padded positions hold anything; they must not count
    returns[padding_p1], values[padding_p1] = 100.0, -100.0
    valid = ~padding_p1
    r, e = returns[valid].double(), (returns - values)[valid].double()
    expected = 1.0 - e.var(unbiased=False).item() / r.var(unbiased=False).item()
    assert math.isclose(_explained_variance(returns, values, padding_p1), expected, rel_tol=1e-9)


def test_explained_variance_is_one_for_a_perfect_critic_and_zero_for_the_mean():
    returns = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    none = torch.zeros_like(returns, dtype=torch.bool)
    assert _explained_variance(returns, returns.clone(), none) == 1.0
    mean = torch.full_like(returns, returns.mean().item())
    assert abs(_explained_variance(returns, mean, none)) < 1e-12
    # a critic that predicts the negated returns is worse than a constant
    assert _explained_variance(returns, -returns, none) < 0.0


def test_explained_variance_is_nan_when_the_returns_do_not_vary():
    returns = torch.ones(2, 3)
    assert math.isnan(_explained_variance(returns, torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bool)))
