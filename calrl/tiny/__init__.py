"""Tiny local models for tests, examples and the offline demo (no hub access needed).

- :mod:`calrl.tiny.models`: a word-level tokenizer built from texts, tiny Llama causal LMs and reward
  models with random weights, and scripted LMs that emit fixed token chains;
- :mod:`calrl.tiny.warmup`: a short supervised fit of a tiny policy to the answer format, so that its
  rollouts state a confidence (the ``model.tiny.warmup_steps`` recipe key).

Recipes select them with ``model.policy: tiny`` (and ``reward_model`` / ``value_model``).
"""
