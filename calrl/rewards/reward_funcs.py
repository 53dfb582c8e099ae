"""TRL reward functions for GRPOTrainer and RLOOTrainer, made from the reward terms of :mod:`calrl.rewards.terms`.

TRL calls each reward function as ``f(prompts=..., completions=..., **dataset_columns)`` and expects one
float (or ``None``: "not scored by this function") per completion; it logs ``rewards/<__name__>/mean|std``
and sums the rewards with ``reward_weights``. Completions are plain strings or, for conversational datasets,
lists of message dicts.

The rewards are the registered terms that have a value of their own per completion
(:meth:`~calrl.rewards.term_base.RewardTerm.values`): ``correctness``, ``brier``, ``log_score``, ``abstention``,
``format`` or any term registered with one. A recipe names them either TRL style, with their weights::

    rewards:
      - {name: brier}
      - {name: abstention, value: 0.3, weight: 1.0}

or with the earlier keys, ``reward_funcs: [brier, abstention]`` and ``reward_weights: [1.0, 1.0]``. Either way
:meth:`RewardFuncsConfig.reward_specs` (the one place the earlier keys become terms) gives each term the options
the recipe leaves out from the config's keys: ``missing_confidence`` (a scoring rule's ``missing``),
``log_score_eps`` (``eps``), ``grader``, ``abstention_reward`` (the abstention's ``value``); and a scoring rule
skips abstentions (``None``) exactly when ``abstention`` is among the rewards, else an abstention is scored as a
wrong answer. Terms that transform PPO's running score (``rm``, ``clamp``, ``ppo_c``, ``missing_penalty``) are
refused with the reason: TRL sums weighted rewards.

- ``correctness``: 1 if the answer grades correct against the reference column, else 0 (abstentions 0).
- ``brier``: RLCR, ``1[correct] - (q - 1[correct])^2`` on the stated confidence q (it contains the
  correctness term already).
- ``log_score``: ``log q`` if correct else ``log(1 - q)`` (q clipped); pair it with ``correctness``.
- ``abstention``: the configured value for an abstention ("I don't know", a clarifying question), 0 otherwise.
- ``format``: 1 if the completion has an answer and an explicit parsable confidence statement, else 0.

With honest confidence q = p, ``brier`` earns p^2 in expectation, so abstaining with value v is optimal
exactly when p < sqrt(v); with ``correctness`` alone it is optimal when p < v. A response without a confidence
is scored by ``missing_confidence`` (one vocabulary with PPO and eval: :mod:`calrl.confidence.missing`):
``half`` (q = 0.5), ``worst`` (q = 0 if correct, 1 if wrong) or ``exclude`` (``None``), and counted
(``confidence/missing_rate`` through TRL's ``log_metric``). ``confidence_parser`` (``calrl`` or ``reference``:
the paper's training regex) is the one confidence-reading step, :class:`calrl.confidence.ConfidenceReader` with
``purpose="reward"``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Any

import torch

from calrl.confidence import ConfidenceReader, extract_answer, is_abstention
from calrl.confidence.missing import SCORING_RULE_MISSING, check_missing_policy
from calrl.confidence.reading import check_parser
from calrl.errors import ConfigError, InputError, did_you_mean
from calrl.grading import get_grader
from calrl.rewards import terms as reward_terms
from calrl.rewards.correctness import grade_completions, reference_list
from calrl.rewards.terms import RewardTerm, RolloutBatch, build_reward_terms

REWARD_NAMES = ("correctness", "brier", "log_score", "abstention", "format")
SCORING_RULES = ("brier", "log_score")
DEFAULT_REWARDS = ("brier",)
MISSING_CONFIDENCE_POLICIES = SCORING_RULE_MISSING
#: a term option the recipe leaves out -> the config key that gives it (for every term that takes the option)
OPTION_KEYS = {"missing": "missing_confidence", "eps": "log_score_eps", "grader": "grader"}

__all__ = [
    "MISSING_CONFIDENCE_POLICIES",
    "REWARD_NAMES",
    "SCORING_RULES",
    "ParsedCompletion",
    "RewardFuncsConfig",
    "TermRewardFunc",
    "build_reward_funcs",
    "completion_batch",
    "completion_text",
    "parse_completion",
]


def summable_terms() -> list[str]:
    """The registered terms with a value of their own per completion (usable by GRPO/RLOO), in registry order."""
    return [name for name, cls in reward_terms.REWARD_TERMS.items() if cls.per_completion()]


@dataclass
class RewardFuncsConfig:
    """Which calibration rewards to use and how they read the completions and the dataset."""

    reward_funcs: list[str] | None = field(
        default=None,
        metadata={"help": f"Reward functions by name, any of {', '.join(REWARD_NAMES)} or another registered "
                          f"per-completion term (default: {', '.join(DEFAULT_REWARDS)}); or list them under rewards."},
    )
    reward_weights: list[float] | None = field(
        default=None, metadata={"help": "One weight per reward function (default: 1.0 each)."}
    )
    rewards: list | None = field(
        default=None,
        metadata={"help": "The reward terms (calrl.rewards.terms) TRL style, each with its options and TRL's weight, "
                          "e.g. [{name: brier}, {name: abstention, value: 0.3, weight: 1.0}]; in place of "
                          "reward_funcs and reward_weights."},
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
        on commas first. Once valid, ``reward_funcs`` and ``reward_weights`` name the terms of ``rewards`` and
        their weights when the recipe lists them there (``reward_funcs`` is ``[brier]`` when neither is given).
        """
        if isinstance(self.reward_funcs, str):
            self.reward_funcs = [name.strip() for name in self.reward_funcs.split(",") if name.strip()]
        entries = self._entries()
        self._check_keys()
        specs = self.reward_specs()
        terms = build_reward_terms([entry for entry, _ in specs])
        for i, term in enumerate(terms):
            term.check_per_completion()
            if "references" in term.needs and "grader" in term.options:
                _check_grader(term.grader, "grader" if self.rewards is None else f"rewards[{i}].grader")
        names, weights = [entry["name"] for entry, _ in entries], [w for _, w in entries]
        if self.rewards is not None:
            if self.reward_funcs is not None and list(self.reward_funcs) != names:
                raise ConfigError(f"give the rewards under 'rewards' or as reward_funcs {self.reward_funcs}, not both",
                                  field="reward_funcs")
            if self.reward_weights is not None and [float(w) for w in self.reward_weights] != weights:
                raise ConfigError("give the weights in the 'rewards' entries or as reward_weights, not both",
                                  field="reward_weights")
            self.reward_funcs, self.reward_weights = names, weights
        elif self.reward_funcs is None:
            self.reward_funcs = list(DEFAULT_REWARDS)

    def _check_keys(self) -> None:
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
            _check_grader(self.grader, "grader")

    def _entries(self) -> list[tuple[dict[str, Any], float]]:
        """The rewards as given (``rewards``, else ``reward_funcs`` with ``reward_weights``): each entry without its
        weight, and the weight; names, options and weights checked (a :class:`ConfigError` naming the field)."""
        if self.rewards is None:
            names = list(self.reward_funcs) if self.reward_funcs is not None else list(DEFAULT_REWARDS)
            if not names:
                raise ConfigError("at least one reward function is needed", field="reward_funcs")
            for name in names:
                _summable(name, "reward_funcs")
            if len(set(names)) != len(names):
                raise ConfigError(f"duplicate reward function in {names}", field="reward_funcs")
            if self.reward_weights is None:
                return [({"name": name}, 1.0) for name in names]
            if len(self.reward_weights) != len(names):
                raise ConfigError(f"{len(self.reward_weights)} weights for {len(names)} reward functions",
                                  field="reward_weights")
            if not all(isinstance(w, int | float) and math.isfinite(w) for w in self.reward_weights):
                raise ConfigError(f"weights must be finite numbers, got {self.reward_weights}",
                                  field="reward_weights")
            return [({"name": name}, float(w)) for name, w in zip(names, self.reward_weights, strict=True)]
        if not isinstance(self.rewards, list | tuple) or not self.rewards:
            raise ConfigError(f"must be a non-empty list of terms ({{name: ..., weight: ...}}), got {self.rewards!r}",
                              field="rewards")
        entries = [_entry(i, spec) for i, spec in enumerate(self.rewards)]
        names = [entry["name"] for entry, _ in entries]
        duplicate = next((n for i, n in enumerate(names) if n in names[:i]), None)
        if duplicate is not None:
            raise ConfigError(f"the {duplicate} term is listed twice (TRL logs each reward under its name)",
                              field=f"rewards[{names.index(duplicate, names.index(duplicate) + 1)}].name")
        return entries

    def reward_specs(self) -> list[tuple[dict[str, Any], float]]:
        """The reward terms as recipe entries with every option the config decides, and their TRL weights, in
        order: the one place the earlier keys (``reward_funcs``, ``reward_weights``, ``missing_confidence``,
        ``log_score_eps``, ``grader``, ``abstention_reward``) become terms. An option an entry gives wins."""
        entries = self._entries()
        abstains = any(entry["name"] == "abstention" for entry, _ in entries)
        for entry, _ in entries:
            options = reward_terms.REWARD_TERMS[entry["name"]].options
            for option, key in OPTION_KEYS.items():
                if option in options:
                    entry.setdefault(option, getattr(self, key))
            if "abstentions" in options:
                entry.setdefault("abstentions", "skip" if abstains else "score")
            if entry["name"] == "abstention":
                entry.setdefault("value", self.abstention_reward)
        return entries

    def reward_terms(self) -> list[RewardTerm]:
        """The reward terms, built."""
        return build_reward_terms([entry for entry, _ in self.reward_specs()])

    def weights(self) -> list[float]:
        """The weight of each reward function, in order (1.0 each when not given)."""
        return [w for _, w in self._entries()]

    @property
    def calibration_rewards(self) -> list[str]:
        """The rewards that score the stated confidence against the graded answer (proper scoring rules)."""
        return [entry["name"] for entry, _ in self._entries()
                if {"references", "confidences"} <= reward_terms.REWARD_TERMS[entry["name"]].needs]

    @property
    def uses_calibration_reward(self) -> bool:
        """True when a proper scoring rule on the stated confidence is among the rewards."""
        return bool(self.calibration_rewards)

    @property
    def uses_reference(self) -> bool:
        return any("references" in reward_terms.REWARD_TERMS[entry["name"]].needs for entry, _ in self._entries())

    @classmethod
    def from_object(cls, obj: Any) -> RewardFuncsConfig:
        """Take the reward options from any object or mapping with the same attribute names."""
        get = obj.get if isinstance(obj, Mapping) else lambda k, d: getattr(obj, k, d)
        return cls(**{f.name: get(f.name, getattr(cls(), f.name)) for f in fields(cls)})


