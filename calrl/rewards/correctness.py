"""Rule-based correctness reward for verifiable tasks: grade the extracted answer against references."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from calrl.confidence import extract_answer
from calrl.errors import ConfigError
from calrl.grading import grade


def _default_extract(text: str) -> str:
    return extract_answer(text)


def _default_grade(answer: str, references: Sequence[str], grader: str) -> bool:
    return grade(answer, references, grader=grader)


@dataclass
class CorrectnessReward:
    """``correct_reward`` when ``grade(extract_answer(response), references)`` holds, else ``wrong_reward``.

    Items whose references are ``None`` (or empty) are not graded: ``graded`` is False for them.
    """

    correct_reward: float = 1.0
    wrong_reward: float = 0.0
    grader: str = "auto"
    extract: Callable[[str], str] = field(default=_default_extract, repr=False)
    grade_fn: Callable[[str, Sequence[str], str], bool] = field(default=_default_grade, repr=False)

    def __post_init__(self) -> None:
        if self.correct_reward <= self.wrong_reward:
            raise ConfigError(f"{self.correct_reward} must exceed wrong_reward {self.wrong_reward}",
                              field="correct_reward")

    def grade(self, responses: Sequence[str],
              references: Sequence[Sequence[str] | str | None]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(correct, graded)`` bool tensors; ``correct`` is False where ungraded."""
        if len(responses) != len(references):
            raise ValueError(f"{len(responses)} responses but {len(references)} reference lists")
        correct, graded = [], []
        for response, refs in zip(responses, references):
            if isinstance(refs, str):
                refs = [refs]
            if not refs:
                correct.append(False)
                graded.append(False)
                continue
            correct.append(bool(self.grade_fn(self.extract(response), list(refs), self.grader)))
            graded.append(True)
        return torch.tensor(correct, dtype=torch.bool), torch.tensor(graded, dtype=torch.bool)

    def rewards(self, correct: torch.Tensor) -> torch.Tensor:
        """Per-item reward from a bool ``correct`` tensor."""
        return torch.where(correct, torch.tensor(self.correct_reward), torch.tensor(self.wrong_reward))

    def __call__(self, responses: Sequence[str],
                 references: Sequence[Sequence[str] | str | None]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rewards, graded)``; rewards of ungraded items are 0."""
        correct, graded = self.grade(responses, references)
        return torch.where(graded, self.rewards(correct), torch.tensor(0.0)), graded


def reference_list(value: Any) -> list[str]:
    """A dataset's reference cell as a list of strings: none for ``None``, one for a string or a number, else each
    item."""
    if value is None:
        return []
    if isinstance(value, str | int | float):
        return [str(value)]
    return [str(v) for v in value]


def grade_completions(answers: Sequence[str], references: Sequence[Any], choices: Sequence[Any],
                      abstained: Sequence[bool], grader: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO/RLOO's grading of a call's completions: ``(correct, graded)``, every completion graded.

    A completion is correct when it does not abstain, its ``answer`` (``extract_answer(text).strip()``) is not
    empty, its reference cell (:func:`reference_list`) is not empty and ``calrl.grading.grade`` accepts the answer
    against the references, with the item's ``choices`` when it has some (multiple choice); anything else is wrong.
    (PPO's pipeline grades with :meth:`CorrectnessReward.grade` instead: ``extract_answer(response)``, no choices,
    abstentions graded like answers, a row without references ungraded.)
    """
    correct = []
    for answer, ref, options, abstains in zip(answers, references, choices, abstained, strict=True):
        refs = reference_list(ref)
        correct.append(not abstains and bool(answer) and bool(refs)
                       and bool(grade(answer, refs, choices=list(options) if options else None, grader=grader)))
    return torch.tensor(correct, dtype=torch.bool), torch.ones(len(correct), dtype=torch.bool)
