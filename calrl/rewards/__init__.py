"""Rewards: PPO-C adjustment, abstention, correctness, proper scoring rules, the reward pipeline.

One registry of reward terms (:mod:`calrl.rewards.terms`: rm, correctness, clamp, ppo_c, missing_penalty,
abstention, brier, log_score, format) serves two layers: the PPO reward pipeline (``RewardPipeline``: the terms
applied in order to each rollout's running score) and TRL reward functions for GRPO/RLOO (``build_reward_funcs``:
each term with a value per completion, weighted), both built on the same confidence parsing and grading.
"""

from calrl.rewards.abstention import AbstentionReward, abstention_threshold
from calrl.rewards.correctness import CorrectnessReward
from calrl.rewards.pipeline import RewardPipeline, RewardPipelineConfig
from calrl.rewards.ppo_c import PPOCAdjuster, PPOCConfig, ppo_c_adjustment
from calrl.rewards.reward_funcs import RewardFuncsConfig, build_reward_funcs
from calrl.rewards.scoring_rules import brier_reward, log_score_reward

__all__ = [
    "AbstentionReward", "CorrectnessReward", "PPOCAdjuster", "PPOCConfig", "RewardFuncsConfig",
    "RewardPipeline", "RewardPipelineConfig", "abstention_threshold", "brier_reward",
    "build_reward_funcs", "log_score_reward", "ppo_c_adjustment",
]
