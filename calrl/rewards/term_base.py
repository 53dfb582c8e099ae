"""The reward-term interface: what a reward term is, what it sees of a batch, and the registry.

The built-in terms and the builder live in :mod:`calrl.rewards.terms`, which is what recipes and users import.

A term serves two kinds of trainer. calrl's PPO applies the terms of a recipe in order to a running score
(:meth:`RewardTerm.apply`, :class:`~calrl.rewards.pipeline.RewardPipeline`). TRL's GRPO and RLOO sum weighted
per-completion rewards: a term with a value of its own for each completion (:meth:`RewardTerm.values`) becomes one
of their reward functions (:mod:`calrl.rewards.reward_funcs`); a term that transforms the running score (clamp,
ppo_c, ...) cannot, and says why in :attr:`RewardTerm.transforms`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from calrl.confidence import ConfidenceReader, extract_answer, is_abstention
from calrl.errors import ConfigError, TrainingFault, did_you_mean
from calrl.rewards.correctness import CorrectnessReward

References = Sequence[Sequence[str] | str | None]
NEEDS = ("texts", "references", "confidences", "rm")


@dataclass
class RolloutBatch:
    """One batch of rollouts (PPO) or completions (GRPO/RLOO) as the terms see it, and what the terms record.

    ``confidence`` is NaN where the response states none; ``stripped`` is the text the reward model reads
    (the response without its confidence statement when the pipeline strips); ``missing_policy`` is the
    pipeline's ``missing_confidence``. ``rm_fn(rows, stripped)`` scores the given rows with the reward model;
    ``all_sum`` sums a float64 vector over every process; ``check_finite(values, what)`` stops the run on a
    non-finite value. ``grader(responses, references)`` gives ``(correct, graded)``: how a response is graded is
    the batch builder's (PPO's pipeline: :meth:`calrl.rewards.correctness.CorrectnessReward.grade`; the GRPO/RLOO
    reward functions: :func:`calrl.rewards.correctness.grade_completions`). ``explicit`` is True where the
    confidence is stated explicitly rather than read from a hedge (None: every stated confidence is explicit);
    ``answers`` holds each response's extracted answer, stripped (None: extracted on first use).
    The terms fill ``rm_raw``, ``correct``, ``graded``, ``adjustment`` and ``average``.
    """

    prompts: Sequence[Any]
    responses: list[str]
    references: References | None
    confidence: torch.Tensor
    stripped: list[str]
    abstained: torch.Tensor
    missing_policy: str
    update: bool
    rm_fn: Callable[[list[int], list[str]], torch.Tensor]
    all_sum: Callable[[torch.Tensor], torch.Tensor]
    check_finite: Callable[[torch.Tensor, str], None]
    grader: Callable[[list[str], References], tuple[torch.Tensor, torch.Tensor]] | None = None
    distributed: bool = False
    explicit: torch.Tensor | None = None
    answers: list[str] | None = None
    rm_skip: torch.Tensor | None = None
    rm_raw: torch.Tensor | None = None
    correct: torch.Tensor | None = None
    graded: torch.Tensor | None = None
    adjustment: torch.Tensor | None = None
    average: float | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def of(cls, responses: Sequence[str], references: References | None = None, *,
           rm_scores: Sequence[float] | None = None, missing_policy: str = "half", update: bool = True) -> RolloutBatch:
        """A batch of one process read the way the pipeline reads it (calrl's parser, no stripping), for examples
        and tests: ``rm_scores`` are what the reward model would say of each row."""
        reader = ConfidenceReader("calrl", purpose="reward")
        parsed = [reader.read(r) for r in responses]
        scores = torch.tensor(list(rm_scores) if rm_scores is not None else [0.0] * len(responses))

        def check_finite(values: torch.Tensor, what: str) -> None:
            if not torch.isfinite(values).all():
                raise TrainingFault(f"non-finite {what} reward")

        return cls(prompts=[""] * len(responses), responses=list(responses), references=references,
                   confidence=torch.tensor([float("nan") if p.value is None else float(p.value) for p in parsed]),
                   stripped=list(responses), abstained=torch.tensor([is_abstention(r) for r in responses]),
                   missing_policy=missing_policy, update=update, rm_fn=lambda idx, texts: scores[idx],
                   all_sum=lambda v: v, check_finite=check_finite, grader=CorrectnessReward().grade,
                   explicit=torch.tensor([p.source == "explicit" for p in parsed], dtype=torch.bool))

    @property
    def n(self) -> int:
        return len(self.responses)

    @property
    def missing(self) -> torch.Tensor:
        return torch.isnan(self.confidence)

    def stated_explicitly(self) -> torch.Tensor:
        """True where the response states its confidence explicitly (``explicit``, else every stated one)."""
        return self.explicit if self.explicit is not None else ~self.missing

    def answer_texts(self) -> list[str]:
        """Each response's answer, ``extract_answer(response).strip()`` (computed once)."""
        if self.answers is None:
            self.answers = [extract_answer(r).strip() for r in self.responses]
        return self.answers

    def grade(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(correct, graded)`` bool tensors, graded once per batch by ``grader`` (none without references)."""
        if self.graded is None:
            if self.references is None or self.grader is None:
                self.correct = torch.zeros(self.n, dtype=torch.bool)
                self.graded = torch.zeros(self.n, dtype=torch.bool)
            else:
                self.correct, self.graded = self.grader(self.responses, self.references)
        return self.correct, self.graded


@dataclass(frozen=True)
class TermContext:
    """What building a term may need besides its own options: the reward model's stored statistics
    (:func:`calrl.reward_modeling.stats.stored_reward_stats`), the accelerator, PPO-C's micro-batch size
    under the reference's cadence, and the terms already built (a term may depend on an earlier one)."""

    rm_stats: dict[str, float] | None = None
    accelerator: Any = None
    average_chunk: int | None = None
    earlier: tuple[RewardTerm, ...] = ()
    model_loaded: bool = False  # False: checking a recipe before the reward model is loaded (no statistics yet)


class RewardTerm:
    """One reward term. Subclasses set ``name``, ``needs`` and ``options`` (the recipe keys they take, with their
    defaults) and override :meth:`apply` (PPO) and, when the term has a value of its own per completion,
    :meth:`values` (which makes it usable by GRPO/RLOO); the options arrive as attributes after ``check``.

    Example:
        >>> from calrl.rewards.terms import build_reward_terms
        >>> [t.name for t in build_reward_terms([{"name": "rm"}, {"name": "clamp", "value": 5}])]
        ['rm', 'clamp']
    """

    name: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset()
    options: ClassVar[dict[str, Any]] = {}
    additive: ClassVar[bool] = False  # adds a value to the score (rm, correctness, scoring rules)
    #: what the term does that a weighted sum of per-completion rewards cannot (why GRPO/RLOO refuse a term
    #: without :meth:`values`)
    transforms: ClassVar[str] = "transforms the running score"

    def __init__(self, context: TermContext | None = None, **options: Any) -> None:
        self.context = context or TermContext()
        for key, default in self.options.items():
            setattr(self, key, options.get(key, default))
        self.check()

    @classmethod
    def per_completion(cls) -> bool:
        """Whether the term has a value of its own per completion (it overrides :meth:`values`)."""
        return cls.values is not RewardTerm.values

    def check(self) -> None:
        """Validate the options (a :class:`ConfigError` naming ``rewards.<name>.<key>``)."""

    def check_per_completion(self) -> None:
        """Refuse an option that means nothing for a per-completion reward of GRPO/RLOO (a :class:`ConfigError`)."""

    def prepare(self, batch: RolloutBatch) -> None:
        """Called for every term before any ``apply`` (e.g. grading, deciding which rows the RM scores)."""

    def apply(self, batch: RolloutBatch, score: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def values(self, batch: RolloutBatch) -> torch.Tensor:
        """The term's own value for each row, whatever the running score: float64, NaN where the term does not
        score the row. A GRPO/RLOO reward function returns them (NaN as ``None``); a term that transforms the
        running score has none."""
        raise NotImplementedError(f"the {self.name} term {self.transforms}")

    def completion_metrics(self, batch: RolloutBatch) -> dict[str, float]:
        """What the term's GRPO/RLOO reward function logs through TRL's ``log_metric`` on every call. TRL gathers
        each logged key across processes, so every key is logged on every call (NaN where undefined)."""
        return {}

    def stat_sums(self, batch: RolloutBatch) -> dict[str, tuple[float, float]]:
        """``{metric: (sum, count)}`` of this batch; summed over processes and logged as sum / count."""
        return {}

    def state_dict(self) -> dict[str, Any] | None:
        return None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (a resumed run)."""

    def spec(self) -> dict[str, Any]:
        """The term as a recipe entry (every option, defaults included)."""
        return {"name": self.name, **{key: getattr(self, key) for key in self.options}}

    def _error(self, key: str, message: str) -> ConfigError:
        return ConfigError(message, field=f"rewards.{self.name}.{key}")

    def _number(self, key: str, *, positive: bool = False) -> float:
        value = getattr(self, key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or (
                positive and value <= 0):
            raise self._error(key, f"must be a {'positive' if positive else 'finite'} number, got {value!r}")
        return float(value)

    def _choice(self, key: str, allowed: Sequence[Any]) -> None:
        value = getattr(self, key)
        if value not in allowed:
            raise self._error(key, f"must be one of {', '.join(map(str, allowed))}, got {value!r}"
                              + did_you_mean(value, allowed))


REWARD_TERMS: dict[str, type[RewardTerm]] = {}


def register_reward_term(cls: type[RewardTerm]) -> type[RewardTerm]:
    """Class decorator: make ``cls`` available to recipes under ``cls.name``."""
    if not cls.name or cls.name in REWARD_TERMS:
        raise ValueError(f"a reward term needs a new name, got {cls.name!r}")
    if not set(cls.needs) <= set(NEEDS):
        raise ValueError(f"{cls.__name__}.needs must be a subset of {NEEDS}")
    REWARD_TERMS[cls.name] = cls
    return cls


def find_term(terms: Iterable[RewardTerm], name: str) -> RewardTerm | None:
    """The first term called ``name`` (None when there is none)."""
    return next((t for t in terms if t.name == name), None)
