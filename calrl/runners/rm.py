"""Reward-model runner: the ordinary (``calibration_lambda: 0``) or the calibrated (PPO-M) reward model.

Trains :class:`calrl.trainers.reward.CalibratedRewardTrainer` on preference pairs, runs the confidence-bias
probe on held-out pairs at every epoch (``RewardModelProbeCallback``), and writes the reward-model report
(``reward_model_report.json`` / ``.md``) and a model card beside the saved model, with the RM's mean and std
over the responses of ``training.reward_stats_split`` (``reward_stats.json`` and ``config.json``,
:mod:`calrl.reward_modeling.stats`). The per-epoch
``CalibrationEvalCallback`` of the policy recipes is not attached: a reward model does not generate, and
its calibration check is the probe.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from datasets import Dataset

from calrl.errors import ConfigError
from calrl.reward_modeling import (
    RewardModelProbeCallback,
    log_reward_model_report,
    reward_model_report,
    write_reward_model_report,
)
from calrl.reward_modeling.probe import report_scalars
from calrl.reward_modeling.stats import (
    dataset_reward_statistics,
    training_reward_statistics,
    write_reward_statistics,
)
from calrl.reward_modeling.tokenization import CALIBRATED_ID_COLUMNS, PREFERENCE_ID_COLUMNS
from calrl.runners.data import confidence_instruction, prompt_texts, with_confidence_prompts
from calrl.runners.models import ModelFactory, peft_config
from calrl.runners.recipe import Recipe
from calrl.runners.runner import Runner
from calrl.trainers.reward import CalibratedRewardTrainer

logger = logging.getLogger(__name__)
PROBE_DIR = "rm_probe"


def as_assistant(response: Any) -> list[dict[str, Any]]:
    """A response as a conversation: a string becomes one assistant message."""
    if isinstance(response, str):
        return [{"role": "assistant", "content": response}]
    return response


def preference_dataset(rows: Any, recipe: Recipe, conversational: bool) -> Any:
    """Pairs with the confidence system prompt on a share of prompts; conversational when the tokenizer chats."""
    columns: dict[str, Any] = {}
    if conversational:
        if "prompt" in rows.column_names:
            columns["prompt"], _ = with_confidence_prompts(
                list(rows["prompt"]), recipe.data.confidence_prompt_fraction, confidence_instruction(recipe),
                recipe.data.seed)
        columns["chosen"] = [as_assistant(r) for r in rows["chosen"]]
        columns["rejected"] = [as_assistant(r) for r in rows["rejected"]]
    else:
        for name in rows.column_names:
            columns[name] = list(rows[name])
    return Dataset.from_dict(columns)


class RewardModelRunner(Runner):
    """Builds :class:`~calrl.trainers.reward.CalibratedRewardTrainer` and writes the reward-model report."""

    uses_heldout = False

    def build(self, callbacks: list[Any]) -> Any:
        recipe, args, m = self.recipe, self.recipe.training, self.recipe.model
        vocabulary = [*prompt_texts(self.data.train, ("prompt", "chosen", "rejected")), confidence_instruction(recipe)]
        factory = ModelFactory(recipe, vocabulary)
        self.tokenizer = factory.tokenizer(m.reward_model)
        conversational = bool(getattr(self.tokenizer, "chat_template", None))
        train_pairs = self.train_pairs = preference_dataset(self.data.train, recipe, conversational)
        eval_pairs = preference_dataset(self.data.eval, recipe, conversational) if self.data.eval is not None else None
        self.probe_pairs = eval_pairs if eval_pairs is not None else train_pairs
        self.held_out = eval_pairs is not None
        if eval_pairs is None:
            logger.warning("no held-out pairs (data.eval_split / data.eval_fraction): the probe reads training pairs")
        probe = RewardModelProbeCallback(self.probe_pairs, config=args.pairs_config(),
                                         batch_size=recipe.eval.probe_batch_size, out_dir=Path(args.output_dir) / PROBE_DIR)
        trainer = CalibratedRewardTrainer(
            model=factory.sequence_classifier(m.reward_model), args=args, train_dataset=train_pairs,
            eval_dataset=eval_pairs, processing_class=self.tokenizer, callbacks=[probe, *callbacks],
            peft_config=peft_config(recipe, "SEQ_CLS"))
        if args.reward_stats_split == "eval" and len(trainer.eval_dataset) == 0:  # before training, not after
            raise ConfigError(f"key 'training.reward_stats_split': the eval split has no pair left to score (pairs "
                              f"longer than max_length {args.max_length} are dropped; long_pairs: truncate keeps "
                              "them)",
                              path=recipe.path, line=recipe.line_of("training", "reward_stats_split"))
        return trainer

    def final_metrics(self, trainer: Any, out_dir: Path) -> dict[str, Any]:
        shown = trainer.accelerator.is_main_process and not self.recipe.training.disable_tqdm
        report = reward_model_report(trainer.model, self.tokenizer, self.probe_pairs,
                                     batch_size=self.recipe.eval.probe_batch_size,
                                     config=self.recipe.training.pairs_config(), show_progress=shown)
        report.update(global_step=trainer.state.global_step, held_out=self.held_out)
        self.scalars = report_scalars(report, prefix="")
        self.reward_stats = self.reward_statistics(trainer, shown)
        if trainer.accelerator.is_main_process:
            write_reward_statistics(self.reward_stats, out_dir)
            write_reward_model_report(report, out_dir)
            import wandb  # 0.5 s: only the main process imports it (it alone logs)

            if wandb.run is not None:
                log_reward_model_report(report, wandb.run, step_metrics={"train/global_step": trainer.state.global_step})
        return self.scalars

    def reward_statistics(self, trainer: Any, shown: bool = False) -> dict[str, float]:
        """The RM's mean/std over the responses ``training.reward_stats_split`` names (:mod:`..stats`)."""
        batch_size = self.recipe.eval.probe_batch_size
        if self.recipe.training.reward_stats_split == "train":
            return training_reward_statistics(trainer.model, self.tokenizer, self.train_pairs, batch_size=batch_size,
                                              show_progress=shown, tokenized=trainer.train_dataset,
                                              max_length=self.recipe.training.max_length)
        # the reference's: every sequence its evaluation scores, as the trainer reads it (load_recipe has checked
        # that there is an eval split)
        dataset = trainer.eval_dataset
        columns = [c for c in (*PREFERENCE_ID_COLUMNS, *CALIBRATED_ID_COLUMNS) if c in dataset.column_names]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        return dataset_reward_statistics(trainer.model, dataset, columns, pad, batch_size=batch_size,
                                         show_progress=shown)

    def card_sections(self, trainer: Any) -> dict[str, dict[str, Any]]:
        title = "Reward-model report (held-out pairs)" if self.held_out else "Reward-model report (training pairs)"
        stats = {f"reward {k}": v for k, v in self.reward_stats.items()}
        split = {"train": "training", "eval": "eval"}[self.recipe.training.reward_stats_split]
        return {title: self.scalars,
                f"Reward statistics ({split} responses; normalize_reward and the PPO-C average)": stats}


RUNNER = RewardModelRunner


def run(recipe: Recipe, callbacks: list[Any] | None = None) -> Any:
    return RewardModelRunner(recipe, callbacks).run()
