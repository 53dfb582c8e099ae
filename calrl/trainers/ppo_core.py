"""The arithmetic of PPO for language models, as pure tensor functions (no model, no trainer).

Conventions (those of TRL 1.12's PPOTrainer and of "The N+ implementation details of RLHF with PPO",
which calrl's PPO reproduces; ``tests/test_ppo_parity.py`` checks them against numbers recorded from
trl 1.12.0):

- A rollout batch is ``B`` rows of ``R`` response tokens. ``sequence_lengths[b]`` is the index of the
  last real token of row ``b`` (its stop token when it has one), so ``padding_mask = idx > seq_len``
  marks the positions after the response. Values and rewards are defined one position further
  (``padding_mask_p1 = idx > seq_len + 1``), as in TRL.
- The per-token reward is ``-kl_coef * kl`` with the sequence score added at position
  ``seq_len + 1`` (or ``seq_len`` when that is the last column).
- Advantages come from GAE over the response positions, are whitened over the unmasked positions and
  zeroed at padding; returns are ``raw advantages + values``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from calrl.reward_modeling.sequence_scores import first_true_indices

#: The log-probability written at padding positions (they never enter a loss: every mean is masked).
INVALID_LOGPROB = 1.0
#: Where the sequence score goes (:func:`token_rewards`), how a loss averages (:func:`ppo_loss`).
SCORE_PLACEMENTS = ("after_eos", "last_token")
LOSS_AGGREGATIONS = ("token_mean", "sequence_mean")


def truncate_after_stop(responses: torch.Tensor, stop_token_id: int, pad_token_id: int) -> torch.Tensor:
    """Replace every token after the first ``stop_token_id`` of each row by ``pad_token_id`` (the stop stays)."""
    stop_at = first_true_indices(responses == stop_token_id).unsqueeze(-1)
    positions = torch.arange(responses.shape[-1], device=responses.device)
    return responses.masked_fill(positions > stop_at, pad_token_id)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is true."""
    return (values * mask).sum() / mask.sum()


def sequence_masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over each row's masked positions, then over the rows (a row with no position counts as 0).

    >>> sequence_masked_mean(torch.tensor([[1.0, 3.0, 9.0], [4.0, 0.0, 0.0]]),
    ...                      torch.tensor([[True, True, False], [True, False, False]])).item()
    3.0
    """
    per_row = (values * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    return per_row.mean()


def masked_var(values: torch.Tensor, mask: torch.Tensor, *, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``values`` where ``mask`` is true (Bessel-corrected by default)."""
    centred = values - masked_mean(values, mask)
    var = masked_mean(centred * centred, mask)
    if unbiased:
        n = mask.sum()
        if n < 2:
            raise ValueError("whitening needs at least two unmasked values: use a larger (mini-)batch")
        var = var * n / (n - 1)
    return var


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, *, shift_mean: bool = True) -> torch.Tensor:
    """``(values - mean) / sqrt(var + 1e-8)`` over the masked positions; ``shift_mean=False`` keeps the mean."""
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    out = (values - mean) * torch.rsqrt(var + 1e-8)
    return out if shift_mean else out + mean


@dataclass
class ResponseMasks:
    """Masks of a rollout batch (``True`` = padding)."""

    sequence_lengths: torch.Tensor  # index of the last real response token
    padding: torch.Tensor  # B x R: positions after the last real token
    padding_p1: torch.Tensor  # B x R: positions more than one after it (values, rewards)


def response_masks(postprocessed: torch.Tensor, pad_token_id: int) -> ResponseMasks:
    """The masks of responses truncated after their stop token (padding = ``pad_token_id``)."""
    seq_len = first_true_indices(postprocessed == pad_token_id) - 1
    idx = torch.arange(postprocessed.shape[1], device=postprocessed.device).expand_as(postprocessed)
    return ResponseMasks(seq_len, idx > seq_len.unsqueeze(1), idx > (seq_len + 1).unsqueeze(1))


