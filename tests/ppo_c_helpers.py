"""PPO-C as a recipe runs it: the terms clamp -> ppo_c -> clamp applied to rewards and confidences given directly."""

from __future__ import annotations

import torch

from calrl.rewards.terms import RolloutBatch, build_reward_terms


class Chain:
    """``Chain(variant=..., clamp=10.0, final_clamp=True, **ppo_c options)(rewards, confidence)`` ->
    ``(final, adjustment)``, keeping the moving average over calls like the pipeline does."""

    def __init__(self, *, clamp: float = 10.0, final_clamp: bool = True, **ppo_c) -> None:
        ppo_c.setdefault("init_average", "first_batch")
        if ppo_c["init_average"] is None:
            ppo_c["init_average"] = "first_batch"
        specs = [{"name": "clamp", "value": clamp}, {"name": "ppo_c", **ppo_c}]
        self.terms = build_reward_terms(specs + ([{"name": "clamp", "value": clamp}] if final_clamp else []))

    @property
    def adjuster(self):
        return self.terms[1].adjuster

    @property
    def average(self):
        return self.adjuster.average

    def state_dict(self):
        return self.terms[1].state_dict()

    def load_state_dict(self, state):
        self.terms[1].load_state_dict(state)

    def __call__(self, rewards: torch.Tensor, confidence: torch.Tensor, *, update: bool = True):
        n = rewards.numel()
        batch = RolloutBatch(prompts=[""] * n, responses=[""] * n, references=None, confidence=confidence.float(),
                             stripped=[""] * n, abstained=torch.zeros(n, dtype=torch.bool), missing_policy="half",
                             update=update, rm_fn=None, all_sum=lambda v: v, check_finite=lambda v, what: None)
        score = rewards
        for term in self.terms:
            score = term.apply(batch, score)
        return score, batch.adjustment
