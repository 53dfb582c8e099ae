"""RLOO runner: the GRPO runner with ``CalibratedRLOOTrainer`` (leave-one-out baseline, no per-group std)."""

from __future__ import annotations

from calrl.train.common import RunResult
from calrl.train.grpo import run_policy_gradient
from calrl.train.recipe import Recipe


def run(recipe: Recipe) -> RunResult:
    from calrl.trainers.rloo import CalibratedRLOOTrainer

    return run_policy_gradient(recipe, CalibratedRLOOTrainer)
