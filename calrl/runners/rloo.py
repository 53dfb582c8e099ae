"""RLOO runner: the GRPO runner with ``CalibratedRLOOTrainer`` (leave-one-out baseline, no per-group std)."""

from __future__ import annotations

from typing import Any

from calrl.runners.grpo import PolicyGradientRunner
from calrl.runners.recipe import Recipe


class RLOORunner(PolicyGradientRunner):
    trainer_path = "calrl.trainers.rloo:CalibratedRLOOTrainer"


RUNNER = RLOORunner


def run(recipe: Recipe, callbacks: list[Any] | None = None) -> Any:
    return RLOORunner(recipe, callbacks).run()
