"""The calibrated reward-model trainer of PPO-M: trl 1.16's ``RewardTrainer`` plus two calibration terms.

Loss = BT(chosen, rejected) + lambda * [BT(cwh, cwl) + BT(rwl, rwh)],
BT(a, b) = -log sigmoid(r(a) - r(b) - margin)   (methods.md section 2).

The ordinary term is TRL's own ``RewardTrainer.compute_loss`` (margin column and
``center_rewards_coefficient`` included); ``calibration_lambda = 0`` is the ordinary reward model.
Only TRL's public API is used:

- calrl tokenizes the datasets before handing them to TRL
  (:func:`calrl.reward_modeling.tokenization.tokenize_preference_pairs`: ``chosen_ids``/``rejected_ids``,
  tokenized as TRL does, which TRL then takes as already processed, and the four calibrated id columns),
  and keeps only the columns it reads, so the config turns ``remove_unused_columns`` off and TRL's column
  filtering cannot drop the calibration columns;
- the data collator passed to the constructor (:class:`CalibratedPreferenceCollator`, TRL's public
  ``DataCollatorForPreference`` plus the calibration batch);
- ``compute_loss`` (pops the calibration batch, calls TRL for the ordinary term) and ``log`` (merges the
  calibration metrics, kept in this trainer's own ``calibration_metrics``, into TRL's log);
- ``evaluate`` (tokenizes a dataset passed to it the same way).
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from datasets import Dataset, IterableDataset
from transformers import AutoTokenizer, PreTrainedTokenizerBase
from trl import RewardConfig, RewardTrainer
from trl.trainer.reward_trainer import DataCollatorForPreference

from calrl.errors import ConfigError
from calrl.reward_modeling.calibrated_data import SCALES, CalibratedPairsConfig
from calrl.reward_modeling.losses import LOSSES, calibrated_rm_loss, calibration_loss
from calrl.reward_modeling.stats import STATS_SPLITS
from calrl.reward_modeling.tokenization import (
    CALIBRATED_ID_COLUMNS,
    LONG_PAIRS,
    pad_right,
    tokenize_preference_pairs,
)
from calrl.trainers import check_trl_version
from calrl.trainers.validation import REWARD_MODEL_RULES, TRAINING_RULES, check_numbers

check_trl_version()

MODEL_TAGS = ["calrl", "calibrated-reward"]


@dataclass
class CalibratedRewardConfig(RewardConfig):
    """``trl.RewardConfig`` plus the calibrated loss and the calibrated-pairs settings.

    calibration_lambda: weight of the two calibration terms (0 = ordinary reward model).
    calibration_margin: margin inside the calibration BT terms.
    confidence_high_range / confidence_low_range: stated-confidence ranges on the 0-10 scale.
    confidence_pairing: how the high and low values are drawn (``CalibratedPairsConfig.pairing``).
    confidence_scale: "0-10", "percent" or "unit" (phrasing of calrl.confidence.format_confidence).
    confidence_seed: seed of the confidence sampling (defaults to ``seed``).
    confidence_template: where the statement goes after the response.
    reward_stats_split: whose responses give the reward mean/std the RM runner stores ("train" or "eval").
    long_pairs: what happens to a pair with a sequence longer than ``max_length`` ("drop" or "truncate").
    remove_unused_columns: must stay False: calrl keeps only the columns the trainer reads when it tokenizes
    the datasets, and TRL's column filtering would drop the calibration columns.
    """

    calibration_lambda: float = field(default=1.0, metadata={"help": "Weight of the calibration terms; 0 = ordinary RM."})
    calibration_loss: str = field(
        default="combined", metadata={"help": "'combined' (BT(chosen, rejected) + lambda * calibration terms) or "
                                              "'calibration_only' (the published script: fine-tune a trained RM "
                                              "with the two calibration terms only)."})
    confidence_system_prompt: str | None = field(
        default=None, metadata={"help": "System prompt put before the four calibrated texts (the reference puts "
                                        "its elicitation prompt there); None: none."})
    strip_existing_confidence: bool = field(
        default=True, metadata={"help": "Remove a confidence the response already states before appending one "
                                        "(the reference keeps it)."})
    calibration_margin: float = field(default=0.0, metadata={"help": "Margin inside the calibration BT terms."})
    confidence_high_range: list[float] = field(default_factory=lambda: [7.0, 10.0],
                                               metadata={"help": "High stated-confidence range, 0-10 scale."})
    confidence_low_range: list[float] = field(default_factory=lambda: [0.0, 3.0],
                                              metadata={"help": "Low stated-confidence range, 0-10 scale."})
    confidence_pairing: str = field(
        default="ranges", metadata={"help": "'ranges' (the reference: high text from the high range, low text from "
                                            "the low range) or 'ordered' (two different values from the whole span, "
                                            "the higher one high: the calibration terms order every pair)."})
    confidence_scale: str = field(default="0-10", metadata={"help": f"One of {list(SCALES)}."})
    confidence_seed: int | None = field(default=None, metadata={"help": "Seed of the sampling (default: seed)."})
    confidence_template: str = field(default="\n{confidence}", metadata={"help": "Statement placement."})
    reward_stats_split: str = field(
        default="train", metadata={"help": "Responses whose scores give the reward mean/std stored with the RM: "
                                           "'train' (every chosen and rejected training response) or 'eval' (the "
                                           "reference: every response the evaluation scores, the four calibrated "
                                           "texts included)."})
    long_pairs: str = field(
        default="drop", metadata={"help": "A pair with a sequence longer than max_length: 'drop' it (TRL) or "
                                          "'truncate' the sequence to its last max_length tokens (the reference)."})
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Must be False: calrl drops the unused columns itself when it tokenizes the pairs."},
    )

    def __post_init__(self) -> None:
        check_numbers(self, TRAINING_RULES, REWARD_MODEL_RULES)
        super().__post_init__()
        if not isinstance(self.calibration_lambda, (int, float)) or self.calibration_lambda < 0:
            raise ConfigError(f"must be a number >= 0, got {self.calibration_lambda!r}", field="calibration_lambda")
        if self.calibration_loss not in LOSSES:
            raise ConfigError(f"must be one of {', '.join(LOSSES)}, got {self.calibration_loss!r}",
                              field="calibration_loss")
        if self.calibration_loss == "calibration_only" and self.calibration_lambda == 0:
            raise ConfigError("calibration_only with calibration_lambda 0 trains nothing", field="calibration_lambda")
        for name, allowed in (("reward_stats_split", STATS_SPLITS), ("long_pairs", LONG_PAIRS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"must be one of {', '.join(allowed)}, got {getattr(self, name)!r}", field=name)
        if self.remove_unused_columns:
            raise ConfigError("must be false: calrl drops the unused columns itself when it tokenizes the pairs, "
                              "and TRL's column filtering would drop the calibration columns",
                              field="remove_unused_columns")
        self.pairs_config()  # validates the confidence fields

    def pairs_config(self) -> CalibratedPairsConfig:
        """The :class:`CalibratedPairsConfig` these fields describe."""
        return CalibratedPairsConfig(
            high_range=tuple(self.confidence_high_range),
            low_range=tuple(self.confidence_low_range),
            scale=self.confidence_scale,
            seed=self.seed if self.confidence_seed is None else self.confidence_seed,
            template=self.confidence_template,
            strip_existing=self.strip_existing_confidence,
            system_prompt=self.confidence_system_prompt,
            pairing=self.confidence_pairing,
        )


@dataclass
class CalibratedPreferenceCollator(DataCollatorForPreference):
    """TRL's preference collator, plus the four calibration texts when the examples carry them.

    Adds ``calibration_input_ids`` / ``calibration_attention_mask``: chosen-high, chosen-low,
    rejected-high, rejected-low blocks of batch size each, right-padded like TRL's batch.
    """

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        output = super().torch_call(examples)
        if CALIBRATED_ID_COLUMNS[0] not in examples[0]:
            return output
        ids = [torch.tensor(ex[col]) for col in CALIBRATED_ID_COLUMNS for ex in examples]
        output["calibration_input_ids"] = pad_right(ids, self.pad_token_id, pad_to_multiple_of=self.pad_to_multiple_of)
        output["calibration_attention_mask"] = pad_right([torch.ones_like(t) for t in ids], 0,
                                                         pad_to_multiple_of=self.pad_to_multiple_of)
        return output


def load_tokenizer(model: Any, args: CalibratedRewardConfig) -> PreTrainedTokenizerBase:
    """The tokenizer of ``model`` (a model id or path, or a model with ``name_or_path``), as TRL would load it."""
    if isinstance(model, str):
        init_kwargs = args.model_init_kwargs if isinstance(args.model_init_kwargs, dict) else {}
        name, revision = model, init_kwargs.get("revision")
    else:
        name, revision = getattr(model, "name_or_path", None), None
    if not name:
        raise ConfigError("the model has no name_or_path to load a tokenizer from; pass processing_class",
                          field="processing_class")
    return AutoTokenizer.from_pretrained(name, revision=revision, trust_remote_code=args.trust_remote_code)


def prepare_tokenizer(processing_class: PreTrainedTokenizerBase, args: CalibratedRewardConfig) -> None:
    """Apply ``eos_token`` and a ``chat_template_path`` file before calrl tokenizes (TRL applies them again, the same)."""
    if args.eos_token is not None:
        if args.eos_token not in processing_class.get_vocab():
            raise ConfigError(f"{args.eos_token!r} is not in the tokenizer's vocabulary", field="eos_token")
        processing_class.eos_token = args.eos_token
    path = args.chat_template_path
    if path is not None:
        if not (os.path.isfile(path) and path.endswith((".jinja", ".j2"))):
            raise ConfigError(f"{path!r} is not a .jinja/.j2 file: cloning another tokenizer's template would change "
                              "the vocabulary after calrl has tokenized the pairs", field="chat_template_path")
        processing_class.chat_template = Path(path).read_text(encoding="utf-8")


def prepare_reward_dataset(dataset: Any, processing_class: PreTrainedTokenizerBase, args: CalibratedRewardConfig,
                           name: str) -> Any:
    """Tokenize a pair set (or a dict of them) for the trainer: see :func:`tokenize_preference_pairs`.

    With ``calibration_lambda > 0`` the calibrated texts are built from the config when missing; at 0 a
    dataset that has them is still tokenized with them (scored without gradient, for the diagnostics).
    """
    if isinstance(dataset, dict):
        return type(dataset)({key: prepare_reward_dataset(d, processing_class, args, key) for key, d in dataset.items()})
    if not isinstance(dataset, (Dataset, IterableDataset)):
        raise ConfigError(f"expected a datasets.Dataset or IterableDataset, got {type(dataset).__name__}",
                          field=f"{name}_dataset")
    with PartialState().main_process_first():
        return tokenize_preference_pairs(
            dataset, processing_class,
            pairs_config=args.pairs_config() if args.calibration_lambda > 0 else None,
            max_length=args.max_length,
            long_pairs=args.long_pairs,
            num_proc=args.dataset_num_proc if isinstance(dataset, Dataset) else None,
            name=name,
        )


class CalibratedRewardTrainer(RewardTrainer):
    """``trl.RewardTrainer`` with the PPO-M calibrated loss; takes a :class:`CalibratedRewardConfig`.

    The train/eval datasets are preference datasets (plain or conversational, or already tokenized with
    ``chosen_ids``/``rejected_ids`` and the calibrated id columns). If they lack the calibrated columns and
    ``calibration_lambda > 0``, they are built with :func:`build_calibrated_pairs` from the config. A dataset
    that has them is scored on them even at ``calibration_lambda = 0`` (no gradient), so the calibration
    accuracies are logged for the ordinary reward model too. The calibration metrics of the steps since the
    last log are in ``calibration_metrics["train"|"eval"]`` and are merged into each log.
    """

    def __init__(self, model: Any, args: CalibratedRewardConfig | None = None, data_collator: Any = None,
                 train_dataset: Dataset | IterableDataset | None = None, eval_dataset: Any = None,
                 processing_class: PreTrainedTokenizerBase | None = None, **kwargs: Any) -> None:
        if args is None:
            name = model if isinstance(model, str) else getattr(model, "name_or_path", None) or "model"
            args = CalibratedRewardConfig(f"{str(name).rstrip('/').split('/')[-1]}-CalibratedReward")
        if not isinstance(args, CalibratedRewardConfig):
            raise ConfigError(f"must be a CalibratedRewardConfig, got {type(args).__name__}", field="args")
        if train_dataset is None:
            raise ConfigError("a training dataset is required", field="train_dataset")
        if processing_class is None:
            processing_class = load_tokenizer(model, args)
        prepare_tokenizer(processing_class, args)
        train_dataset = prepare_reward_dataset(train_dataset, processing_class, args, "train")
        if eval_dataset is not None:
            eval_dataset = prepare_reward_dataset(eval_dataset, processing_class, args, "eval")
        if data_collator is None:
            # The pad token TRL settles on: the deprecated args.pad_token, else the tokenizer's, else EOS.
            pad_token = args.pad_token or processing_class.pad_token or processing_class.eos_token
            data_collator = CalibratedPreferenceCollator(
                pad_token_id=processing_class.convert_tokens_to_ids(pad_token),
                pad_to_multiple_of=args.pad_to_multiple_of,
            )
        super().__init__(model, args=args, data_collator=data_collator, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, processing_class=processing_class, **kwargs)
        self.calibration_metrics: dict[str, defaultdict[str, list[float]]] = {
            "train": defaultdict(list), "eval": defaultdict(list)}
        self.calibration_train_tokens = 0
        self.model.add_model_tags(MODEL_TAGS)

    def evaluate(self, eval_dataset: Any = None, ignore_keys: list[str] | None = None,
                 metric_key_prefix: str = "eval") -> dict[str, float]:
        """``RewardTrainer.evaluate``; a dataset passed here is tokenized as the constructor's are."""
        if eval_dataset is not None and not isinstance(eval_dataset, str):
            eval_dataset = prepare_reward_dataset(eval_dataset, self.processing_class, self.args, metric_key_prefix)
        return super().evaluate(eval_dataset=eval_dataset, ignore_keys=ignore_keys,
                                metric_key_prefix=metric_key_prefix)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        calibration_ids = inputs.pop("calibration_input_ids", None)
        calibration_mask = inputs.pop("calibration_attention_mask", None)
        row_margin = inputs.get("margin")
        only = self.args.calibration_loss == "calibration_only" and calibration_ids is not None
        with torch.set_grad_enabled(torch.is_grad_enabled() and not only):  # scored for the metrics only
            preference_loss, outputs = super().compute_loss(model, inputs, return_outputs=True,
                                                            num_items_in_batch=num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        metrics = self.calibration_metrics[mode]
        gather = self.accelerator.gather_for_metrics
        metrics["loss/preference"].append(gather(preference_loss.detach()).mean().item())
        loss = preference_loss
        if calibration_ids is None:
            return (loss, outputs) if return_outputs else loss
        lam = float(self.args.calibration_lambda)
        with torch.set_grad_enabled(torch.is_grad_enabled() and lam != 0):
            rewards = model(input_ids=calibration_ids, attention_mask=calibration_mask,
                            use_cache=False).logits.squeeze(-1)
        chosen_high, chosen_low, rejected_high, rejected_low = torch.chunk(rewards, chunks=4)
        margin = self.args.calibration_margin + (0.0 if row_margin is None else row_margin.to(rewards.dtype))
        term_chosen, term_rejected = calibration_loss(chosen_high, chosen_low, rejected_high, rejected_low, margin)
        calibration = term_chosen + term_rejected
        if lam != 0:
            loss = calibrated_rm_loss(preference_loss, calibration, lam, self.args.calibration_loss)
        with torch.no_grad():
            if mode == "train":
                self.calibration_train_tokens += gather(calibration_mask.sum()).sum().item()
                metrics["calibration/num_tokens"] = [self.calibration_train_tokens]
            metrics["loss/calibration"].append(gather(calibration.detach()).mean().item())
            acc_chosen = (chosen_high > chosen_low).float().mean()
            acc_rejected = (rejected_low > rejected_high).float().mean()
            metrics["calibration/accuracy_chosen_high_over_low"].append(gather(acc_chosen).mean().item())
            metrics["calibration/accuracy_rejected_low_over_high"].append(gather(acc_rejected).mean().item())
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """TRL's log, with the means of this trainer's calibration metrics since the last log merged in."""
        mode = "train" if self.model.training else "eval"
        metrics = {key: sum(values) / len(values) for key, values in self.calibration_metrics[mode].items() if values}
        if mode == "eval":  # evaluation logs carry the eval_ prefix
            metrics = {f"eval_{key}": value for key, value in metrics.items()}
        logs.update(metrics)
        super().log(logs, start_time)
        self.calibration_metrics[mode].clear()
