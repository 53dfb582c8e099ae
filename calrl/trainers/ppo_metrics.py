"""The metrics of a PPO update, under TRL's names, and how a logging window of updates is summarised."""

from __future__ import annotations

import time
from typing import Any

import torch

from calrl.trainers.ppo_optim import pooled_moments
from calrl.trainers.ppo_rollout import Rollout

#: keys whose last value in a logging window is logged (the others are averaged over the window)
LAST_VALUE_KEYS = ("lr", "episode", "eps", "objective/kl_coef", "reward/moving_average")
#: the per-micro-batch statistics ``CalibratedPPOTrainer.optimize`` returns, in this order
STAT_NAMES = ("approxkl", "pg_clipfrac", "pg_loss", "vf_loss", "vf_clipfrac", "entropy", "ratio")
#: the per-optimiser-step statistics under ``max_step_kl`` (:class:`~calrl.trainers.ppo_optim.StepCheck`), after them
STEP_STAT_NAMES = ("step_kl", "step_kl_raw", "step_halvings")


class PPOMetricsMixin:
    """The metrics of one update of :class:`~calrl.trainers.ppo.CalibratedPPOTrainer` (:meth:`_update_metrics`).

    Expects on ``self``: ``args`` (its ``max_step_kl``), ``accelerator``, ``state`` (a ``TrainerState`` with
    ``episode``), ``eos_token_id``, ``kl_controller`` (its ``value``), ``lr_scheduler`` and ``reward_pipeline`` (its
    ``pop_stats``).
    """

    def _update_metrics(self, rollout: Rollout, stats: torch.Tensor, start_time: float) -> dict[str, float]:
        """One update's metrics, reduced over processes: TRL 1.12's keys, the KL coefficient, the pipeline's
        stats; ``val/explained_variance`` (the rollout's value predictions against its returns over the response
        tokens, pooled over processes: 1 - Var(returns - values) / Var(returns); 1 is a perfect critic, 0 or below
        one no better than a constant, so the advantages are mostly the critic's noise); under ``max_step_kl`` also
        ``policy/step_kl_avg`` (the steps kept), ``policy/step_kl_max`` (the largest step as the optimiser took it)
        and ``policy/step_halvings_avg`` (per step; ``step_backtracks + 1`` counts a step undone)."""
        acc = self.accelerator
        local = torch.stack([
            rollout.kl.sum(1).mean(), ((-rollout.logprobs) * (~rollout.padding)).sum(1).mean(),
            rollout.non_score_reward.sum(1).mean(), rollout.scores.mean()]).float()
        kl, entropy, non_score, scores = acc.reduce(local.to(acc.device), reduction="mean").tolist()
        gathered = acc.gather(stats.to(acc.device)).reshape(acc.num_processes, *stats.shape)
        per_stat = gathered.transpose(0, 1).reshape(len(STAT_NAMES) + len(STEP_STAT_NAMES), -1)
        eos = (rollout.responses == self.eos_token_id).sum().float()
        metrics: dict[str, Any] = {
            "eps": int(self.state.episode / max(time.time() - start_time, 1e-9)),
            "objective/kl": kl, "objective/entropy": entropy, "objective/non_score_reward": non_score,
            "objective/rlhf_reward": non_score + scores, "objective/scores": scores,
            "objective/kl_coef": self.kl_controller.value,
            "policy/approxkl_avg": float(per_stat[0].mean()), "policy/clipfrac_avg": float(per_stat[1].mean()),
            "loss/policy_avg": float(per_stat[2].mean()), "loss/value_avg": float(per_stat[3].mean()),
            "val/clipfrac_avg": float(per_stat[4].mean()), "policy/entropy_avg": float(per_stat[5].mean()),
            "val/ratio": float(per_stat[6].mean()),
            "val/ratio_var": float(per_stat[6].var()) if per_stat[6].numel() > 1 else 0.0,
            "val/num_eos_tokens": float(acc.reduce(eos.to(acc.device), reduction="sum")),
            "val/explained_variance": self._explained_variance(rollout),
            "lr": self.lr_scheduler.get_last_lr()[0], "episode": self.state.episode,
        }
        if self.args.max_step_kl is not None:
            step_kl, raw_kl, halvings = per_stat[len(STAT_NAMES):]
            metrics.update({"policy/step_kl_avg": float(step_kl.mean()), "policy/step_kl_max": float(raw_kl.max()),
                            "policy/step_halvings_avg": float(halvings.mean())})
        metrics.update(self.reward_pipeline.pop_stats())
        return metrics

    def _explained_variance(self, rollout: Rollout) -> float:
        """1 - Var(returns - values) / Var(returns) over the response tokens of every process (population
        variances; nan when the returns do not vary)."""
        moments = pooled_moments(self.accelerator, ~rollout.padding_p1, rollout.returns,
                                 rollout.returns - rollout.values)
        var_returns, var_errors = (squares / n - (total / n) ** 2 if n else 0.0 for total, squares, n in moments)
        if var_returns <= 0.0:
            return float("nan")
        return 1.0 - var_errors / var_returns


def window_summary(window: list[dict[str, float]]) -> dict[str, float]:
    """The log of a window of updates: the mean of each key, the last value of :data:`LAST_VALUE_KEYS`."""
    out: dict[str, float] = {}
    for key in dict.fromkeys(k for m in window for k in m):
        values = [m[key] for m in window if key in m]
        out[key] = values[-1] if key in LAST_VALUE_KEYS else sum(values) / len(values)
    return out
