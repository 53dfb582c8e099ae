"""TRL reward functions for GRPOTrainer and RLOOTrainer: correctness, scoring rules, abstention, format.

TRL calls each reward function as ``f(prompts=..., completions=..., **dataset_columns)`` and expects one
float (or ``None``: "not scored by this function") per completion; it logs ``rewards/<__name__>/mean|std``.
Completions are plain strings or, for conversational datasets, lists of message dicts.

Rewards (``RewardFuncsConfig.reward_funcs`` names):

- ``correctness``: 1 if the answer grades correct against the reference column, else 0 (abstentions 0).
- ``brier``: RLCR, ``1[correct] - (q - 1[correct])^2`` on the stated confidence q (it contains the
  correctness term already).
- ``log_score``: ``log q`` if correct else ``log(1 - q)`` (q clipped); pair it with ``correctness``.
- ``abstention``: the configured value for an abstention ("I don't know", a clarifying question), 0 otherwise.
- ``format``: 1 if the completion has an answer and an explicit parsable confidence statement, else 0.

Abstentions: when ``abstention`` is among the rewards, the scoring rules return ``None`` for abstentions
(the abstention's reward is the configured value); otherwise an abstention is scored as a wrong answer.
With honest confidence q = p, ``brier`` earns p^2 in expectation, so abstaining with value v is optimal
exactly when p < sqrt(v); with ``correctness`` alone it is optimal when p < v.

A response without a confidence is handled by ``missing_confidence`` and counted (logged as
``confidence/missing_rate`` through TRL's ``log_metric``):

- ``"half"``: scored as q = 0.5 (the convention of Leng et al.); under a proper rule stating the true p is
  never worse than this, so the policy still gains by stating confidence.
- ``"worst"``: scored as the most wrong confidence for its outcome (q = 0 if correct, q = 1 if wrong).
- ``"exclude"``: ``None`` (left to the other reward functions).

(One vocabulary with PPO and eval: :mod:`calrl.confidence.missing`.) ``confidence_parser`` (``calrl`` or
``reference``: the paper's training regex) is the one confidence-reading step,
:class:`calrl.confidence.ConfidenceReader` with ``purpose="reward"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Any

import torch

from calrl.confidence.missing import SCORING_RULE_MISSING
from calrl.errors import ConfigError
from calrl.rewards import scoring_rules

REWARD_NAMES = ("correctness", "brier", "log_score", "abstention", "format")
SCORING_RULES = ("brier", "log_score")
NEEDS_REFERENCE = ("correctness", "brier", "log_score")
MISSING_CONFIDENCE_POLICIES = SCORING_RULE_MISSING

__all__ = [
    "MISSING_CONFIDENCE_POLICIES",
    "REWARD_NAMES",
    "SCORING_RULES",
    "AbstentionRewardFunc",
    "CorrectnessRewardFunc",
    "FormatRewardFunc",
    "ParsedCompletion",
    "RewardFuncsConfig",
    "ScoringRuleRewardFunc",
    "build_reward_funcs",
    "completion_text",
    "parse_completion",
]


@dataclass
class RewardFuncsConfig:
    """Which calibration rewards to use and how they read the completions and the dataset."""

    reward_funcs: list[str] = field(
        default_factory=lambda: ["brier"],
        metadata={"help": f"Reward functions by name, any of {', '.join(REWARD_NAMES)}."},
    )
    reward_weights: list[float] | None = field(
        default=None, metadata={"help": "One weight per reward function (default: 1.0 each)."}
    )
    reference_column: str = field(
        default="reference", metadata={"help": "Dataset column with the reference answer(s) (str or list)."}
    )
    choices_column: str | None = field(
        default="choices", metadata={"help": "Dataset column with answer choices (multiple choice), if any."}
    )
    grader: str = field(default="auto", metadata={"help": "Grader name for calrl.grading.grade."})
    abstention_reward: float = field(
        default=0.25, metadata={"help": "Reward of an abstention (used by the 'abstention' reward)."}
    )
    missing_confidence: str = field(
        default="half",
        metadata={"help": f"Response without confidence: one of {', '.join(MISSING_CONFIDENCE_POLICIES)}."},
    )
    use_hedges: bool = field(
        default=False, metadata={"help": "Read a confidence from hedge phrases when no number is stated."}
    )
    confidence_parser: str = field(
        default="calrl", metadata={"help": "'calrl' or 'reference' (the paper's training regex)."}
    )
    log_score_eps: float = field(default=1e-3, metadata={"help": "Clip q to [eps, 1-eps] in the log score."})

    def validate_reward_options(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid reward option.

        ``reward_funcs`` given as one string (``"brier,format"``, e.g. from a command-line override) is split
        on commas first.
        """
        if isinstance(self.reward_funcs, str):
            self.reward_funcs = [name.strip() for name in self.reward_funcs.split(",") if name.strip()]
        names = list(self.reward_funcs or [])
        if not names:
            raise ConfigError("at least one reward function is needed", field="reward_funcs")
        for name in names:
            if name not in REWARD_NAMES:
                raise ConfigError(f"unknown reward function {name!r}; choose from {', '.join(REWARD_NAMES)}",
                                  field="reward_funcs")
        if len(set(names)) != len(names):
            raise ConfigError(f"duplicate reward function in {names}", field="reward_funcs")
        if self.reward_weights is not None:
            if len(self.reward_weights) != len(names):
                raise ConfigError(f"{len(self.reward_weights)} weights for {len(names)} reward functions",
                                  field="reward_weights")
            if not all(isinstance(w, int | float) and math.isfinite(w) for w in self.reward_weights):
                raise ConfigError(f"weights must be finite numbers, got {self.reward_weights}",
                                  field="reward_weights")
        from calrl.confidence.missing import check_missing_policy
        from calrl.confidence.reading import check_parser

        check_missing_policy(self.missing_confidence, MISSING_CONFIDENCE_POLICIES)
        check_parser(self.confidence_parser)
        if not isinstance(self.abstention_reward, int | float) or not math.isfinite(self.abstention_reward):
            raise ConfigError(f"must be a finite number, got {self.abstention_reward!r}",
                              field="abstention_reward")
        if not 0.0 < self.log_score_eps < 0.5:
            raise ConfigError(f"must be in (0, 0.5), got {self.log_score_eps}", field="log_score_eps")
        if not self.reference_column:
            raise ConfigError("must name a dataset column", field="reference_column")
        if self.uses_reference:
            from calrl.errors import InputError
            from calrl.grading import get_grader

            try:
                get_grader(self.grader)
            except (InputError, KeyError) as exc:
                raise ConfigError(str(exc).removeprefix("field 'grader': "), field="grader") from exc

    def weights(self) -> list[float]:
        """The weight of each reward function, in order (1.0 each when not given)."""
        return [float(w) for w in self.reward_weights] if self.reward_weights is not None else [
            1.0] * len(self.reward_funcs)

    @property
    def uses_calibration_reward(self) -> bool:
        """True when a proper scoring rule on the stated confidence is among the rewards."""
        return any(name in SCORING_RULES for name in self.reward_funcs)

    @property
    def uses_reference(self) -> bool:
        return any(name in NEEDS_REFERENCE for name in self.reward_funcs)

    @classmethod
    def from_object(cls, obj: Any) -> RewardFuncsConfig:
        """Take the reward options from any object or mapping with the same attribute names."""
        get = obj.get if isinstance(obj, Mapping) else lambda k, d: getattr(obj, k, d)
        return cls(**{f.name: get(f.name, getattr(cls(), f.name)) for f in fields(cls)})