def _check_grader(name: Any, field_name: str) -> None:
    try:
        get_grader(name)
    except (InputError, KeyError) as exc:
        raise ConfigError(str(exc).removeprefix("field 'grader': "), field=field_name) from exc


def _summable(name: Any, field_name: str) -> type[RewardTerm]:
    """The registered per-completion term called ``name``; else a one-line :class:`ConfigError` on ``field_name``."""
    cls = reward_terms.REWARD_TERMS.get(name) if isinstance(name, str) else None
    allowed = summable_terms()
    if cls is None:
        raise ConfigError(f"unknown reward {name!r}; choose from {', '.join(allowed)}{did_you_mean(name, allowed)}",
                          field=field_name)
    if not cls.per_completion():
        raise ConfigError(f"the {name} term {cls.transforms}: GRPO and RLOO sum weighted per-completion rewards "
                          f"(TRL), so it cannot be one of them; choose from {', '.join(allowed)}", field=field_name)
    return cls


def _entry(i: int, spec: Any) -> tuple[dict[str, Any], float]:
    """One ``rewards`` entry (a term name or ``{name: ..., weight: ..., option: ...}``) and its weight."""
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise ConfigError(f"must be a term name or a mapping with a 'name', got {spec!r}", field=f"rewards[{i}]")
    entry = dict(spec)
    cls = _summable(entry["name"], f"rewards[{i}].name")
    weight = entry.pop("weight", 1.0)
    allowed = ["weight", *cls.options]
    unknown = [key for key in entry if key != "name" and key not in allowed]
    if unknown:
        raise ConfigError(f"unknown option {unknown[0]!r} of the {cls.name} term; it takes {', '.join(allowed)}"
                          + did_you_mean(unknown[0], allowed), field=f"rewards[{i}]")
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
        raise ConfigError(f"must be a finite number, got {weight!r}", field=f"rewards[{i}].weight")
    return entry, float(weight)


