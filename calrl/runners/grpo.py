"""GRPO runner (and, with another trainer class, RLOO's): scoring-rule rewards on the stated confidence."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

from datasets import Dataset

from calrl.callbacks.runs import guard_reward_funcs
from calrl.runners.models import initial_policy, peft_config
from calrl.runners.recipe import TINY, Recipe
from calrl.runners.runner import Runner, count
from calrl.tiny.models import save_pretrained

logger = logging.getLogger(__name__)
TINY_INIT_DIR = "tiny_init"


class PolicyGradientRunner(Runner):
    """Builds a GRPO-style trainer (``CalibratedGRPOTrainer`` or ``CalibratedRLOOTrainer``) from a recipe."""

    trainer_path = "calrl.trainers.grpo:CalibratedGRPOTrainer"

    def batch_sizes(self, args: Any, n: int) -> str:
        per, accum, group = args.per_device_train_batch_size, args.gradient_accumulation_steps, args.num_generations
        total = per * accum * n
        return (f"batch: {per} completions per device x {accum} accumulation x {count(n, 'process', 'processes')} = "
                f"{total} completions ({total // group} prompts x {group} generations) per optimiser step")

    def trainer_class(self) -> type:
        module, _, name = self.trainer_path.partition(":")
        return getattr(importlib.import_module(module), name)

    def build(self, callbacks: list[Any]) -> Any:
        recipe, args = self.recipe, self.recipe.training
        conversations, columns, factory = self.policy_inputs(
            [("reference", args.reference_column), ("choices", args.choices_column)])
        policy = initial_policy(factory, recipe, recipe.model.policy, conversations,
                                columns.get(args.reference_column), device=args.device)
        if recipe.model.policy == TINY and getattr(args, "beta", 0.0):
            # TRL builds the KL reference model from the policy's config path: give the tiny model one

            init_dir = Path(args.output_dir) / TINY_INIT_DIR
            save_pretrained(policy, self.tokenizer, init_dir)
            policy.config.name_or_path = str(init_dir)
        trainer = self.trainer_class()(
            model=policy, args=args, train_dataset=Dataset.from_dict(columns), processing_class=self.tokenizer,
            callbacks=callbacks, peft_config=peft_config(recipe, "CAUSAL_LM"), calibration_eval=self.eval_callback)
        guard_reward_funcs(trainer)
        return trainer


RUNNER = PolicyGradientRunner


def run(recipe: Recipe, callbacks: list[Any] | None = None) -> Any:
    return PolicyGradientRunner(recipe, callbacks).run()
