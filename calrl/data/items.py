"""The evaluation item: one question to put to a model, with its gold answer(s)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"  # option letters of multiple-choice items


@dataclass
class EvalItem:
    """One question to put to a model, with its gold answer(s)."""

    id: str
    question: str
    reference: list[str]
    choices: list[str] | None = None
    slice: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