# ------------------------------------------------------------------------------------------- reading a call
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
    parsed = ConfidenceReader(parser, purpose="reward", use_hedges=use_hedges).read(text)
    return ParsedCompletion(answer=extract_answer(text).strip(), confidence=parsed.value,
                            confidence_source=parsed.source, abstained=bool(is_abstention(text)))


_CALL_KEYS = ("trainer_state", "log_extra", "log_metric", "completion_ids", "environments")


def _column(columns: Mapping[str, Any], column: str, n: int, reward_name: str) -> list[Any]:
    if column not in columns:
        available = sorted(k for k in columns if k not in _CALL_KEYS)
        raise ConfigError(f"reward {reward_name!r} needs the dataset column {column!r}; the dataset has "
                          f"{available}", field="reference_column")
    values = list(columns[column])
    if len(values) != n:
        raise ValueError(f"column {column!r} has {len(values)} values for {n} completions")
    return values


def _no_reward_model(rows: list[int], texts: list[str]) -> torch.Tensor:
    raise ConfigError("no reward model scores GRPO/RLOO completions", field="rewards")


def completion_batch(term: RewardTerm, prompts: Sequence[Any], completions: Sequence[Any],
                     columns: Mapping[str, Any], config: RewardFuncsConfig) -> RolloutBatch:
    """One call of a TRL reward function as the ``term`` sees it: a :class:`RolloutBatch` of the completions' texts,
    each read once (its answer, stated confidence in float64, abstention, whether the confidence is explicit), the
    reference column when the term needs references (each cell as a list of strings), graded the GRPO/RLOO way
    (:func:`calrl.rewards.correctness.grade_completions`, with the choices column when the dataset has one)."""
    texts = [completion_text(c) for c in completions]
    parsed = [parse_completion(t, config.use_hedges, config.confidence_parser) for t in texts]
    n = len(texts)
    references = ([reference_list(cell) for cell in _column(columns, config.reference_column, n, term.name)]
                  if "references" in term.needs else None)
    name = config.choices_column
    choices = list(columns[name]) if name and name in columns else [None] * n
    answers = [p.answer for p in parsed]
    abstained = [p.abstained for p in parsed]
    grader = getattr(term, "grader", config.grader)

    def grade(responses: list[str], refs: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        return grade_completions(answers, refs, choices, abstained, grader)

    return RolloutBatch(
        prompts=list(prompts), responses=texts, references=references,
        confidence=torch.tensor([math.nan if p.confidence is None else p.confidence for p in parsed],
                                dtype=torch.float64),
        stripped=texts, abstained=torch.tensor(abstained, dtype=torch.bool), missing_policy=config.missing_confidence,
        update=False, rm_fn=_no_reward_model, all_sum=lambda v: v, check_finite=lambda values, what: None,
        grader=grade, explicit=torch.tensor([p.confidence_source == "explicit" for p in parsed], dtype=torch.bool),
        answers=answers)


class TermRewardFunc:
    """A per-completion reward term as a TRL reward function: ``f(prompts=..., completions=..., **columns)`` gives
    the term's :meth:`~calrl.rewards.term_base.RewardTerm.values` of :func:`completion_batch` (NaN as ``None``) and
    logs the term's :meth:`~calrl.rewards.term_base.RewardTerm.completion_metrics` through ``log_metric``.
    Picklable; ``__name__`` is the term's name, so TRL logs ``rewards/<name>/mean``."""

    def __init__(self, term: RewardTerm, config: RewardFuncsConfig) -> None:
        self.term, self.config = term, config
        self.__name__ = term.name

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        batch = completion_batch(self.term, prompts, completions, kwargs, self.config)
        values = self.term.values(batch)
        if values.numel() != batch.n:
            raise ValueError(f"the {self.term.name} term gave {values.numel()} values for {batch.n} completions")
        log_metric = kwargs.get("log_metric")
        if log_metric is not None:
            for key, value in self.term.completion_metrics(batch).items():
                log_metric(key, value)
        return [None if math.isnan(v) else v for v in values.double().tolist()]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.__name__})"


def build_reward_funcs(config: RewardFuncsConfig | Any) -> tuple[list[TermRewardFunc], list[float]]:
    """The reward functions of ``config``'s rewards (``rewards``, or ``reward_funcs``) and their weights, in order.

    ``config`` is a :class:`RewardFuncsConfig` or any object carrying the same attributes (for example
    ``CalibratedGRPOConfig``).
    """
    cfg = config if isinstance(config, RewardFuncsConfig) else RewardFuncsConfig.from_object(config)
    cfg.validate_reward_options()
    return [TermRewardFunc(term, cfg) for term in cfg.reward_terms()], cfg.weights()
