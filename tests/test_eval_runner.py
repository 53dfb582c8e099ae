"""The metrics runner: resolution of records and the metrics dict, against hand-computed small cases."""

from __future__ import annotations

import json
import math

import pytest

from calrl.data.records import PredictionRecord, ResolvedRecord
from calrl.errors import InputError
from calrl.eval.resolving import resolve_records
from calrl.eval.runner import answer_cluster_key, compute_metrics


def rr(id_, correct, confidence, *, abstained=False, hedged=False, slice_=None, samples=None, answer=None,
       source=None):
    return ResolvedRecord(id=id_, abstained=abstained, correct=correct, confidence=confidence,
                          confidence_source=source or ("abstained" if abstained else
                                                       "given" if confidence is not None else "missing"),
                          hedged=hedged, slice=slice_ or {}, samples=samples, answer=answer)


# six items: four scored answers, one abstention, one answer without confidence
SMALL = [
    rr("r1", True, 0.9, slice_={"domain": "a"}),
    rr("r2", False, 0.9, slice_={"domain": "a"}),
    rr("r3", True, 0.6, slice_={"domain": "b"}),
    rr("r4", False, 0.3, hedged=True, slice_={"domain": "b"}),
    rr("r5", False, None, abstained=True, slice_={"domain": "b"}),
    rr("r6", True, None, slice_={"domain": "b"}),
]


def test_small_case_by_hand_exclude():
    m = compute_metrics(SMALL, n_bins=15, missing_policy="exclude", min_slice_size=3, n_boot=50, seed=0)
    assert (m["n"], m["n_answered"], m["n_abstained"], m["n_scored"]) == (6, 5, 1, 4)
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["accuracy_answered"] == pytest.approx(3 / 5)
    assert m["refusal_rate"] == pytest.approx(1 / 6)
    # bins of width 1/15: 0.9 -> bin 13 (acc 1/2), 0.6 -> bin 9 (acc 1), 0.3 -> bin 4 (acc 0)
    assert m["ece"] == pytest.approx(2 / 4 * 0.4 + 1 / 4 * 0.4 + 1 / 4 * 0.3)
    assert m["mce"] == pytest.approx(0.4)
    assert m["brier"] == pytest.approx((0.01 + 0.81 + 0.16 + 0.09) / 4)
    assert m["mean_confidence"] == pytest.approx(2.7 / 4)
    assert m["auroc"] == pytest.approx((0.5 + 1 + 0 + 1) / 4)  # (0.9,0.6) positive vs (0.9,0.3) negative
    assert m["hedged_error_rate"] == pytest.approx(1 / 2)  # r4 hedged and < 0.5; r2 neither
    assert m["overconfident_error_rate"] == pytest.approx(1 / 2)  # r2 at 0.9
    assert m["missing_confidence"] == {"count": 1, "policy": "exclude"}
    assert m["confidence_sources"] == {"given": 4, "explicit": 0, "hedge": 0, "missing": 1, "abstained": 1}
    assert 0 <= m["smece"]["low"] <= m["smece"]["high"]
    counts = [b["count"] for b in m["reliability"]]
    assert len(counts) == 15 and sum(counts) == 4 and counts[13] == 2 and counts[9] == 1 and counts[4] == 1
    top = m["reliability"][13]
    assert top["mean_confidence"] == pytest.approx(0.9) and top["accuracy"] == pytest.approx(0.5)
    assert top["lower"] == pytest.approx(13 / 15) and top["upper"] == pytest.approx(14 / 15)
    assert m["reliability"][0]["accuracy"] is None  # empty bins have no accuracy
    json.dumps(m, allow_nan=False)


def test_small_case_half_policy():
    m = compute_metrics(SMALL, missing_policy="half", n_boot=0)
    assert m["n_scored"] == 5
    assert m["brier"] == pytest.approx((0.01 + 0.81 + 0.16 + 0.09 + 0.25) / 5)
    assert m["mean_confidence"] == pytest.approx(3.2 / 5)
    assert m["missing_confidence"] == {"count": 1, "policy": "half"}
    assert m["smece"]["low"] is None and m["smece"]["high"] is None and m["smece"]["value"] is not None


def test_error_policy_names_first_id_without_confidence():
    with pytest.raises(InputError, match="id 'r6' has no confidence"):
        compute_metrics(SMALL, missing_policy="error")
    compute_metrics(SMALL[:5], missing_policy="error", n_boot=0)  # the abstention needs none


