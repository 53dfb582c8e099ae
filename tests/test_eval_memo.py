"""Resolving many answers works out each distinct text once (TextMemo), with the same results as item by item."""

from __future__ import annotations

import gc

from calrl.confidence import ConfidenceReader
from calrl.data.records import PredictionRecord
from calrl.eval.loading import gc_paused
from calrl.eval.resolving import MAX_MEMO, TextMemo, resolve_record, resolve_records
from calrl.grading import register_grader

RESPONSES = ["Paris. Confidence: 8", "I think it's Lyon.", "I don't know.", "42, about 70% sure", "B", "", None]


def _records(n: int) -> list[PredictionRecord]:
    return [PredictionRecord(id=str(i), response=RESPONSES[i % len(RESPONSES)],
                             reference=["Paris"] if i % 3 else ["42", "forty-two"],
                             choices=["Paris", "Lyon"] if i % 5 == 0 else None,
                             confidence=0.3 if i % 11 == 0 else None, correct=True if i % 13 == 0 else None)
            for i in range(n)]


def test_memo_gives_the_results_of_resolving_each_record_alone():
    records = [r for r in _records(200) if r.response is not None or r.correct is not None]
    reader = ConfidenceReader("calrl", purpose="eval", use_hedges=True)
    alone = [resolve_record(r, reader=reader) for r in records]  # a fresh memo per record
    assert resolve_records(records) == alone


def test_registered_graders_are_called_for_every_item():
    calls = []

    @register_grader("test_counting", overwrite=True)
    def counting(answer, references, *, choices=None):
        calls.append(answer)
        return answer == references[0]

    records = [PredictionRecord(id=str(i), response="Paris. Confidence: 8", reference=["Paris"]) for i in range(5)]
    assert all(r.correct for r in resolve_records(records, grader="test_counting"))
    assert calls == ["Paris"] * 5


def test_memo_keeps_at_most_max_memo_texts():
    memo = TextMemo(ConfidenceReader("calrl", purpose="eval"))
    for i in range(MAX_MEMO + 10):
        memo.answer(f"answer {i}")
    assert len(memo._answers) == MAX_MEMO
    assert memo.answer(f"answer {MAX_MEMO + 5}") == f"answer {MAX_MEMO + 5}"


def test_gc_paused_restores_the_collector_as_it_was():
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