def per_token_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token KL(policy || reference) estimate: ``k1 = logp - ref_logp``; ``k3 = (r - 1) - log r``."""
    log_ratio = ref_logprobs - logprobs
    if estimator == "k1":
        return -log_ratio
    if estimator == "k3":
        return torch.expm1(log_ratio) - log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r} (k1 or k3)")


def token_rewards(scores: torch.Tensor, kl: torch.Tensor, masks: ResponseMasks, kl_coef: float, *,
                  whiten: bool = False, placement: str = "after_eos") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: the KL penalty everywhere and the score at one position.

    ``placement``: ``"after_eos"`` (trl 1.12) puts the score one position after the last token (on the last one when
    that is the last column); ``"last_token"`` (the reference, OpenRLHF) on the last token itself.
    Returns ``(rewards, non_score_reward)``. With ``whiten`` the rewards are scaled to unit variance over the
    value positions (mean kept) and zeroed beyond them.

    >>> masks = response_masks(torch.tensor([[5, 2, 0, 0]]), pad_token_id=0)  # two tokens, the stop token last
    >>> kl = torch.tensor([[0.5, 1.0, 0.0, 0.0]])
    >>> def show(t): return [round(v, 4) + 0.0 for v in t.flatten().tolist()]
    >>> show(token_rewards(torch.tensor([1.0]), kl, masks, 0.1)[0])
    [-0.05, -0.1, 1.0, 0.0]
    >>> show(token_rewards(torch.tensor([1.0]), kl, masks, 0.1, placement="last_token")[0])
    [-0.05, 0.9, 0.0, 0.0]
    """
    if placement not in SCORE_PLACEMENTS:
        raise ValueError(f"unknown score placement {placement!r} ({' or '.join(SCORE_PLACEMENTS)})")
    non_score = -kl_coef * kl
    rewards = non_score.clone()
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    after_last = masks.sequence_lengths + (1 if placement == "after_eos" else 0)
    at = torch.where(after_last < rewards.shape[1], after_last, masks.sequence_lengths)
    rewards[rows, at] += scores.to(rewards.dtype)
    if whiten:
        rewards = masked_whiten(rewards, ~masks.padding_p1, shift_mean=False)
        rewards = rewards.masked_fill(masks.padding_p1, 0.0)
    return rewards, non_score


