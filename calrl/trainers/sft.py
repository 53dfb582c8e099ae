"""Supervised fine-tuning on trl 1.16's ``SFTTrainer``: what calrl's demo uses to teach the answer format.

calrl adds nothing to SFT; this module is where the demo (:mod:`calrl.demo.sft`) reaches TRL, so every TRL
import of calrl stays inside :mod:`calrl.trainers`.
"""

from __future__ import annotations

from typing import Any

from trl import SFTConfig, SFTTrainer

from calrl.errors import ConfigError
from calrl.trainers import check_trl_version

check_trl_version()

__all__ = ["SFTConfig", "SFTTrainer", "fit_sft"]


def fit_sft(model: Any, processing_class: Any, train_dataset: Any, args: SFTConfig) -> SFTTrainer:
    """Train ``model`` in place with TRL's ``SFTTrainer`` on ``train_dataset``; return the trainer.

    ``train_dataset`` is in a format SFTTrainer takes (e.g. conversational prompt-completion rows, where
    ``args.completion_only_loss`` puts the loss on the completion only).
    """
    if not isinstance(args, SFTConfig):
        raise ConfigError(f"must be a trl SFTConfig, got {type(args).__name__}", field="args")
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_dataset, processing_class=processing_class)
    trainer.train()
    return trainer
