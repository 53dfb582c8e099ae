"""From prediction records to resolved items: parse the stated confidence, detect abstention and grade each
answer (:func:`resolve_records`), a distinct text or group of equal records once (:class:`TextMemo`,
:func:`group_records`). Given fields always win over derived ones."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from typing import Any

from calrl.confidence import ConfidenceReader, detect_hedge, extract_answer, is_abstention
from calrl.confidence.reading import DEFAULT_PARSER
from calrl.data.columns import PredictionColumns
from calrl.data.records import PredictionRecord, ResolvedRecord
from calrl.errors import InputError
from calrl.grading import DEFAULT_GRADER, get_grader, grade


def resolve_records(records: Iterable[PredictionRecord], *, use_hedges: bool = True,
                    grader: str = DEFAULT_GRADER, confidence_parser: str = DEFAULT_PARSER) -> list[ResolvedRecord]:
    """Parse, detect and grade each record; given fields always win over derived ones.

    confidence: given > explicit statement in the response > hedge phrase (``use_hedges``) > missing.
    abstained: given > ``is_abstention(response)``; an item given as correct is an answer.
    correct: given > ``grade(extract_answer(response), reference, choices=..., grader=...)``; an
    abstention is never correct and its confidence is dropped (source ``"abstained"``). The resolved record
    shares the slice mapping of its prediction record (not copied: 10^6 items would hold two copies).
    ``confidence_parser``: ``calrl`` or ``reference`` (the paper's evaluation rules), through
    :class:`calrl.confidence.ConfidenceReader`.
    """
    memo = TextMemo(ConfidenceReader(confidence_parser, purpose="eval", use_hedges=use_hedges), grader)
    return [resolve_record(rec, memo=memo) for rec in records]


#: Most distinct texts (and graded answers) whose results a :class:`TextMemo` keeps.
MAX_MEMO = 1 << 16
_UNSEEN = object()


class TextMemo:
    """What a response text alone decides (hedge, abstention, extracted answer, stated confidence) and the
    grade of an (answer, references, choices) triple, each worked out once per distinct value.

    An eval file of 10^6 answers often holds far fewer distinct texts (short answers, letters, numbers):
    these steps were most of ``calrl eval --predictions``' time. The functions are pure, so a kept result
    is the one a new call would give; up to :data:`MAX_MEMO` values are kept per step (an answer after that
    is worked out each time). Grades are kept only for calrl's own graders (a registered grader may count
    its calls or keep state).
    """

    def __init__(self, reader: ConfidenceReader, grader: str = DEFAULT_GRADER) -> None:
        self.reader, self.grader = reader, grader
        self._keep_grades: bool | None = None  # known at the first grade (an unknown grader fails there)
        self._hedged: dict[str, bool] = {}
        self._abstains: dict[str, bool] = {}
        self._answers: dict[str, str] = {}
        self._reads: dict[str, tuple[float | None, str]] = {}
        self._grades: dict[tuple[Any, ...], bool] = {}

    @staticmethod
    def _kept(table: dict, key: Any, compute: Any, arg: Any) -> Any:
        value = table.get(key, _UNSEEN)
        if value is _UNSEEN:
            value = compute(arg)
            if len(table) < MAX_MEMO:
                table[key] = value
        return value

    def hedged(self, response: str) -> bool:
        return self._kept(self._hedged, response, _is_hedged, response)

    def abstains(self, response: str) -> bool:
        return self._kept(self._abstains, response, is_abstention, response)

    def answer(self, response: str) -> str:
        return self._kept(self._answers, response, extract_answer, response)

    def read(self, response: str) -> tuple[float | None, str]:
        return self._kept(self._reads, response, self._read, response)

    def _read(self, response: str) -> tuple[float | None, str]:
        parsed = self.reader.read(response)
        return parsed.value, parsed.source

    def keeps_grades(self) -> bool:
        """Whether grades are kept (calrl's own graders): then a record's resolution depends only on its
        :func:`group_key`. InputError for an unknown grader."""
        if self._keep_grades is None:
            self._keep_grades = getattr(get_grader(self.grader), "__module__", None) == "calrl.grading.graders"
        return self._keep_grades

    def grade(self, answer: str, reference: list[str], choices: list[str] | None) -> bool:
        if not self.keeps_grades():
            return bool(grade(answer, reference, choices=choices, grader=self.grader))
        key = (answer, tuple(reference), None if choices is None else tuple(choices))
        return self._kept(self._grades, key, self._grade, key)

    def _grade(self, key: tuple[Any, ...]) -> bool:
        answer, reference, choices = key
        return bool(grade(answer, list(reference), choices=None if choices is None else list(choices),
                          grader=self.grader))


def _is_hedged(response: str) -> bool:
    return detect_hedge(response) is not None


def resolve_record(rec: PredictionRecord, *, reader: ConfidenceReader | None = None,
                   grader: str = DEFAULT_GRADER, memo: TextMemo | None = None) -> ResolvedRecord:
    """One record of :func:`resolve_records`, its confidence read by ``reader`` (or by the ``memo``'s reader
    and graded with its grader, when a memo shared by many records is given)."""
    if memo is None:
        if reader is None:
            raise TypeError("resolve_record needs a reader or a memo")
        memo = TextMemo(reader, grader)
    response = rec.response
    hedged = bool(response) and memo.hedged(response)

    if rec.abstained is not None:
        abstained = rec.abstained
        if abstained and rec.correct:
            raise InputError(f"id {rec.id!r}: 'abstained' and 'correct' are both true; an abstention "
                             "is never a correct answer")
    elif rec.correct is True:
        abstained = False
    else:
        abstained = bool(response) and memo.abstains(response)

    if abstained:
        return ResolvedRecord(id=rec.id, abstained=True, correct=False, confidence=None,
                              confidence_source="abstained", hedged=hedged, slice=rec.slice, samples=rec.samples,
                              answer=None, response=response, reference=rec.reference)
    answer = memo.answer(response) if response is not None else None
    if answer and rec.reference:  # a right answer holds its reference's string, not an equal copy (memory)
        answer = next((ref for ref in rec.reference if ref == answer), answer)

    if rec.confidence is not None:
        confidence, source = float(rec.confidence), "given"
    elif response is not None:
        confidence, source = memo.read(response)
    else:
        confidence, source = None, "missing"

    if rec.correct is not None:
        correct = bool(rec.correct)
    else:
        if not rec.reference:
            raise InputError(f"id {rec.id!r}: no 'reference' to grade the response against "
                             "(give 'reference' or 'correct')")
        correct = memo.grade(answer or "", rec.reference, rec.choices)

    return ResolvedRecord(id=rec.id, abstained=False, correct=correct, confidence=confidence,
                          confidence_source=source, hedged=hedged, slice=rec.slice, samples=rec.samples,
                          answer=answer, response=response, reference=rec.reference)


def group_records(table: PredictionColumns) -> list[int]:
    """Records that resolve alike, grouped: each record's group, named by the index of its first record.

    A group's records are equal in every field but the id, question and prompt: the same response (text),
    given confidence, correctness and abstention, and the very same reference, choices, samples and slice
    objects (:func:`calrl.eval.loading.iter_predictions` shares equal ones). Resolved with a memo that keeps
    grades (:meth:`TextMemo.keeps_grades`), they resolve to records equal but for the id, and are written
    alike (:meth:`calrl.jsonio.JsonRows.write_grouped`). An error of :func:`resolve_record` depends only on
    these fields, so the group's first record is the first record that has it.
    """
    confidences = table["confidence"]
    if 0.0 in confidences:  # 0.0 and -0.0 are equal keys but written differently
        confidences = [(c, math.copysign(1.0, c)) if c == 0.0 else c for c in confidences]
    parts = [table["response"], confidences, table["correct"], table["abstained"],
             *(list(map(id, table[name])) for name in ("reference", "choices", "samples", "slice"))]
    if not len(table):
        return []
    # a part the same for every record (a field no line gives, one slice for all) tells no group apart
    parts = [part for part in parts if part.count(part[0]) != len(part)]
    if not parts:
        return [0] * len(table)
    first: dict[Any, int] = {}
    return list(map(first.setdefault, zip(*parts) if len(parts) > 1 else parts[0], itertools.count()))
