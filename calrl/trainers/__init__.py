"""Trainers: TRL trainers extended for calibration-aware training, each with its *Config, and calrl's own PPO.

This package is calrl's one boundary with TRL: every ``import trl`` of calrl lives in a module here
(``grpo``, ``rloo``, ``reward``, ``sft``). The PPO trainer (``ppo*.py``) is calrl's own and imports no TRL.
The trainer classes are loaded on first use, so ``import calrl.trainers.ppo`` does not import TRL.
Each TRL-facing module calls :func:`check_trl_version` when it is imported: it warns once when the
installed trl is outside :data:`TESTED_TRL_VERSIONS`.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from functools import cache
from importlib import metadata
from typing import Any

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

logger = logging.getLogger(__name__)

# The trl releases calrl's TRL-facing trainers are tested with.
TESTED_TRL_VERSIONS = ">=1.16.0,<1.17"

_EXPORTS = {
    "CalibratedGRPOConfig": "calrl.trainers.grpo",
    "CalibratedGRPOTrainer": "calrl.trainers.grpo",
    "CalibratedPPOConfig": "calrl.trainers.ppo",
    "CalibratedPPOTrainer": "calrl.trainers.ppo",
    "CalibratedRLOOConfig": "calrl.trainers.rloo",
    "CalibratedRLOOTrainer": "calrl.trainers.rloo",
    "CalibratedRewardConfig": "calrl.trainers.reward",
    "CalibratedRewardTrainer": "calrl.trainers.reward",
}

__all__ = [
    "TESTED_TRL_VERSIONS", "CalibratedGRPOConfig", "CalibratedGRPOTrainer", "CalibratedPPOConfig",
    "CalibratedPPOTrainer", "CalibratedRLOOConfig", "CalibratedRLOOTrainer", "CalibratedRewardConfig",
    "CalibratedRewardTrainer", "check_trl_version", "trl_version_warning",
]


def trl_version_warning(installed: str | None) -> str | None:
    """The warning text for an installed trl version outside :data:`TESTED_TRL_VERSIONS`, else None."""
    if installed is None:
        return None
    try:
        tested = Version(installed) in SpecifierSet(TESTED_TRL_VERSIONS, prereleases=True)
    except InvalidVersion:
        tested = False
    if tested:
        return None
    return (f"trl {installed} is installed, but calrl's TRL-facing trainers are tested with trl "
            f"{TESTED_TRL_VERSIONS}; install a tested version (pip install 'trl{TESTED_TRL_VERSIONS}') "
            "if training fails or behaves differently")


@cache
def check_trl_version() -> str | None:
    """Warn (``UserWarning`` and a log record, once per process) when trl is outside the tested versions.

    Returns the warning text, or None when trl is a tested version or not installed (importing a TRL
    trainer then fails with Python's own ImportError).
    """
    try:
        installed = metadata.version("trl")
    except metadata.PackageNotFoundError:
        return None
    message = trl_version_warning(installed)
    if message is not None:
        warnings.warn(message, UserWarning, stacklevel=2)
        logger.warning(message)
    return message


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
