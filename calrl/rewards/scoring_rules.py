"""Proper scoring rules on a stated confidence, used as rewards (pure tensor functions).

A scoring rule S(q, y) rewards a probability q for the outcome y (here: "the answer is correct").
It is *proper* when, for an outcome that happens with probability p, the expected reward
p * S(q, 1) + (1 - p) * S(q, 0) is maximised at q = p, and *strictly* proper when q = p is the only
maximiser. Rewarding a policy with a strictly proper rule makes honest confidence the optimum.

- :func:`brier_reward`: RLCR (Damani et al., arXiv 2507.16806): ``1[correct] - (q - 1[correct])^2``.
  The correctness term keeps accuracy in the objective; the Brier term is strictly proper in q.
  Range [-1, 1]. At q = p the expected reward is p^2.
- :func:`log_score_reward`: logarithmic rule (Stangel et al., arXiv 2503.02623): ``log q`` if correct,
  ``log(1 - q)`` if wrong, with q clipped to [eps, 1 - eps] so the reward stays bounded.
  Range [log eps, 0]. Strictly proper on [eps, 1 - eps].
"""

from __future__ import annotations

import torch

__all__ = ["brier_reward", "expected_reward", "log_score_reward"]


def _as_float(x: torch.Tensor | float, like: torch.Tensor | None = None) -> torch.Tensor:
    """A floating tensor: Python numbers become float64, tensors keep a floating dtype (else float32)."""
    if not isinstance(x, torch.Tensor):
        return torch.as_tensor(x, dtype=torch.float64, device=None if like is None else like.device)
    return x if x.is_floating_point() else x.to(torch.float32)


def _check_confidence(q: torch.Tensor) -> None:
    if torch.isnan(q).any() or (q < 0).any() or (q > 1).any():
        raise ValueError("confidence must lie in [0, 1]")


def brier_reward(q: torch.Tensor | float, correct: torch.Tensor | bool) -> torch.Tensor:
    """RLCR reward ``1[correct] - (q - 1[correct])^2`` (elementwise).

    Args:
        q: stated confidence in [0, 1] (tensor or float).
        correct: whether the answer is correct (bool or 0/1 tensor, broadcastable with ``q``).
    """
    q = _as_float(q)
    _check_confidence(q)
    y = _as_float(correct, like=q).to(q.dtype)
    return y - (q - y) ** 2


def log_score_reward(q: torch.Tensor | float, correct: torch.Tensor | bool,
                     eps: float = 1e-3) -> torch.Tensor:
    """Logarithmic scoring rule ``log q`` if correct else ``log(1 - q)``, q clipped to [eps, 1 - eps].

    Args:
        q: stated confidence in [0, 1].
        correct: whether the answer is correct (bool or 0/1 tensor, broadcastable with ``q``).
        eps: clipping margin in (0, 0.5); the reward is bounded below by ``log(eps)``.
    """
    if not 0.0 < eps < 0.5:
        raise ValueError(f"eps must be in (0, 0.5), got {eps}")
    q = _as_float(q)
    _check_confidence(q)
    y = _as_float(correct, like=q).to(q.dtype)
    q = q.clamp(eps, 1.0 - eps)
    return y * torch.log(q) + (1.0 - y) * torch.log1p(-q)


def expected_reward(rule, q: torch.Tensor | float, p: torch.Tensor | float, **kwargs) -> torch.Tensor:
    """Expected reward of stating ``q`` when the answer is correct with probability ``p``."""
    q = _as_float(q)
    p = _as_float(p, like=q).to(q.dtype)
    return p * rule(q, torch.ones_like(q), **kwargs) + (1 - p) * rule(q, torch.zeros_like(q), **kwargs)
