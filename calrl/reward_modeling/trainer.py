"""The calibrated reward-model trainer of PPO-M: TRL's RewardTrainer plus two calibration terms.

Loss = BT(chosen, rejected) + lambda * [BT(cwh, cwl) + BT(rwl, rwh)],
BT(a, b) = -log sigmoid(r(a) - r(b) - margin)   (methods.md section 2).

The ordinary term is TRL's own ``RewardTrainer.compute_loss`` (margin column and
``center_rewards_coefficient`` included); ``calibration_lambda = 0`` is the ordinary reward model.
Seams used: ``_prepare_dataset`` (tokenizes the four confidence-augmented texts beside TRL's
chosen/rejected), the data collator (pads them into ``calibration_input_ids``), the signature
columns, and ``compute_loss`` (pops the calibration batch, calls TRL for the ordinary term).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from accelerate import PartialState
from datasets import Dataset, IterableDataset
from transformers import PreTrainedTokenizerBase
from trl import RewardConfig, RewardTrainer
from trl.data_utils import _tokenize, get_dataset_column_names
from trl.trainer.reward_trainer import DataCollatorForPreference
from trl.trainer.utils import pad

from calrl.errors import ConfigError
from calrl.reward_modeling.calibrated_data import (
    CALIBRATED_TEXT_COLUMNS,
    SCALES,
    CalibratedPairsConfig,
    build_calibrated_pairs,
)

CALIBRATED_ID_COLUMNS = tuple(f"{name}_ids" for name in CALIBRATED_TEXT_COLUMNS)


def bradley_terry_loss(better: torch.Tensor, worse: torch.Tensor, margin: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Mean of -log sigmoid(r(better) - r(worse) - margin)."""
    return -F.logsigmoid(better - worse - margin).mean()


