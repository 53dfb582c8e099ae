"""The recipe's ``eval:`` section: the calibration eval during training of PPO, GRPO and RLOO.

Its keys shared with the training callback's config are :class:`calrl.eval.settings.EvalSettings`'s, defined
there once; the keys here say which held-out set, which prompt and which decoding, as a recipe names them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from calrl.confidence.parse import DEFAULT_SCALE, Scale
from calrl.errors import ConfigError, InputError
from calrl.eval.settings import EvalSettings
from calrl.generation.prompts import (
    DEFAULT_PROMPT_STYLE,
    DEFAULT_RETRY_WHEN,
    PromptStyle,
    RetryWhen,
    check_option_format,
)


@dataclass
class EvalSection(EvalSettings):
    """The per-epoch calibration eval (``CalibrationEvalCallback``) of PPO, GRPO and RLOO: the keys of
    :class:`~calrl.eval.settings.EvalSettings` (described and checked there; the callback's config has the
    same ones), and these.

    ``heldout``: a spec for :func:`calrl.data.heldout.load_eval_items` (``gsm8k``, ``NAME:PATH``, a local
    file, or ``calrl:PATH``); null turns the eval off. ``split`` / ``limit``: its split and first N items.
    ``at_start`` (on by default) evaluates the policy before the first step (``epoch-0``, logged at step 0),
    so every W&B chart starts at the policy before RL; a resumed run does not repeat it.
    ``scale`` / ``reasons_first``: the confidence scale asked for, reasons before the answer.
    ``prompt_style``: ``calrl``, or the paper's ``standard`` / ``cot`` prompts. ``prompt_template``: a
    prompt-template file (:mod:`calrl.generation.prompt_template`; a path from the working directory, else
    beside the recipe) whose words replace the built-in prompt; ``option_format``: one option line
    (``"({letter}) {text}"``); ``retry_when``: ``parsed`` or ``reference`` (what counts as no confidence);
    ``forced_retry_tokens``: new tokens of the forced try (null: max_new_tokens);
    ``do_sample`` / ``temperature`` / ``top_k`` / ``generation_seed``: sampled answers instead of greedy ones.
    ``probe_batch_size`` (``rm``): batch size of the confidence-bias probe.
    """

    heldout: str | None = None
    split: str | None = None
    limit: int | None = None
    at_start: bool = True
    scale: Scale = DEFAULT_SCALE
    reasons_first: bool = False
    prompt_style: PromptStyle = DEFAULT_PROMPT_STYLE
    prompt_template: str | None = None
    option_format: str | None = None
    retry_when: RetryWhen = DEFAULT_RETRY_WHEN
    forced_retry_tokens: int | None = None
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    generation_seed: int | None = None
    probe_batch_size: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.temperature > 0:
            raise ConfigError(f"must be > 0, got {self.temperature}", field="temperature")
        if self.top_k < 0:
            raise ConfigError(f"must be >= 0, got {self.top_k}", field="top_k")
        if self.forced_retry_tokens is not None and self.forced_retry_tokens < 1:
            raise ConfigError(f"must be a positive integer or null, got {self.forced_retry_tokens}",
                              field="forced_retry_tokens")
        if self.option_format is not None:
            try:
                check_option_format(self.option_format)
            except InputError as exc:
                raise ConfigError(str(exc), field="option_format") from None

    def generation(self) -> dict[str, Any]:
        """The generation settings beyond the retry count, as
        :func:`calrl.generation.generate.generate_predictions` takes them."""
        return {"do_sample": self.do_sample, "temperature": self.temperature, "top_k": self.top_k,
                "seed": self.generation_seed, "retry_when": self.retry_when,
                "forced_max_new_tokens": self.forced_retry_tokens}
