"""Range and finiteness checks of the numeric trainer-config keys, as tables (one rule per key).

``transformers.TrainingArguments`` and TRL's configs accept a NaN or negative learning rate, ``num_train_epochs:
0`` or ``max_completion_length: 0`` and fail (or silently do nothing) after the models have loaded. The configs
of GRPO, RLOO and the reward model call :func:`check_numbers` with :data:`TRAINING_RULES` plus their own table
at the start of their ``__post_init__``, so a bad value is a one-line :class:`~calrl.errors.ConfigError` naming
the key before any model loads; the PPO config does the same with :data:`PPO_RULES`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from calrl.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    """A number in ``[low, high]`` (``low_open`` / ``high_open`` exclude the bound); ``integer`` for counts;
    ``optional``: ``None`` is accepted; ``also``: extra accepted values (e.g. ``-1`` meaning "off")."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    optional: bool = False
    also: tuple[float, ...] = ()

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        noun = kind.split(" ", 1)[1]
        if self.high == math.inf and self.low == 0:
            kind = ("a positive " if self.low_open else "a non-negative ") + noun
        elif self.high == math.inf and self.integer and self.low == 1:
            kind = "a positive integer"
        elif self.high == math.inf and self.low > -math.inf:
            kind += f" {'>' if self.low_open else '>='} {_num(self.low)}"
        elif self.high < math.inf:
            left = "(" if self.low_open else "["
            kind += f" in {left}{_num(self.low)}, {_num(self.high)}{')' if self.high_open else ']'}"
        extras = [*(_num(v) for v in self.also), *(["null"] if self.optional else [])]
        return kind + (f" (or {', '.join(extras)})" if extras else "")

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if value in self.also:
            return True
        if not math.isfinite(float(value)) or (self.integer and float(value) != int(value)):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


POSITIVE = Rule(low=0, low_open=True)
NON_NEGATIVE = Rule(low=0)
POSITIVE_INT = Rule(low=1, integer=True)
NON_NEGATIVE_INT = Rule(low=0, integer=True)
FINITE = Rule()
UNIT = Rule(low=0, high=1)
OPTIONAL_POSITIVE = Rule(low=0, low_open=True, optional=True)
OPTIONAL_POSITIVE_INT = Rule(low=1, integer=True, optional=True)

#: ``TrainingArguments`` keys every method uses (its own checks come later and miss NaN and most ranges).
TRAINING_RULES: dict[str, Rule] = {
    "learning_rate": NON_NEGATIVE,
    "num_train_epochs": POSITIVE,
    "max_steps": Rule(low=1, integer=True, also=(-1,)),
    "per_device_train_batch_size": POSITIVE_INT,
    "per_device_eval_batch_size": POSITIVE_INT,
    "gradient_accumulation_steps": POSITIVE_INT,
    "weight_decay": NON_NEGATIVE,
    "adam_beta1": Rule(low=0, high=1, high_open=True),
    "adam_beta2": Rule(low=0, high=1, high_open=True),
    "adam_epsilon": NON_NEGATIVE,
    "max_grad_norm": NON_NEGATIVE,
    "warmup_steps": NON_NEGATIVE,
    "logging_steps": POSITIVE,
    "save_steps": POSITIVE,
    "eval_steps": OPTIONAL_POSITIVE,
    "save_total_limit": OPTIONAL_POSITIVE_INT,
    "seed": Rule(low=0, high=2**32 - 1, integer=True),
    "label_smoothing_factor": UNIT,
}

#: GRPO's and RLOO's generation and loss keys (TRL 1.16 names).
POLICY_GRADIENT_RULES: dict[str, Rule] = {
    "num_generations": Rule(low=2, integer=True),
    "num_generations_eval": OPTIONAL_POSITIVE_INT,
    "max_completion_length": POSITIVE_INT,
    "generation_batch_size": OPTIONAL_POSITIVE_INT,
    "steps_per_generation": OPTIONAL_POSITIVE_INT,
    "temperature": POSITIVE,
    "top_p": Rule(low=0, high=1, low_open=True),
    "top_k": NON_NEGATIVE_INT,
    "min_p": Rule(low=0, high=1, optional=True),
    "repetition_penalty": POSITIVE,
    "beta": NON_NEGATIVE,
    "num_iterations": POSITIVE_INT,
    "epsilon": POSITIVE,
    "epsilon_high": OPTIONAL_POSITIVE,
    "reward_clip_range": Rule(optional=True),  # RLOO: a pair, checked by check_pair below
}

#: calrl's PPO keys (TRL 1.12 names, the adaptive KL controller's, and the reward pipeline's numbers).
PPO_RULES: dict[str, Rule] = {
    "num_mini_batches": POSITIVE_INT,
    "num_ppo_epochs": POSITIVE_INT,
    "response_length": POSITIVE_INT,
    "local_rollout_forward_batch_size": POSITIVE_INT,
    "kl_horizon": POSITIVE_INT,
    "num_sample_generations": NON_NEGATIVE_INT,
    "total_episodes": OPTIONAL_POSITIVE_INT,
    "max_prompt_length": OPTIONAL_POSITIVE_INT,
    "temperature": POSITIVE,
    "cliprange": POSITIVE,
    "cliprange_value": POSITIVE,
    "critic_learning_rate": OPTIONAL_POSITIVE,
    "critic_max_grad_norm": OPTIONAL_POSITIVE,
    "max_step_kl": OPTIONAL_POSITIVE,
    "step_backtracks": NON_NEGATIVE_INT,
    "kl_coef": NON_NEGATIVE,
    "vf_coef": NON_NEGATIVE,
    "gamma": UNIT,
    "lam": UNIT,
    "kl_target": OPTIONAL_POSITIVE,
    "missing_eos_penalty": Rule(optional=True),
}

#: The reward model's keys (TRL's RewardConfig and calrl's calibrated loss).
REWARD_MODEL_RULES: dict[str, Rule] = {
    "max_length": OPTIONAL_POSITIVE_INT,
    "center_rewards_coefficient": Rule(low=0, optional=True),
    "calibration_lambda": NON_NEGATIVE,
    "calibration_margin": FINITE,
}


def check_numbers(config: Any, *tables: Mapping[str, Rule]) -> None:
    """Raise ConfigError for the first key of ``tables`` whose value in ``config`` breaks its rule.

    A key the config does not have is skipped; a list or tuple value (e.g. RLOO's ``reward_clip_range``) must
    hold finite numbers.
    """
    for table in tables:
        for name, rule in table.items():
            if not hasattr(config, name):
                continue
            value = getattr(config, name)
            if isinstance(value, list | tuple):
                if not all(FINITE.accepts(v) for v in value):
                    raise ConfigError(f"must hold finite numbers, got {value!r}", field=name)
                continue
            if not rule.accepts(value):
                raise ConfigError(f"must be {rule.describe()}, got {value!r}", field=name)
