"""The reward terms of a response's own answer and stated confidence: ``abstention``, ``brier``, ``log_score`` and
``format`` (registered in :mod:`calrl.rewards.terms`, which re-exports them). Each has a value of its own per
response (:meth:`~calrl.rewards.term_base.RewardTerm.values`), so PPO adds it to the running score (abstention:
puts it in the score's place) and GRPO/RLOO use it as a reward function (:mod:`calrl.rewards.reward_funcs`).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from calrl.confidence.missing import SCORING_RULE_MISSING, check_missing_policy
from calrl.rewards import scoring_rules
from calrl.rewards.term_base import RewardTerm, RolloutBatch

ABSTENTION_HANDLING = ("skip", "score")


class AbstentionTerm(RewardTerm):
    """An abstention (``calrl.confidence.is_abstention``: "I don't know", a clarifying question) gets ``value``
    in place of its score; abstaining then pays exactly when P(correct) < (value - wrong) / (correct - wrong)
    (:func:`calrl.rewards.abstention.abstention_threshold`).

    Per completion (GRPO/RLOO, where TRL sums it with the other rewards): ``value`` for an abstention, 0 for an
    answer; its reward function logs ``abstention/rate``.

    Example:
        >>> from calrl.rewards.terms import AbstentionTerm, RolloutBatch
        >>> batch = RolloutBatch.of(["Paris. Confidence: 9", "I don't know."])
        >>> AbstentionTerm(value=0.3).apply(batch, torch.tensor([1.0, -2.0]))
        tensor([1.0000, 0.3000])
        >>> AbstentionTerm(value=0.3).values(batch)
        tensor([0.0000, 0.3000], dtype=torch.float64)
    """

    name = "abstention"
    needs = frozenset({"texts"})
    options: ClassVar[dict[str, Any]] = {"value": 0.0}

    def check(self) -> None:
        self._number("value")

    def apply(self, batch: RolloutBatch, score: torch.Tensor) -> torch.Tensor:
        return torch.where(batch.abstained, torch.full_like(score, float(self.value)), score)

    def values(self, batch: RolloutBatch) -> torch.Tensor:
        return torch.where(batch.abstained, torch.tensor(float(self.value), dtype=torch.float64),
                           torch.tensor(0.0, dtype=torch.float64))

    def completion_metrics(self, batch: RolloutBatch) -> dict[str, float]:
        return {"abstention/rate": int(batch.abstained.sum()) / batch.n if batch.n else math.nan}


class _ScoringRuleTerm(RewardTerm):
    """``weight`` x a proper scoring rule of the stated confidence q and the graded correctness, added to the
    score of each graded response (an ungraded one gets 0). ``missing`` (half, worst, exclude;
    :mod:`calrl.confidence.missing`) scores a response without a confidence. ``abstentions``: ``skip`` (an
    abstention gets 0 here, NaN per completion: PPO's behaviour and the default) or ``score`` (an abstention is
    scored like any graded response).

    How a response is graded is the batch's: PPO grades ``extract_answer(response)`` against its references and
    leaves a row without references ungraded; GRPO/RLOO grade ``extract_answer(text).strip()`` with the item's
    choices, every completion graded, an abstention as wrong
    (:func:`calrl.rewards.correctness.grade_completions`). GRPO/RLOO recipes set ``abstentions`` to ``skip`` when
    an ``abstention`` term is among their rewards and to ``score`` otherwise (an abstention is then scored as the
    wrong answer it is graded as), as their reward functions always have; ``weight`` there is TRL's reward weight
    and the term's own stays 1. Per completion the term's reward function logs ``confidence/missing_rate`` (among
    the responses it does not skip as abstentions) and ``confidence/mean_stated``."""

    additive = True
    needs = frozenset({"references", "confidences"})
    options: ClassVar[dict[str, Any]] = {"weight": 1.0, "missing": "half", "grader": "auto", "abstentions": "skip"}

    def check(self) -> None:
        self._number("weight")
        check_missing_policy(self.missing, SCORING_RULE_MISSING, field=f"rewards.{self.name}.missing")
        if not isinstance(self.grader, str):
            raise self._error("grader", f"must be a grader name, got {self.grader!r}")
        self._choice("abstentions", ABSTENTION_HANDLING)

    def rule(self, q: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _answered(self, batch: RolloutBatch) -> torch.Tensor:
        """The graded rows the rule scores unless their confidence is excluded (abstentions left out under skip)."""
        _, graded = batch.grade()
        return graded & ~batch.abstained if self.abstentions == "skip" else graded

    def values(self, batch: RolloutBatch) -> torch.Tensor:
        """The rule's value per row, NaN where it does not score (ungraded, a skipped abstention, excluded)."""
        correct, _ = batch.grade()
        q = batch.confidence.double()
        if self.missing == "half":
            q = torch.where(batch.missing, torch.full_like(q, 0.5), q)
        elif self.missing == "worst":
            q = torch.where(batch.missing, (~correct).double(), q)
        scored = self._answered(batch) & ~torch.isnan(q)
        values = self.rule(torch.where(scored, q, torch.full_like(q, 0.5)), correct)
        return torch.where(scored, values, torch.full_like(values, float("nan")))

    def apply(self, batch: RolloutBatch, score: torch.Tensor) -> torch.Tensor:
        values = self.values(batch)
        batch.extra[self.name] = values
        return score + float(self.weight) * torch.nan_to_num(values, nan=0.0).to(score.dtype)

    def stat_sums(self, batch: RolloutBatch) -> dict[str, tuple[float, float]]:
        values = batch.extra.get(self.name, self.values(batch))
        scored = ~torch.isnan(values)
        return {f"reward/{self.name}": (float(torch.nan_to_num(values, nan=0.0).sum()), float(scored.sum()))}

    def completion_metrics(self, batch: RolloutBatch) -> dict[str, float]:
        answered = self._answered(batch)
        n = int(answered.sum())
        stated = [c for c in batch.confidence.tolist() if not math.isnan(c)]
        return {"confidence/missing_rate": int((answered & batch.missing).sum()) / n if n else math.nan,
                "confidence/mean_stated": sum(stated) / len(stated) if stated else math.nan}