def test_bad_settings():
    with pytest.raises(InputError, match="unknown missing-confidence policy"):
        compute_metrics(SMALL, missing_policy="zero")
    with pytest.raises(InputError, match="empty input"):
        compute_metrics([])


def test_slices_flag_small_and_match_subset_metrics():
    m = compute_metrics(SMALL, min_slice_size=3, n_boot=20)
    a, b = m["slices"]["domain"]["a"], m["slices"]["domain"]["b"]
    assert (a["n"], a["small"], b["n"], b["small"]) == (2, True, 4, False)
    assert a["accuracy"] == pytest.approx(1 / 2) and a["ece"] == pytest.approx(0.4)
    assert b["refusal_rate"] == pytest.approx(1 / 4) and b["n_scored"] == 2
    alone = compute_metrics(SMALL[2:], min_slice_size=3, n_boot=20)
    for key in ("accuracy", "ece", "brier", "auroc", "aurc", "mce", "mean_confidence"):
        assert b[key] == alone[key]


def test_exact_binning_of_discrete_confidences():
    recs = [rr(f"x{i}", True, c) for i, c in enumerate([0.1, 0.2, 0.3, 0.6, 0.7, 1.0])]
    m = compute_metrics(recs, n_bins=10, n_boot=0)
    filled = {round(b["lower"], 6): b["count"] for b in m["reliability"] if b["count"]}
    assert filled == {0.1: 1, 0.2: 1, 0.3: 1, 0.6: 1, 0.7: 1, 0.9: 1}  # 1.0 goes in the top bin


def test_all_abstained_gives_nulls_not_nan():
    recs = [rr("a", False, None, abstained=True), rr("b", False, None, abstained=True)]
    m = compute_metrics(recs, n_boot=10)
    assert m["refusal_rate"] == 1.0 and m["accuracy"] == 0.0 and m["accuracy_answered"] is None
    assert m["ece"] is None and m["auroc"] is None and m["reliability"] == []
    assert m["hedged_error_rate"] is None
    json.dumps(m, allow_nan=False)


def test_single_class_auroc_is_null():
    m = compute_metrics([rr("a", True, 0.8), rr("b", True, 0.4)], n_boot=0)
    assert m["auroc"] is None and m["brier"] == pytest.approx((0.04 + 0.36) / 2)


def test_seeded_bootstrap_is_reproducible():
    recs = [rr(str(i), i % 3 != 0, (i % 10) / 10) for i in range(60)]
    one = compute_metrics(recs, n_boot=40, seed=3)
    two = compute_metrics(recs, n_boot=40, seed=3)
    assert one["smece"] == two["smece"]


# ------------------------------------------------------------------------------------------ resolution
def test_resolve_precedence_and_abstention():
    records = [
        PredictionRecord(id="explicit", response="Paris. Confidence: 8", reference=["Paris"]),
        PredictionRecord(id="given", response="Paris. Confidence: 8", reference=["Paris"], confidence=0.3),
        PredictionRecord(id="hedge", response="Probably Lyon.", reference=["Paris"]),
        PredictionRecord(id="abstain", response="I don't know.", reference=["Paris"]),
        PredictionRecord(id="forced", response="I don't know.", reference=["Paris"], abstained=False),
        PredictionRecord(id="graded", response="Lyon. Confidence: 9", reference=["Paris"], correct=True),
        PredictionRecord(id="nocontent", correct=False, confidence=0.7),
        PredictionRecord(id="mc", response="The answer is B. Confidence: 6", reference=["B"],
                         choices=["red", "blue", "green"]),
        PredictionRecord(id="num", response="The answer is 1,000. Confidence: 70%", reference=["1000"]),
    ]
    got = {r.id: r for r in resolve_records(records)}
    assert (got["explicit"].confidence, got["explicit"].confidence_source, got["explicit"].correct) == \
        (pytest.approx(0.8), "explicit", True)
    assert (got["given"].confidence, got["given"].confidence_source) == (0.3, "given")
    h = got["hedge"]
    assert (h.confidence_source, h.hedged, h.correct, h.abstained) == ("hedge", True, False, False)
    assert 0 < h.confidence < 1
    a = got["abstain"]
    assert (a.abstained, a.correct, a.confidence, a.confidence_source) == (True, False, None, "abstained")
    assert got["forced"].abstained is False and got["forced"].correct is False
    assert got["graded"].correct is True and got["graded"].confidence == pytest.approx(0.9)
    assert got["nocontent"].correct is False and got["nocontent"].confidence == 0.7
    assert got["mc"].correct is True and got["mc"].confidence == pytest.approx(0.6)
    assert got["num"].correct is True and got["num"].confidence == pytest.approx(0.7)


