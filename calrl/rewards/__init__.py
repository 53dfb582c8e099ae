"""Rewards: PPO-C adjustment, abstention, correctness, proper scoring rules, the reward pipeline."""