# ------------------------------------------------------------------------------------------- parsing
def completion_text(completion: str | Sequence[Mapping[str, Any]]) -> str:
    """The text of a completion: the string itself, or the assistant messages' content joined."""
    if isinstance(completion, str):
        return completion
    parts: list[str] = []
    for message in completion:
        if message.get("role", "assistant") != "assistant":
            continue
        content = message.get("content", "")
        if isinstance(content, str):
            parts.append(content)
        else:  # a list of content parts: keep the text ones
            parts.extend(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return "\n".join(parts)


@dataclass(frozen=True)
class ParsedCompletion:
    """What the rewards need from one completion."""

    answer: str
    confidence: float | None
    confidence_source: str  # "explicit" | "hedge" | "missing"
    abstained: bool


@lru_cache(maxsize=8192)
def parse_completion(text: str, use_hedges: bool = False, parser: str = "calrl") -> ParsedCompletion:
    """Answer, stated confidence and abstention of a completion (cached: every reward function asks)."""
    from calrl.confidence import ConfidenceReader, extract_answer, is_abstention

    parsed = ConfidenceReader(parser, purpose="reward", use_hedges=use_hedges).read(text)
    return ParsedCompletion(answer=extract_answer(text).strip(), confidence=parsed.value,
                            confidence_source=parsed.source, abstained=bool(is_abstention(text)))


def _references(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str | int | float):
        return [str(value)]
    return [str(v) for v in value]


def _column(kwargs: Mapping[str, Any], column: str, n: int, reward_name: str) -> list[Any]:
    if column not in kwargs:
        available = sorted(k for k in kwargs if k not in ("trainer_state", "log_extra", "log_metric",
                                                           "completion_ids", "environments"))
        raise ConfigError(f"reward {reward_name!r} needs the dataset column {column!r}; the dataset has "
                          f"{available}", field="reference_column")
    values = list(kwargs[column])
    if len(values) != n:
        raise ValueError(f"column {column!r} has {len(values)} values for {n} completions")
    return values


class RewardFunc:
    """Base: a picklable callable with a ``__name__`` (TRL logs ``rewards/<__name__>/...``)."""

    name: str = ""

    def __init__(self, config: RewardFuncsConfig) -> None:
        self.config = config
        self.__name__ = self.name

    def _parse(self, completions: Sequence[Any]) -> list[ParsedCompletion]:
        return [parse_completion(completion_text(c), self.config.use_hedges, self.config.confidence_parser) for c in completions]

    def _correct(self, parsed: Sequence[ParsedCompletion], kwargs: Mapping[str, Any]) -> list[bool]:
        from calrl.grading import grade

        refs = _column(kwargs, self.config.reference_column, len(parsed), self.__name__)
        choices_col = self.config.choices_column
        choices = list(kwargs[choices_col]) if choices_col and choices_col in kwargs else [None] * len(parsed)
        out = []
        for p, ref, ch in zip(parsed, refs, choices, strict=True):
            references = _references(ref)
            if p.abstained or not p.answer or not references:
                out.append(False)
            else:
                out.append(bool(grade(p.answer, references, choices=list(ch) if ch else None,
                                      grader=self.config.grader)))
        return out

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any],
                 **kwargs: Any) -> list[float | None]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.__name__})"


