"""The one vocabulary for a response without a stated confidence, shared by PPO, GRPO/RLOO and eval.

Each consumer accepts the subset of names that makes sense for it; a name means the same everywhere:

- ``half``: read as c = 0.5 (PPO-C: no adjustment, still counted in the moving average, as in the
  reference; GRPO/RLOO scoring rules: q = 0.5; eval: confidence 0.5 in the calibration metrics);
- ``exclude``: left out (PPO-C: no adjustment and not in the moving average; scoring rules: not scored,
  ``None``; eval: left out of the calibration metrics, still graded for accuracy);
- ``penalty`` (PPO): no adjustment, ``missing_confidence_penalty`` subtracted from the score;
- ``worst`` (GRPO/RLOO): scored with the most wrong confidence for its outcome (0 if correct, 1 if wrong);
- ``error`` (eval): stop with an error naming the count.

Every consumer counts the missing ones. ``skip`` (the earlier PPO/GRPO name of ``exclude``) is refused
with a message naming the new word.
"""

from __future__ import annotations

from typing import Literal, get_args

from calrl.errors import ConfigError

MISSING_CONFIDENCE = ("half", "exclude", "penalty", "worst", "error")
PPO_MISSING = ("half", "exclude", "penalty")
SCORING_RULE_MISSING = ("half", "exclude", "worst")
#: The evaluation's policies (``calrl eval``, ``calrl compare``, the training callback, a recipe's
#: ``eval.missing_policy``): the type that configs annotate, its names, and the default.
EvalMissingPolicy = Literal["exclude", "half", "error"]
EVAL_MISSING: tuple[str, ...] = get_args(EvalMissingPolicy)
DEFAULT_EVAL_MISSING: EvalMissingPolicy = "exclude"
_RENAMED = {"skip": "exclude"}


def check_missing_policy(value: str, allowed: tuple[str, ...], field: str = "missing_confidence") -> str:
    """``value`` if it is one of ``allowed``, else a :class:`ConfigError` naming ``field``."""
    if value in _RENAMED:
        raise ConfigError(f"{value!r} is now called {_RENAMED[value]!r}", field=field)
    if value not in allowed:
        raise ConfigError(f"unknown missing-confidence policy {value!r}; choose from {', '.join(allowed)}",
                          field=field)
    return value
