"""A tiny PPO trainer on four arithmetic questions (word tokenizer, tiny policy, reward and value models built
locally), with the batch layout the PPO mode tests share: 4 rows per update, 2 mini-batches, 2 PPO epochs."""

from __future__ import annotations

from datasets import Dataset

from calrl.tiny.models import build_tiny_causal_lm, build_tiny_reward_model, build_word_tokenizer
from calrl.trainers.ppo import CalibratedPPOConfig, CalibratedPPOTrainer

QUESTIONS = ["what is 2 + 2 ?", "what is 3 + 1 ?", "what is 1 + 4 ?", "what is 2 + 3 ?"]


def arithmetic_trainer(output_dir, trainer_cls=CalibratedPPOTrainer, **settings) -> CalibratedPPOTrainer:
    """``trainer_cls`` built on the four questions; ``settings`` (``max_steps``, ``learning_rate`` ...) are added
    to the shared layout and override it."""
    tok = build_word_tokenizer(QUESTIONS)
    config = {"output_dir": str(output_dir), "use_cpu": True, "report_to": "none", "seed": 0,
              "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1, "num_mini_batches": 2,
              "response_length": 6, "num_ppo_epochs": 2, "stop_token": "eos", "num_sample_generations": 0,
              "logging_steps": 1, "disable_tqdm": True, "save_strategy": "no", **settings}
    return trainer_cls(CalibratedPPOConfig(**config), tok, build_tiny_causal_lm(tok), None,
                       build_tiny_reward_model(tok, seed=2),
                       Dataset.from_dict({"prompt": [[{"role": "user", "content": q}] for q in QUESTIONS]}),
                       build_tiny_reward_model(tok, seed=1))
