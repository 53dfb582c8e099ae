"""The settings of a calibration eval during training, defined once: the recipe's ``eval:`` section
(:class:`calrl.runners.eval_section.EvalSection`) and the training callback's config
(:class:`calrl.callbacks.calibration_eval.CalibrationEvalConfig`) are both :class:`EvalSettings`, each with
its own keys added, so a key shared by the two has one name, type, default, description and check.

No torch here: recipes are validated with it before any model loads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from calrl.confidence.missing import (
    DEFAULT_EVAL_MISSING,
    EVAL_MISSING,
    EvalMissingPolicy,
    check_missing_policy,
)
from calrl.confidence.reading import DEFAULT_PARSER, ParserName, check_parser
from calrl.errors import ConfigError, InputError
from calrl.grading.graders import DEFAULT_GRADER
from calrl.limits import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_BINS,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_MIN_SLICE_SIZE,
    MAX_BATCH_SIZE,
    MAX_ITEMS,
    MAX_NEW_TOKENS,
    MAX_RETRIES,
    check_bins,
    check_bootstrap,
    check_int,
)


@dataclass(kw_only=True)
class EvalSettings:
    """How the calibration eval during training generates, reads, grades and scores its answers, and when it
    runs.

    ``every_n_steps``: an eval every N optimiser steps on top of the per-epoch evals (null: epochs only).
    ``batch_size`` / ``max_new_tokens``: prompts generated together, new tokens of each answer.
    ``n_bins``: equal-width bins of ECE and the reliability diagram (1 to ``calrl.limits.MAX_BINS``).
    ``slice_keys``: the slice keys whose per-slice scalars are logged (null: every slice key).
    ``use_hedges``: read hedge phrases ("probably") as confidences (the ``calrl`` parser only).
    ``confidence_parser``: ``calrl`` or ``reference`` (the paper's evaluation rules).
    ``confidence_retries``: regenerate an answer without a confidence up to N times, the last try forcing
    ``Confidence:`` (0: off; the paper's code: 10 plain tries and a forced one, 11).
    ``grader``: how answers are graded (``auto``, ``exact``, ``numeric``, ``mc`` or a registered grader).
    ``missing_policy``: an answer without a confidence is left out of the calibration metrics (``exclude``),
    scored as 0.5 (``half``) or stops the eval (``error``).
    ``min_slice_size``: slices with fewer items are flagged small.
    ``n_boot``: bootstrap resamples of the smooth-ECE interval (0: none, the default during training).
    """

    every_n_steps: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    n_bins: int = DEFAULT_BINS
    slice_keys: list[str] | None = None
    use_hedges: bool = True
    confidence_parser: ParserName = DEFAULT_PARSER
    confidence_retries: int = 0
    grader: str = DEFAULT_GRADER
    missing_policy: EvalMissingPolicy = DEFAULT_EVAL_MISSING
    min_slice_size: int = DEFAULT_MIN_SLICE_SIZE
    n_boot: int = 0

    def __post_init__(self) -> None:
        n = self.every_n_steps
        if n is not None and (not isinstance(n, int) or n < 1):
            raise ConfigError(f"must be a positive integer or null, got {n!r}", field="every_n_steps")
        try:
            check_int(self.batch_size, 1, MAX_BATCH_SIZE, field="batch_size")
            check_int(self.max_new_tokens, 1, MAX_NEW_TOKENS, field="max_new_tokens")
            check_bins(self.n_bins, field="n_bins")
            check_int(self.min_slice_size, 0, MAX_ITEMS, field="min_slice_size")
            check_bootstrap(self.n_boot, field="n_boot")
            check_int(self.confidence_retries, 0, MAX_RETRIES, field="confidence_retries")
        except InputError as exc:  # a config's error: the recipe or the callback names its key
            raise ConfigError(exc.reason, field=exc.field) from None
        check_missing_policy(self.missing_policy, EVAL_MISSING, field="missing_policy")
        check_parser(self.confidence_parser)

    def eval_settings(self) -> dict[str, Any]:
        """The values of the :class:`EvalSettings` keys, to build another kind of settings from these ones
        (``CalibrationEvalConfig(**section.eval_settings(), eval_items=...)``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(EvalSettings)}
