"""The prediction record: one evaluated item, as read from a predictions file or produced by generation."""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import Any

from calrl.jsonio import JsonRows


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
        row = {k: v for k in PREDICTION_FIELDS if (v := getattr(self, k)) is not None}
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
        return RESOLVED_ROWS.row(self)


#: The fields of a PredictionRecord, in order.
PREDICTION_FIELDS = tuple(f.name for f in fields(PredictionRecord))
# the columns of resolved.jsonl: every field of ResolvedRecord, in order, with the kind of value it holds
_RESOLVED_KINDS = {"id": "unique", "abstained": "flag", "correct": "flag", "confidence": "number",
                   "confidence_source": "text", "hedged": "flag", "slice": "shared", "samples": "shared",
                   "answer": "text", "response": "text", "reference": "shared"}
RESOLVED_ROWS = JsonRows("r", [(f.name, f"r.{f.name}", _RESOLVED_KINDS[f.name]) for f in fields(ResolvedRecord)],
                         group_from="abstained")
# the columns of samples.jsonl, calrl's names and, beside them where they mean the same, lm-evaluation-harness'
SAMPLE_ROWS = JsonRows("i, rec, res", [
    ("id", "rec.id", "unique"), ("doc_id", "i", "number"), ("prompt", "rec.prompt", "unique"),
    ("question", "rec.question", "unique"), ("choices", "rec.choices", "shared"),
    ("response", "rec.response", "text"),
    ("resps", "rec.response", "listed_twice"),
    ("reference", "rec.reference", "shared"), ("target", "rec.reference", "shared"),
    ("answer", "res.answer", "text"), ("filtered_resps", "res.answer", "listed"),
    ("confidence", "res.confidence", "number"), ("confidence_source", "res.confidence_source", "text"),
    ("abstained", "res.abstained", "flag"), ("correct", "res.correct", "flag"), ("hedged", "res.hedged", "flag"),
    ("slice", "res.slice", "shared"), ("samples", "rec.samples", "shared"),
], group_from="choices")


def sample_row(record: PredictionRecord, resolved: ResolvedRecord, doc_id: int = 0) -> dict[str, Any]:
    """One line of ``samples.jsonl``: an item as asked, answered, parsed and graded (:data:`SAMPLE_ROWS`).

    calrl's fields: ``id``, ``prompt`` (null for a predictions file), ``question``, ``choices``, ``response``,
    ``reference``, ``answer`` (parsed), ``confidence`` and ``confidence_source``, ``abstained``, ``correct``,
    ``hedged``, ``slice``, ``samples``; and lm-evaluation-harness' names for the same things, so its tooling
    reads the file: ``doc_id`` (the item's 0-based position), ``resps`` (``[[response]]``: one request, one
    response), ``filtered_resps`` (``[answer]``: the response after answer extraction) and ``target`` (the
    reference). Values are shared with the records, not copied.
    """
    return SAMPLE_ROWS.row(*next(sample_pairs([record], [resolved], start=doc_id)))


def sample_pairs(records: Iterable[PredictionRecord], resolved: Iterable[ResolvedRecord],
                 start: int = 0) -> Iterator[tuple[int, PredictionRecord, ResolvedRecord]]:
    """Each record's position (from ``start``) with the record and its resolved item (the rows of
    :data:`SAMPLE_ROWS`); ValueError if they do not pair."""
    if isinstance(records, Sequence) and isinstance(resolved, Sequence) and len(records) == len(resolved):
        ids = map(attrgetter("id"), records)
        wrong = next(itertools.compress(itertools.count(), map(operator.ne, ids, map(attrgetter("id"), resolved))),
                     None)
        if wrong is None:  # checked at C speed (10^6 items)
            return zip(itertools.count(start), records, resolved)
    return _pairs(records, resolved, start)


def _pairs(records: Iterable[PredictionRecord], resolved: Iterable[ResolvedRecord],
           start: int) -> Iterator[tuple[int, PredictionRecord, ResolvedRecord]]:
    for i, (record, item) in enumerate(zip(records, resolved, strict=True), start=start):
        if record.id != item.id:
            raise ValueError(f"record {record.id!r} paired with resolved item {item.id!r}")
        yield i, record, item
