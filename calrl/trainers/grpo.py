"""GRPO with proper-scoring-rule rewards on the stated confidence (RLCR / Rewarding Doubt style).

``CalibratedGRPOTrainer`` is ``trl.GRPOTrainer`` whose reward functions are the config's reward terms
(:mod:`calrl.rewards.reward_funcs`: ``rewards``, or ``reward_funcs`` and ``reward_weights``). Reward scaling is GRPO's own ``scale_rewards`` option; this config
defaults it to ``"none"`` because per-group std normalisation of the advantages makes GRPO overconfident on
stochastic outcomes (Bereket & Leskovec, arXiv 2508.11800; PPO and RLOO stay calibrated, and removing the
std scaling fixes GRPO). Turning it back on in a run with a calibration reward gives a warning.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Any

from trl import GRPOConfig, GRPOTrainer

from calrl.callbacks.calibration_eval import CalibrationEvalCallback
from calrl.errors import ConfigError
from calrl.rewards.reward_funcs import RewardFuncsConfig, build_reward_funcs
from calrl.trainers import check_trl_version
from calrl.trainers.validation import POLICY_GRADIENT_RULES, TRAINING_RULES, check_numbers

logger = logging.getLogger(__name__)
check_trl_version()

SCALE_REWARDS = ("group", "batch", "none")
STD_SCALING_REASON = (
    "per-group std normalisation of the rewards is on ({detail}) in a run with a calibration reward "
    "({rewards}). Dividing each group's advantages by its reward std induces overconfidence on stochastic "
    "outcomes (Bereket & Leskovec, arXiv 2508.11800): PPO and RLOO stay calibrated, and removing the std "
    "scaling fixes GRPO. Set scale_rewards='none' (or 'batch') and multi_objective_aggregation="
    "'sum_then_normalize' for calibration training."
)


@dataclass
class CalibratedGRPOConfig(GRPOConfig, RewardFuncsConfig):
    """``trl.GRPOConfig`` plus the calibration reward options of :class:`RewardFuncsConfig`.

    ``rewards`` lists the reward terms TRL style (``[{name: brier}, {name: format, weight: 0.1}]``); or
    ``reward_funcs`` names them and ``reward_weights`` (GRPO's own option) weights them.
    ``scale_rewards`` is GRPO's reward scaling: ``"group"`` (per-group std, GRPO's default), ``"batch"``
    or ``"none"`` (this config's default, see the module docstring); ``True``/``False`` mean
    ``"group"``/``"none"``.
    """

    scale_rewards: str = field(
        default="none",
        metadata={"help": "Reward scaling: 'group' (per-group std; makes GRPO overconfident with calibration "
                          "rewards), 'batch' or 'none' (default)."},
    )

    def __post_init__(self) -> None:
        check_numbers(self, TRAINING_RULES, POLICY_GRADIENT_RULES)
        super().__post_init__()
        if self.scale_rewards not in SCALE_REWARDS:
            raise ConfigError(f"must be one of {', '.join(SCALE_REWARDS)} (or true/false), got "
                              f"{self.scale_rewards!r}", field="scale_rewards")
        self.validate_reward_options()


def std_scaling_warning(args: RewardFuncsConfig) -> str | None:
    """The warning text when ``args`` turns on per-group std scaling with a calibration reward, else None.

    Per-group std scaling happens with ``scale_rewards="group"`` and, whatever ``scale_rewards`` says, with
    ``multi_objective_aggregation="normalize_then_sum"`` (each reward is normalised within its group).
    """
    calibration = args.calibration_rewards
    if not calibration:
        return None
    scale = {True: "group", False: "none"}.get(getattr(args, "scale_rewards", "none"),
                                               getattr(args, "scale_rewards", "none"))
    aggregation = getattr(args, "multi_objective_aggregation", "sum_then_normalize")
    if scale == "group":
        detail = "scale_rewards='group'"
    elif aggregation == "normalize_then_sum":
        detail = "multi_objective_aggregation='normalize_then_sum'"
    else:
        return None
    return STD_SCALING_REASON.format(detail=detail, rewards=", ".join(calibration))


def warn_if_std_scaling(args: Any) -> str | None:
    """Emit :func:`std_scaling_warning` as a ``UserWarning`` and a log record; return its text."""
    message = std_scaling_warning(args)
    if message is not None:
        warnings.warn(message, UserWarning, stacklevel=3)
        logger.warning(message)
    return message


def check_reference_column(args: RewardFuncsConfig, dataset: Any) -> None:
    """Raise :class:`ConfigError` when a reward needs the reference column and the dataset lacks it."""
    columns = getattr(dataset, "column_names", None)
    if dataset is None or not columns or not args.uses_reference:
        return
    if isinstance(columns, dict):  # a DatasetDict
        columns = next(iter(columns.values()))
    if args.reference_column not in columns:
        raise ConfigError(f"the rewards {args.reward_funcs} need the dataset column "
                          f"{args.reference_column!r}; the dataset has {list(columns)}",
                          field="reference_column")


def attach_calibration_eval(trainer: Any, calibration_eval: Any) -> Any:
    """Add a :class:`~calrl.callbacks.calibration_eval.CalibrationEvalCallback` to ``trainer``."""
    if calibration_eval is None:
        return None

    callback = (calibration_eval if isinstance(calibration_eval, CalibrationEvalCallback)
                else CalibrationEvalCallback(calibration_eval))
    callback.attach(trainer)
    return callback


class ScoringRuleRewardsMixin:
    """Builds a TRL policy-gradient trainer's reward functions from the config's reward terms (checking the config
    and the reference column, warning about per-group std scaling) and attaches the per-epoch calibration
    eval; put it before ``GRPOTrainer`` / ``RLOOTrainer`` in the bases."""

    def __init__(self, model: Any, args: Any, train_dataset: Any = None, *, calibration_eval: Any = None,
                 **kwargs: Any) -> None:
        if not isinstance(args, RewardFuncsConfig):
            name = type(self).__name__
            raise ConfigError(f"{name} needs a {name.replace('Trainer', 'Config')}", field="args")
        check_reference_column(args, train_dataset)
        reward_funcs, args.reward_weights = build_reward_funcs(args)
        self.std_scaling_warning = warn_if_std_scaling(args)
        super().__init__(model=model, reward_funcs=reward_funcs, args=args, train_dataset=train_dataset, **kwargs)
        self.calibration_callback = attach_calibration_eval(self, calibration_eval)


class CalibratedGRPOTrainer(ScoringRuleRewardsMixin, GRPOTrainer):
    """``trl.GRPOTrainer`` whose reward functions are the reward terms of ``args`` (``rewards`` or ``reward_funcs``).

    Everything else is GRPOTrainer's. ``calibration_eval`` (a ``CalibrationEvalConfig`` or callback) adds
    the per-epoch calibration evaluation.
    """
