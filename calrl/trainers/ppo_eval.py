"""Evaluation of :class:`~calrl.trainers.ppo.CalibratedPPOTrainer`: scored greedy completions of eval prompts
(:class:`PPOEvalMixin`).

Greedy decoding consumes no random numbers, so an evaluation between updates never changes the training run.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from calrl.generation.sharding import generation_model
from calrl.trainers.ppo_core import truncate_after_stop
from calrl.trainers.ppo_rollout import PromptRows, left_pad, recipe_generation

logger = logging.getLogger(__name__)


class PPOEvalMixin:
    """Greedy completions of eval prompts, scored by the reward pipeline without moving its state
    (:meth:`_evaluate_prompts`), and a table of sample completions (:meth:`_log_sample_table`).

    Expects on ``self`` (what :class:`~calrl.trainers.ppo.CalibratedPPOTrainer` provides): ``accelerator``,
    ``args`` (``per_device_eval_batch_size``, ``ds3_gather_for_generation``), ``model`` (the policy-and-value
    wrapper), ``state`` (``global_step``), ``pad_token_id``, ``stop_token_id``, ``greedy_generation_config``,
    ``reward_pipeline`` (its ``score_rollouts``), ``processing_class``, ``eval_prompts`` (a ``PromptRows``) and
    ``compiled_forwards`` (:class:`~calrl.trainers.ppo_compile.CompiledForwards`: generation's compiled forward).
    """

    @torch.no_grad()
    def _greedy_completions(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(queries, truncated responses)`` of greedy generation for prompt token rows."""
        pad, acc = self.pad_token_id, self.accelerator
        queries = left_pad(rows, pad, acc.device)
        config = self.greedy_generation_config
        with generation_model(self.model, acc, gather=self.args.ds3_gather_for_generation,
                              select=lambda m: m.policy) as policy, self.compiled_forwards.generating(policy), \
                recipe_generation(policy, config) as model, acc.autocast():
            mask = queries != pad
            out = model.generate(input_ids=queries.masked_fill(~mask, 0), attention_mask=mask.long(),
                                 generation_config=config)
        responses = out[:, queries.shape[1]:]
        if self.stop_token_id is not None:
            responses = truncate_after_stop(responses, self.stop_token_id, pad)
        return queries, responses

    def _evaluate_prompts(self, prompts: PromptRows, prefix: str) -> dict[str, float]:
        """Mean reward-pipeline score (and pipeline statistics) of greedy completions over this process's share."""
        acc = self.accelerator
        rank, world = acc.process_index, acc.num_processes
        share = list(range(rank, len(prompts), world))
        batch = self.args.per_device_eval_batch_size
        totals: dict[str, float] = {}
        n_local = 0
        for start in range(0, len(share), batch):
            idx = share[start:start + batch]
            queries, responses = self._greedy_completions([prompts.input_ids[i] for i in idx])
            refs = None if prompts.references is None else [prompts.references[i] for i in idx]
            scores, stats = self.reward_pipeline.score_rollouts(
                torch.cat([queries, responses], 1), queries.shape[1], self.pad_token_id, refs,
                step=self.state.global_step, update=False)
            stats = {**stats, "objective/scores": float(scores.float().mean())}
            for key, value in stats.items():
                totals[key] = totals.get(key, 0.0) + float(value) * len(idx)
            n_local += len(idx)
        keys = sorted(totals)
        local = torch.tensor([totals[k] for k in keys] + [float(n_local)], dtype=torch.float64)
        summed = acc.reduce(local.to(acc.device), reduction="sum").cpu() if world > 1 else local
        n = float(summed[-1])
        return {f"{prefix}_{k}": float(summed[i]) / n for i, k in enumerate(keys)} if n else {}

    def _log_sample_table(self, n_rows: int = 8) -> None:
        """A table of greedy completions of the first eval prompts with their scores (W&B when a run is active)."""
        prompts = self.eval_prompts
        rows = prompts.input_ids[:n_rows]
        queries, responses = self._greedy_completions(rows)
        refs = None if prompts.references is None else prompts.references[:n_rows]
        scores, _ = self.reward_pipeline.score_rollouts(
            torch.cat([queries, responses], 1), queries.shape[1], self.pad_token_id, refs,
            step=self.state.global_step, update=False)
        if not self.accelerator.is_main_process:
            return
        tok = self.processing_class
        table = [[self.state.global_step, tok.decode(rows[i], skip_special_tokens=True),
                  tok.decode(responses[i], skip_special_tokens=True), float(scores[i])] for i in range(len(rows))]
        _emit(table)


def _emit(table: list[list[Any]]) -> None:
    try:
        # imported here: 0.4-1.0 s to import (measured after importing ppo), paid only when a table is logged
        import wandb
    except ImportError:  # wandb is a dependency, but a stripped environment should still train
        wandb = None
    if wandb is not None and wandb.run is not None:
        wandb.run.log({"samples/completions": wandb.Table(columns=["step", "prompt", "completion", "score"],
                                                          data=table)})
    for step, prompt, completion, score in table:
        logger.info("step %d | %s -> %s | score %.4f", step, prompt[-80:], completion[:80], score)