def generalized_advantages(rewards: torch.Tensor, values: torch.Tensor, gamma: float,
                           lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE over the response positions. Returns ``(advantages, returns)`` with ``returns = advantages + values``.

    The advantages returned are raw (not whitened); see :func:`whitened_advantages`.
    """
    width = rewards.shape[1]
    last = torch.zeros_like(rewards[:, 0])
    out = torch.empty_like(rewards)
    for t in range(width - 1, -1, -1):
        next_value = values[:, t + 1] if t < width - 1 else 0.0
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last
        out[:, t] = last
    return out, out + values


def whitened_advantages(advantages: torch.Tensor, padding: torch.Tensor,
                        moments: tuple[float, float, float] | None = None) -> torch.Tensor:
    """Advantages whitened over the response tokens and zero at padding (what the policy loss uses).

    ``moments``: ``(sum, sum of squares, count)`` of the unmasked advantages summed over every process, whitened as
    the reference whitens its whole replay buffer (OpenRLHF ``replay_buffer.py`` ``normalize``: the population
    variance, ``rsqrt(max(var, 1e-8))``); ``None``: this batch's own, as trl 1.12 (unbiased variance, ``+ 1e-8``).

    >>> adv, pad = torch.tensor([[1.0, 3.0]]), torch.tensor([[False, False]])
    >>> def show(t): return [round(v, 4) + 0.0 for v in t.flatten().tolist()]
    >>> show(whitened_advantages(adv, pad))  # mean 2, unbiased variance 2
    [-0.7071, 0.7071]
    >>> moments = (4.0, 10.0, 4)  # two more zeros on another process: mean 1, population variance 1.5
    >>> show(whitened_advantages(adv, pad, moments=moments))
    [0.0, 1.633]
    """
    if moments is None:
        return masked_whiten(advantages, ~padding).masked_fill(padding, 0.0)
    total, squares, count = moments
    if count < 1:
        raise ValueError("whitening needs at least one unmasked value")
    mean = total / count
    var = max(squares / count - mean * mean, 1e-8)
    return ((advantages - mean) * var ** -0.5).masked_fill(padding, 0.0)


@dataclass
class PPOLoss:
    """The losses of one micro-batch and their diagnostics (scalars, detached except ``loss``)."""

    loss: torch.Tensor
    pg_loss: torch.Tensor
    vf_loss: torch.Tensor
    pg_clipfrac: torch.Tensor
    vf_clipfrac: torch.Tensor
    approxkl: torch.Tensor
    ratio_mean: torch.Tensor


def ppo_loss(new_logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
             vpred: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, padding: torch.Tensor,
             padding_p1: torch.Tensor, *, cliprange: float, cliprange_value: float, vf_coef: float,
             aggregation: str = "token_mean") -> PPOLoss:
    """Clipped policy loss plus ``vf_coef`` times the clipped value loss of one micro-batch.

    ``aggregation``: ``"token_mean"`` (trl 1.12) averages both losses over every unmasked token of the micro-batch;
    ``"sequence_mean"`` (the reference, OpenRLHF's ``masked_mean(loss, mask, dim=-1).mean()``) over each sequence's
    tokens, then over the sequences, so a long response weighs as much as a short one.

    ``new_logprobs`` and ``vpred`` are the raw outputs of the training forward; they are masked here
    (``INVALID_LOGPROB`` at padding, values 0 beyond ``padding_p1``) exactly as the rollout tensors were.
    """
    new_logprobs = new_logprobs.masked_fill(padding, INVALID_LOGPROB)
    vpred = vpred.masked_fill(padding_p1, 0.0)
    value_mask, token_mask = ~padding_p1, ~padding

    vpred_clipped = torch.clamp(vpred, old_values - cliprange_value, old_values + cliprange_value)
    vf_unclipped = (vpred - returns) ** 2
    vf_clipped = (vpred_clipped - returns) ** 2
    if aggregation not in LOSS_AGGREGATIONS:
        raise ValueError(f"unknown loss aggregation {aggregation!r} ({' or '.join(LOSS_AGGREGATIONS)})")
    mean = masked_mean if aggregation == "token_mean" else sequence_masked_mean
    vf_loss = 0.5 * mean(torch.max(vf_unclipped, vf_clipped), value_mask)

    log_ratio = new_logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    pg_unclipped = -advantages * ratio
    pg_clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    pg_loss = mean(torch.max(pg_unclipped, pg_clipped), token_mask)
    with torch.no_grad():
        pg_clipfrac = masked_mean((pg_clipped > pg_unclipped).float(), token_mask)
        vf_clipfrac = masked_mean((vf_clipped > vf_unclipped).float(), value_mask)
        approxkl = 0.5 * (log_ratio**2).mean()
        ratio_mean = ratio.mean()
    return PPOLoss(loss=pg_loss + vf_coef * vf_loss, pg_loss=pg_loss.detach(), vf_loss=vf_loss.detach(),
                   pg_clipfrac=pg_clipfrac, vf_clipfrac=vf_clipfrac, approxkl=approxkl, ratio_mean=ratio_mean)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution of each position (``logsumexp - sum p * logit``)."""
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(-1)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``log_softmax(logits)`` at ``tokens`` in float32 (or float64), whatever the logits' precision (row by row, so a
    large vocabulary is never held twice)."""
    if logits.dtype in (torch.float32, torch.float64):
        picked = torch.gather(logits, -1, tokens.unsqueeze(-1)).squeeze(-1)
        return picked - torch.logsumexp(logits, dim=-1)
    out = [torch.gather(torch.log_softmax(row.float(), -1), -1, tok.unsqueeze(-1)).squeeze(-1)
           for row, tok in zip(logits, tokens)]  # low precision: log_softmax in float32, one row at a time
    return torch.stack(out)  # kept in float32: a bf16 log-probability is off by up to 0.04 nats


class KLController:
    """The KL coefficient: fixed, or adaptive (Ziegler et al. 2019) towards ``target`` KL per rollout.

    Adaptive update after each rollout batch of ``n_steps`` episodes with measured ``kl``:
    ``error = clip(kl / target - 1, -0.2, 0.2); coef *= 1 + error * n_steps / horizon``.
    """

    def __init__(self, init: float, *, target: float | None = None, horizon: int = 10000) -> None:
        self.value = float(init)
        self.target = target
        self.horizon = horizon

    @property
    def adaptive(self) -> bool:
        return self.target is not None

    def update(self, kl: float, n_steps: int) -> None:
        if self.target is None or not math.isfinite(kl):
            return
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])