class BrierTerm(_ScoringRuleTerm):
    """RLCR's ``1[correct] - (q - 1[correct])^2`` (:func:`calrl.rewards.scoring_rules.brier_reward`). Options
    ``weight``, ``missing``, ``grader``, ``abstentions``, and how PPO and GRPO/RLOO differ (the grading, whether
    an abstention is scored): the scoring rules' base, ``_ScoringRuleTerm``.

    Example (correct at q = 0.9: 1 - 0.1^2; wrong at q = 0.2: 0 - 0.2^2):
        >>> from calrl.rewards.terms import BrierTerm, RolloutBatch
        >>> batch = RolloutBatch.of(["Paris. Confidence: 9", "Lyon. Confidence: 2"], [["Paris"], ["Paris"]])
        >>> BrierTerm().values(batch).to(torch.float32)
        tensor([ 0.9900, -0.0400])
    """

    name = "brier"

    def rule(self, q: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
        return scoring_rules.brier_reward(q, correct)


class LogScoreTerm(_ScoringRuleTerm):
    """``log q`` if correct else ``log(1 - q)``, q clipped to [eps, 1 - eps]
    (:func:`calrl.rewards.scoring_rules.log_score_reward`). The other options, and how PPO and GRPO/RLOO
    differ (the grading, whether an abstention is scored): the scoring rules' base, ``_ScoringRuleTerm``.

    Example (correct at q = 0.9: log 0.9; wrong at q = 0.2: log 0.8; half of each added to the score):
        >>> from calrl.rewards.terms import LogScoreTerm, RolloutBatch
        >>> batch = RolloutBatch.of(["Paris. Confidence: 9", "Lyon. Confidence: 2"], [["Paris"], ["Paris"]])
        >>> LogScoreTerm(weight=0.5).apply(batch, torch.zeros(2))
        tensor([-0.0527, -0.1116])
    """

    name = "log_score"
    options: ClassVar[dict[str, Any]] = {**_ScoringRuleTerm.options, "eps": 1e-3}

    def check(self) -> None:
        super().check()
        if not 0.0 < self._number("eps") < 0.5:
            raise self._error("eps", f"must be in (0, 0.5), got {self.eps}")

    def rule(self, q: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
        return scoring_rules.log_score_reward(q, correct, eps=float(self.eps))


class FormatTerm(RewardTerm):
    """``value`` for a response with an answer (``extract_answer(response).strip()`` not empty) and an explicit,
    parsable confidence statement (not one read from a hedge), else 0; added to the score.

    Example:
        >>> from calrl.rewards.terms import FormatTerm, RolloutBatch
        >>> batch = RolloutBatch.of(["Paris. Confidence: 9", "Paris.", "Confidence: 8"])
        >>> FormatTerm().values(batch)
        tensor([1., 0., 0.], dtype=torch.float64)
    """

    additive = True
    name = "format"
    needs = frozenset({"texts", "confidences"})
    options: ClassVar[dict[str, Any]] = {"value": 1.0}

    def check(self) -> None:
        self._number("value")

    def values(self, batch: RolloutBatch) -> torch.Tensor:
        answered = torch.tensor([bool(a) for a in batch.answer_texts()], dtype=torch.bool)
        return torch.where(answered & batch.stated_explicitly(), torch.tensor(float(self.value), dtype=torch.float64),
                           torch.tensor(0.0, dtype=torch.float64))

    def apply(self, batch: RolloutBatch, score: torch.Tensor) -> torch.Tensor:
        return score + self.values(batch).to(score.dtype)
