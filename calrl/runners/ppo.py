"""PPO runner: vanilla PPO, PPO-M, PPO-C (threshold / difference) and PPO-C with abstention, from one recipe.

Which variant runs is only a matter of recipe values: ``training.ppo_c_variant`` (none / threshold /
difference), ``model.reward_model`` (an ordinary or a calibrated reward model: PPO-M), and
``training.abstention_reward``. The trainer is :class:`calrl.trainers.ppo.CalibratedPPOTrainer`.
``model.value_model``: a path or ``tiny`` (default: the reward model, as in the reference), or ``head``
for a value head on the policy.
"""

from __future__ import annotations

import logging
from typing import Any

from datasets import Dataset

from calrl.runners.models import ModelFactory, initial_policy, peft_config
from calrl.runners.recipe import TINY, Recipe
from calrl.runners.runner import Runner, count
from calrl.trainers.ppo import CalibratedPPOTrainer

logger = logging.getLogger(__name__)
VALUE_HEAD = "head"


class PPORunner(Runner):
    """Builds :class:`~calrl.trainers.ppo.CalibratedPPOTrainer` from a recipe."""

    def batch_sizes(self, args: Any, n: int) -> str:
        per, accum = args.per_device_train_batch_size, args.gradient_accumulation_steps
        minis, epochs = args.num_mini_batches, args.num_ppo_epochs
        return (f"rollout: {per} prompts per device x {accum} accumulation x {count(n, 'process', 'processes')} = "
                f"{per * accum * n} prompts per PPO update; {count(minis, 'mini-batch', 'mini-batches')} x "
                f"{count(epochs, 'PPO epoch', 'PPO epochs')} = {count(minis * epochs, 'optimiser step', 'optimiser steps')}"
                " per update")

    def build(self, callbacks: list[Any]) -> Any:
        recipe, args, m = self.recipe, self.recipe.training, self.recipe.model
        conversations, columns, factory = self.policy_inputs([("reference", args.reference_column)])
        policy = initial_policy(factory, recipe, m.policy, conversations, columns.get(args.reference_column),
                                device=args.device)
        ref = None if recipe.lora is not None else self._reference(factory, policy)
        reward_model = factory.sequence_classifier(m.reward_model, seed_offset=2, trained=False)
        value_source = m.value_model or m.reward_model
        value_model = None if value_source == VALUE_HEAD else factory.sequence_classifier(value_source, seed_offset=1)
        reward_tokenizer = factory.tokenizer(m.reward_model)
        trainer = CalibratedPPOTrainer(
            args=args, processing_class=self.tokenizer, model=policy, ref_model=ref, reward_model=reward_model,
            train_dataset=Dataset.from_dict(columns), value_model=value_model,
            reward_tokenizer=None if reward_tokenizer is self.tokenizer else reward_tokenizer,
            value_tokenizer=None if value_model is None else factory.tokenizer(value_source),
            callbacks=[*callbacks, *([self.eval_callback] if self.eval_callback else [])],
            peft_config=peft_config(recipe, "CAUSAL_LM"))
        if self.eval_callback is not None:
            self.eval_callback.attach(trainer)
        return trainer


    def _reference(self, factory: ModelFactory, policy: Any) -> Any:
        """PPO's frozen reference: ``model.ref``; else the policy's own checkpoint loaded again in
        ``model.frozen_dtype`` when that differs from the trained weights' dtype; else ``None`` (a frozen copy)."""
        m = self.recipe.model
        if m.ref:
            return factory.causal_lm(m.ref, trained=False)
        if m.policy == TINY or m.frozen_dtype in ("auto", m.dtype) or self.recipe.model.tiny.warmup_steps > 0:
            return None
        return factory.causal_lm(m.policy, trained=False)


RUNNER = PPORunner


def run(recipe: Recipe, callbacks: list[Any] | None = None) -> Any:
    return PPORunner(recipe, callbacks).run()