def calibration_loss(chosen_high: torch.Tensor, chosen_low: torch.Tensor, rejected_high: torch.Tensor,
                     rejected_low: torch.Tensor, margin: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The two calibration terms: BT(cwh, cwl) and BT(rwl, rwh)."""
    return (bradley_terry_loss(chosen_high, chosen_low, margin),
            bradley_terry_loss(rejected_low, rejected_high, margin))


@dataclass
class CalibratedRewardConfig(RewardConfig):
    """``trl.RewardConfig`` plus the calibrated loss and the calibrated-pairs settings.

    calibration_lambda: weight of the two calibration terms (0 = ordinary reward model).
    calibration_margin: margin inside the calibration BT terms.
    confidence_high_range / confidence_low_range: stated-confidence ranges on the 0-10 scale.
    confidence_scale: "0-10", "percent" or "unit" (phrasing of calrl.confidence.format_confidence).
    confidence_seed: seed of the confidence sampling (defaults to ``seed``).
    confidence_template: where the statement goes after the response.
    """

    calibration_lambda: float = field(default=1.0, metadata={"help": "Weight of the calibration terms; 0 = ordinary RM."})
    calibration_margin: float = field(default=0.0, metadata={"help": "Margin inside the calibration BT terms."})
    confidence_high_range: list[float] = field(default_factory=lambda: [7.0, 10.0],
                                               metadata={"help": "High stated-confidence range, 0-10 scale."})
    confidence_low_range: list[float] = field(default_factory=lambda: [0.0, 3.0],
                                              metadata={"help": "Low stated-confidence range, 0-10 scale."})
    confidence_scale: str = field(default="0-10", metadata={"help": f"One of {list(SCALES)}."})
    confidence_seed: int | None = field(default=None, metadata={"help": "Seed of the sampling (default: seed)."})
    confidence_template: str = field(default="\n{confidence}", metadata={"help": "Statement placement."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.calibration_lambda, (int, float)) or self.calibration_lambda < 0:
            raise ConfigError(f"must be a number >= 0, got {self.calibration_lambda!r}", field="calibration_lambda")
        self.pairs_config()  # validates the confidence fields

    def pairs_config(self) -> CalibratedPairsConfig:
        """The :class:`CalibratedPairsConfig` these fields describe."""
        return CalibratedPairsConfig(
            high_range=tuple(self.confidence_high_range),
            low_range=tuple(self.confidence_low_range),
            scale=self.confidence_scale,
            seed=self.seed if self.confidence_seed is None else self.confidence_seed,
            template=self.confidence_template,
        )


def tokenize_response(processing_class: PreTrainedTokenizerBase, example: dict[str, Any], column: str) -> list[int]:
    """Token ids of ``prompt + example[column]`` exactly as TRL's RewardTrainer tokenizes chosen/rejected.

    Plain text gets the EOS token appended (unless present) before the prompt is prepended;
    conversations go through the chat template with the example's ``tools``/``chat_template_kwargs``.
    """
    response = example[column]
    if isinstance(response, str):
        eos = processing_class.eos_token
        if not response.endswith(eos):
            response = response + eos
    text = example["prompt"] + response if example.get("prompt") is not None else response
    if isinstance(text, list):
        tools = example.get("tools")
        tools = json.loads(tools) if isinstance(tools, str) else tools
        kwargs = {"tools": tools, **(example.get("chat_template_kwargs") or {})}
        return list(_tokenize(processing_class, text, **kwargs)["input_ids"])
    return list(_tokenize(processing_class, text)["input_ids"])


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
        output["calibration_input_ids"] = pad(ids, padding_value=self.pad_token_id, padding_side="right",
                                              pad_to_multiple_of=self.pad_to_multiple_of)
        output["calibration_attention_mask"] = pad([torch.ones_like(t) for t in ids], padding_value=0,
                                                   padding_side="right", pad_to_multiple_of=self.pad_to_multiple_of)
        return output


class CalibratedRewardTrainer(RewardTrainer):
    """``trl.RewardTrainer`` with the PPO-M calibrated loss; takes a :class:`CalibratedRewardConfig`.

    The train/eval datasets are preference datasets (plain or conversational). If they lack the
    calibrated columns and ``calibration_lambda > 0``, they are built with
    :func:`build_calibrated_pairs` from the config. A dataset that has them is scored on them even
    at ``calibration_lambda = 0`` (no gradient), so the calibration accuracies are logged for the
    ordinary reward model too.
    """

    _tag_names: ClassVar[list[str]] = ["trl", "reward-trainer", "calrl", "calibrated-reward"]

    def __init__(self, model, args: CalibratedRewardConfig | None = None, data_collator=None, **kwargs) -> None:
        if args is None:
            name = model if isinstance(model, str) else getattr(model.config, "_name_or_path", "model") or "model"
            args = CalibratedRewardConfig(f"{str(name).rstrip('/').split('/')[-1]}-CalibratedReward")
        if not isinstance(args, CalibratedRewardConfig):
            raise ConfigError(f"args must be a CalibratedRewardConfig, got {type(args).__name__}")
        super().__init__(model, args=args, data_collator=data_collator, **kwargs)
        if data_collator is None:  # TRL built its DataCollatorForPreference: extend it, same padding
            self.data_collator = CalibratedPreferenceCollator(
                pad_token_id=self.data_collator.pad_token_id,
                pad_to_multiple_of=self.data_collator.pad_to_multiple_of,
            )

    def _prepare_dataset(self, dataset: Dataset | IterableDataset, processing_class: PreTrainedTokenizerBase,
                         args: CalibratedRewardConfig, dataset_name: str) -> Dataset | IterableDataset:
        columns = get_dataset_column_names(dataset)
        has_ids = all(c in columns for c in CALIBRATED_ID_COLUMNS)
        has_texts = all(c in columns for c in CALIBRATED_TEXT_COLUMNS)
        trl_processed = "chosen_ids" in columns and "rejected_ids" in columns
        if not has_ids and not has_texts and args.calibration_lambda > 0:
            if trl_processed and "chosen" not in columns:
                missing = next(c for c in CALIBRATED_ID_COLUMNS if c not in columns)
                raise ConfigError(f"{dataset_name} dataset is tokenized but has no column '{missing}'", field=missing)
            dataset = build_calibrated_pairs(dataset, args.pairs_config())
            has_texts = True
        map_kwargs: dict[str, Any] = {}
        if isinstance(dataset, Dataset):
            map_kwargs = {"num_proc": args.dataset_num_proc, "desc": f"Tokenizing calibrated {dataset_name} texts"}
        if has_texts and not has_ids:
            def tokenize_calibrated(example: dict[str, Any]) -> dict[str, list[int]]:
                return {f"{c}_ids": tokenize_response(processing_class, example, c) for c in CALIBRATED_TEXT_COLUMNS}

            with PartialState().main_process_first():
                dataset = dataset.map(tokenize_calibrated, **map_kwargs)
            has_ids = True
        dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        if has_ids and args.max_length is not None:
            if isinstance(dataset, Dataset):
                map_kwargs["desc"] = f"Filtering calibrated {dataset_name} >{args.max_length} tokens"
            with PartialState().main_process_first():
                dataset = dataset.filter(
                    lambda ex: all(len(ex[c]) <= args.max_length for c in CALIBRATED_ID_COLUMNS), **map_kwargs
                )
        return dataset

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        self._signature_columns = list(dict.fromkeys([*self._signature_columns, *CALIBRATED_ID_COLUMNS]))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        calibration_ids = inputs.pop("calibration_input_ids", None)
        calibration_mask = inputs.pop("calibration_attention_mask", None)
        preference_loss, outputs = super().compute_loss(model, inputs, return_outputs=True,
                                                        num_items_in_batch=num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        metrics = self._metrics[mode]
        gather = self.accelerator.gather_for_metrics
        metrics["loss/preference"].append(gather(preference_loss.detach()).mean().item())
        loss = preference_loss
        if calibration_ids is not None:
            lam = float(self.args.calibration_lambda)
            with torch.set_grad_enabled(torch.is_grad_enabled() and lam != 0):
                rewards = model(input_ids=calibration_ids, attention_mask=calibration_mask,
                                use_cache=False).logits.squeeze(-1)
            chosen_high, chosen_low, rejected_high, rejected_low = torch.chunk(rewards, chunks=4)
            term_chosen, term_rejected = calibration_loss(chosen_high, chosen_low, rejected_high, rejected_low,
                                                          self.args.calibration_margin)
            calib = term_chosen + term_rejected
            if lam != 0:
                loss = preference_loss + lam * calib
            if mode == "train":
                self._total_train_tokens += gather(calibration_mask.sum()).sum().item()
                metrics["num_tokens"] = [self._total_train_tokens]
            with torch.no_grad():
                metrics["loss/calibration"].append(gather(calib.detach()).mean().item())
                acc_chosen = (chosen_high > chosen_low).float().mean()
                acc_rejected = (rejected_low > rejected_high).float().mean()
                metrics["calibration/accuracy_chosen_high_over_low"].append(gather(acc_chosen).mean().item())
                metrics["calibration/accuracy_rejected_low_over_high"].append(gather(acc_rejected).mean().item())
        return (loss, outputs) if return_outputs else loss