def test_resolve_without_hedges():
    (r,) = resolve_records([PredictionRecord(id="h", response="Probably Paris.", reference=["Paris"])],
                           use_hedges=False)
    assert (r.confidence, r.confidence_source, r.hedged, r.correct) == (None, "missing", True, True)


def test_resolve_errors():
    with pytest.raises(InputError, match="id 'x'.*'reference'"):
        resolve_records([PredictionRecord(id="x", response="Paris. Confidence: 8")])
    with pytest.raises(InputError, match="id 'y'.*abstention is never a correct answer"):
        resolve_records([PredictionRecord(id="y", response="I don't know", abstained=True, correct=True)])


def test_end_to_end_resolution_feeds_metrics():
    records = [PredictionRecord(id=str(i), response=f"{i % 4}. Confidence: {i % 11}", reference=["1"],
                                slice={"parity": "even" if i % 2 == 0 else "odd"}) for i in range(40)]
    m = compute_metrics(resolve_records(records), n_boot=10)
    assert m["n"] == 40 and m["confidence_sources"]["explicit"] == 40
    assert m["accuracy"] == pytest.approx(10 / 40)
    assert m["slices"]["parity"]["even"]["accuracy"] == 0.0  # even i never ends in answer 1
    assert m["slices"]["parity"]["odd"]["n"] == 20


# ----------------------------------------------------------------------------------------- consistency
def test_cluster_keys():
    assert answer_cluster_key("Paris") == answer_cluster_key("paris.")
    assert answer_cluster_key("1,000") == answer_cluster_key("1000.0")
    assert answer_cluster_key("Paris") != answer_cluster_key("Lyon")


def test_consistency_signals():
    recs = [
        rr("a", True, 0.9, answer="Paris", samples=["Paris", "paris", "Lyon", "Paris."]),  # 3 of 4 agree
        rr("b", False, 0.9, answer="12", samples=["13", "14", "12.0", "15"]),  # 1 of 4 agrees
        rr("c", True, 0.5, answer="Oslo", samples=["Oslo", "Oslo", "Oslo", "Oslo"]),  # all agree
        rr("d", False, None, abstained=True, samples=["x", "y"]),  # abstentions are left out
    ]
    c = compute_metrics(recs, n_boot=0)["consistency"]
    assert c["n_items"] == 3 and c["mean_samples"] == 4
    assert c["agreement_rate"]["mean"] == pytest.approx((0.75 + 0.25 + 1.0) / 3)
    h_a = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    h_b = math.log(4)
    assert c["semantic_entropy"]["mean"] == pytest.approx((h_a + h_b + 0.0) / 3)
    assert c["agreement_rate"]["auroc"] == 1.0 and c["semantic_entropy"]["auroc"] == 1.0
    assert "consistency" not in compute_metrics(SMALL, n_boot=0)


def test_consistency_answer_outside_the_samples_agrees_with_none():
    recs = [rr("a", True, 0.9, answer="Rome", samples=["Paris", "Paris"]),
            rr("b", False, 0.2, answer="3", samples=["3", "4"])]
    c = compute_metrics(recs, n_boot=0)["consistency"]
    assert c["agreement_rate"]["mean"] == pytest.approx((0.0 + 0.5) / 2)
    assert c["agreement_rate"]["auroc"] == 0.0


def test_metrics_run_on_one_thread_and_restore_the_thread_count() -> None:
    """compute_results runs on one thread whatever torch's setting (metrics.json is then the same on every
    machine: a large sum split across threads changed the last digit) and restores the setting."""
    import json
    import random

    import torch

    from calrl.data.records import ResolvedRecord
    from calrl.eval.runner import compute_results

    rng = random.Random(0)
    items = []
    for i in range(50_000):  # with 2 threads, torch gave this Brier score a different last digit
        k = rng.randint(0, 10)
        items.append(ResolvedRecord(id=f"i{i}", abstained=False, correct=rng.random() < (k / 10) ** 1.5,
                                    confidence=k / 10, confidence_source="explicit", hedged=False,
                                    slice={"domain": "ab"[i % 2]}))
    before = torch.get_num_threads()
    outputs = []
    try:
        for threads in (2, 1):
            torch.set_num_threads(threads)
            outputs.append(json.dumps(compute_results(items, n_boot=10).to_json()))
            assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
    assert outputs[0] == outputs[1]