class CorrectnessRewardFunc(RewardFunc):
    """1.0 when the answer grades correct against the reference column, else 0.0 (abstentions 0.0)."""

    name = "correctness"

    def __call__(self, prompts, completions, **kwargs):
        parsed = self._parse(completions)
        return [1.0 if c else 0.0 for c in self._correct(parsed, kwargs)]


class ScoringRuleRewardFunc(RewardFunc):
    """A proper scoring rule (``brier`` or ``log_score``) on the stated confidence and the correctness."""

    def __init__(self, config: RewardFuncsConfig, rule: str) -> None:
        if rule not in SCORING_RULES:
            raise ConfigError(f"unknown scoring rule {rule!r}", field="reward_funcs")
        self.name = rule
        super().__init__(config)
        self.skip_abstentions = "abstention" in config.reward_funcs

    def _score(self, q: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
        if self.name == "brier":
            return scoring_rules.brier_reward(q, correct)
        return scoring_rules.log_score_reward(q, correct, eps=self.config.log_score_eps)

    def __call__(self, prompts, completions, **kwargs):
        parsed = self._parse(completions)
        correct = self._correct(parsed, kwargs)
        policy = self.config.missing_confidence
        rewards: list[float | None] = []
        n_missing = n_answers = 0
        for p, c in zip(parsed, correct, strict=True):
            if p.abstained and self.skip_abstentions:
                rewards.append(None)
                continue
            n_answers += 1
            q = p.confidence
            if q is None:
                n_missing += 1
                if policy == "exclude":
                    rewards.append(None)
                    continue
                q = 0.5 if policy == "half" else (0.0 if c else 1.0)
            rewards.append(float(self._score(torch.tensor(q, dtype=torch.float64), torch.tensor(c))))
        log_metric: Callable[[str, float], None] | None = kwargs.get("log_metric")
        if log_metric is not None:
            # TRL gathers each logged key across processes, so every rank logs the same keys on every call
            # (a key logged on one rank only would deadlock the gather); undefined values are NaN.
            stated = [p.confidence for p in parsed if p.confidence is not None]
            log_metric("confidence/missing_rate", n_missing / n_answers if n_answers else float("nan"))
            log_metric("confidence/mean_stated", sum(stated) / len(stated) if stated else float("nan"))
        return rewards


class AbstentionRewardFunc(RewardFunc):
    """The configured value for an abstention, 0.0 for an answer."""

    name = "abstention"

    def __call__(self, prompts, completions, **kwargs):
        parsed = self._parse(completions)
        log_metric = kwargs.get("log_metric")
        if log_metric is not None:  # every rank logs the key on every call (see ScoringRuleRewardFunc)
            log_metric("abstention/rate", sum(p.abstained for p in parsed) / len(parsed) if parsed else float("nan"))
        return [float(self.config.abstention_reward) if p.abstained else 0.0 for p in parsed]


class FormatRewardFunc(RewardFunc):
    """1.0 when the completion has an answer and an explicit, parsable confidence statement, else 0.0."""

    name = "format"

    def __call__(self, prompts, completions, **kwargs):
        parsed = self._parse(completions)
        return [1.0 if p.answer and p.confidence_source == "explicit" else 0.0 for p in parsed]


def build_reward_funcs(config: RewardFuncsConfig | Any) -> tuple[list[RewardFunc], list[float]]:
    """The reward functions named in ``config.reward_funcs`` and their weights, in the same order.

    ``config`` is a :class:`RewardFuncsConfig` or any object carrying the same attributes (for example
    ``CalibratedGRPOConfig``).
    """
    cfg = config if isinstance(config, RewardFuncsConfig) else RewardFuncsConfig.from_object(config)
    cfg.validate_reward_options()
    funcs: list[RewardFunc] = []
    for name in cfg.reward_funcs:
        if name == "correctness":
            funcs.append(CorrectnessRewardFunc(cfg))
        elif name in SCORING_RULES:
            funcs.append(ScoringRuleRewardFunc(cfg, name))
        elif name == "abstention":
            funcs.append(AbstentionRewardFunc(cfg))
        else:
            funcs.append(FormatRewardFunc(cfg))
    return funcs, cfg.weights()
