"""The prediction record: one evaluated item, as read from a predictions file or produced by generation."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(slots=True)
class PredictionRecord:
    """One item of a predictions file (the schema of ``calrl eval --predictions``).

    ``confidence``, ``correct`` and ``abstained`` are the *given* overrides; ``None`` means "derive it"
    (parse the response, grade against ``reference``, detect abstention).
    """

    id: str
    response: str | None = None
    reference: list[str] | None = None
    confidence: float | None = None
    correct: bool | None = None
    abstained: bool | None = None
    slice: dict[str, str] = field(default_factory=dict)
    samples: list[str] | None = None
    question: str | None = None
    choices: list[str] | None = None
    prompt: str | None = None  # the prompt as sent to the model (chat template applied), when generated
    retries: int | None = None  # extra generations until a confidence was stated (the eval's retry rule)

    def to_json(self) -> dict[str, Any]:
        """The record's non-null fields (values shared, not copied: the row is for writing out)."""
        row = {k: v for k in _PREDICTION_FIELDS if (v := getattr(self, k)) is not None}
        if not row.get("slice"):
            row.pop("slice", None)
        return row


@dataclass(slots=True)
class ResolvedRecord:
    """A record after parsing, grading and abstention detection: what the metrics consume."""

    id: str
    abstained: bool
    correct: bool  # False for abstentions
    confidence: float | None  # None when missing (policy decides)
    confidence_source: str  # "given" | "explicit" | "hedge" | "missing" | "abstained"
    hedged: bool
    slice: dict[str, str] = field(default_factory=dict)
    samples: list[str] | None = None
    answer: str | None = None  # the answer extracted from the response and graded
    response: str | None = None
    reference: list[str] | None = None

    def to_json(self) -> dict[str, Any]:
        """One line of ``resolved.jsonl`` (every field; what ``calrl compare`` reads back).

        The values are shared, not copied (``dataclasses.asdict`` deep-copies, which was most of the cost
        of writing 10^6 rows); the row is for writing out, not for changing.
        """
        return {k: getattr(self, k) for k in _RESOLVED_FIELDS}


_PREDICTION_FIELDS = tuple(f.name for f in fields(PredictionRecord))
_RESOLVED_FIELDS = tuple(f.name for f in fields(ResolvedRecord))


def sample_row(record: PredictionRecord, resolved: ResolvedRecord) -> dict[str, Any]:
    """One line of ``samples.jsonl``: an item as asked, answered, parsed and graded.

    The fields, in the habit of lm-evaluation-harness' samples files: ``id``, ``prompt`` (null for a
    predictions file), ``question``, ``choices``, ``response``, ``reference``, ``answer`` (parsed),
    ``confidence`` and ``confidence_source``, ``abstained``, ``correct``, ``hedged``, ``slice``, ``samples``.
    """
    if record.id != resolved.id:
        raise ValueError(f"record {record.id!r} paired with resolved item {resolved.id!r}")
    return {
        "id": record.id, "prompt": record.prompt, "question": record.question, "choices": record.choices,
        "response": record.response, "reference": record.reference, "answer": resolved.answer,
        "confidence": resolved.confidence, "confidence_source": resolved.confidence_source,
        "abstained": resolved.abstained, "correct": resolved.correct, "hedged": resolved.hedged,
        "slice": dict(resolved.slice), "samples": record.samples,
    }
