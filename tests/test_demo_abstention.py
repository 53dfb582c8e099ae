"""The study's abstention check, its paragraph, and the all-items selective-prediction view
(``calrl/demo/summary.py``, ``calrl/demo/report_prose.py``, ``calrl/demo/selective.py``), on summaries and
records made by hand."""

from __future__ import annotations

import pytest

from calrl.data.records import ResolvedRecord
from calrl.demo import report_prose
from calrl.demo.selective import ABSTAINED, NO_CONFIDENCE, accuracy_at, mean_curve, selective_view
from calrl.demo.summary import ABSTAIN_NEVER_MIN, ABSTAIN_OFTEN_MAX, abstention_where_unknowable, aggregate
from calrl.demo.world import group_of

NEVER, OFTEN = group_of("never"), group_of("often")


def _summary(rates: list[tuple[float | None, float | None]]) -> dict:
    """A summary of PPO-C + abstention whose refusal rates per seed are ``(never-seen, well-known)``."""
    per_seed = {str(i): {"slice_refusal_rate": {g: r for g, r in ((NEVER, never), (OFTEN, often)) if r is not None}}
                for i, (never, often) in enumerate(rates)}
    by_slice = {g: aggregate([per_seed[str(i)]["slice_refusal_rate"].get(g) for i in range(len(rates))])
                for g in (NEVER, OFTEN)}
    return {"seeds": list(range(len(rates))),
            "policies": {"ppo_c_abstain": {"per_seed": per_seed, "slice_refusal_rate": by_slice}}}


def test_the_thresholds_are_most_never_seen_and_almost_no_well_known():
    assert ABSTAIN_NEVER_MIN == 0.5 and ABSTAIN_OFTEN_MAX == 0.05


@pytest.mark.parametrize("rates,per_seed,passed", [
    ([(0.9, 0.0), (0.5, 0.05)], [True, True], True),  # both thresholds are inclusive
    ([(0.9, 0.0), (0.49, 0.0)], [True, False], False),  # seed 1 abstains on too few never-seen people
    ([(0.9, 0.0), (0.8, 0.1)], [True, False], False),  # seed 1 abstains on well-known people
    ([(0.0, 0.0), (0.0, 0.0)], [False, False], False),  # never abstains
    ([(0.9, 0.0), (0.9, None)], [True, None], None),  # seed 1's eval has no well-known slice: no verdict
])
def test_the_abstention_check_is_judged_per_seed(rates, per_seed, passed):
    check = abstention_where_unknowable(_summary(rates))
    assert check["per_seed"] == per_seed and check["passed"] is passed
    assert check["seeds_passed"] == sum(1 for f in per_seed if f) and check["seeds"] == len(rates)
    assert check["numbers"]["per_seed"]["1"] == {NEVER: rates[1][0], OFTEN: rates[1][1]}


def test_the_abstention_check_on_the_means_can_differ_from_every_seed():
    # seed 0 abstains on well-known people, seed 1 on too few never-seen ones; the means (0.6, 0.04) pass
    check = abstention_where_unknowable(_summary([(0.8, 0.08), (0.4, 0.0)]))
    assert check["per_seed"] == [False, False] and check["passed"] is False and check["on_means"] is True
    assert check["numbers"][f"refusal_rate_{NEVER}"] == pytest.approx(0.6)


def _agg(value):
    return {"mean": value, "std": 0.0, "n": 1, "values": [value]}


def _paragraph_summary(never: float, often: float, passed: bool | None) -> dict:
    check = {"per_seed": [passed] * 3, "passed": passed, "on_means": passed, "seeds": 3,
             "seeds_passed": 3 if passed else 0}
    return {
        "seeds": [0, 1, 2], "abstention_reward": {"0": 0.35},
        "checks": {"ppo_c_abstain_abstains_where_it_cannot_know": check},
        "policies": {"ppo_c_abstain": {"refusal_rate": _agg((never + often) / 2), "accuracy_answered": _agg(0.9),
                                       "aurc_all_items": _agg(0.2),
                                       "slice_refusal_rate": {OFTEN: _agg(often), NEVER: _agg(never)}},
                     "ppo_v": {"accuracy_answered": _agg(0.5), "aurc_all_items": _agg(0.3)}},
    }


@pytest.mark.parametrize("never,often,passed,expected", [
    (0.9, 0.0, True, ("Abstains on at least 0.50 of the never-seen people and at most 0.05 of the well-known "
                      "ones: holds in 3 of 3 seeds on its own (and on the means).")),
    (0.2, 0.1, False, "ones: holds in 0 of 3 seeds on its own (but not on the means)."),
    (0.0, 0.0, False, "It never abstained on the held-out set: the abstention reward had no visible effect."),
])
def test_abstention_paragraph_says_where_it_abstained(never, often, passed, expected):
    text = report_prose._abstention_paragraph(_paragraph_summary(never, often, passed))
    assert text.startswith(f"PPO-C with an abstention reward (seed 0: 0.350) (over 3 seeds): refusal rate "
                           f"{report_prose.fmt((never + often) / 2)} (per slice: fact-often "
                           f"{report_prose.fmt(often)}, fact-never {report_prose.fmt(never)}).")
    assert expected in text
    assert text.endswith("Against PPO + correctness: accuracy on answered questions 0.500 -> 0.900, AURC over all "
                         "items (lower is better) 0.300 -> 0.200.")


def test_the_abstention_check_text_states_its_thresholds():
    text = report_prose.CHECK_TEXT["ppo_c_abstain_abstains_where_it_cannot_know"]
    assert "at least 0.5" in text and "at most 0.05" in text


# ---------------------------------------------------------------------------------------- selective view
def _record(i: int, *, confidence: float | None = None, correct: bool = False,
            abstained: bool = False) -> ResolvedRecord:
    source = "abstained" if abstained else ("missing" if confidence is None else "explicit")
    return ResolvedRecord(id=str(i), abstained=abstained, correct=correct, confidence=confidence,
                          confidence_source=source, hedged=False)


def test_all_items_risk_coverage_ranks_abstentions_last_as_wrong():
    records = [
        _record(0, confidence=0.9, correct=True),
        _record(1, confidence=0.9, correct=False),
        _record(2, confidence=0.6, correct=True),
        _record(3, correct=True),  # an answer without a stated confidence: after every stated one
        _record(4, abstained=True),  # last of all, and not correct
        _record(5, abstained=True),
    ]
    view = selective_view(records)
    curve = view["risk_coverage"]
    # by hand: {0.9, 0.9} 1 right of 2; + 0.6: 2 of 3; + the unstated answer: 3 of 4; + each abstention: 3 of 5,
    # 3 of 6
    assert curve["threshold"] == [0.9, 0.6, NO_CONFIDENCE, ABSTAINED, ABSTAINED]
    assert curve["coverage"] == pytest.approx([2 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0])
    assert curve["accuracy"] == pytest.approx([1 / 2, 2 / 3, 3 / 4, 3 / 5, 1 / 2])
    # AURC: coverage steps 2/6, 1/6, 1/6, 1/6, 1/6 at risks 1/2, 1/3, 1/4, 2/5, 1/2
    by_hand = 2 / 6 * 1 / 2 + 1 / 6 * 1 / 3 + 1 / 6 * 1 / 4 + 1 / 6 * 2 / 5 + 1 / 6 * 1 / 2
    assert view["aurc_all_items"] == pytest.approx(by_hand)
    # abstaining on a question it would have got right costs area
    lost = [*records[:2], _record(2, abstained=True), *records[3:]]
    assert selective_view(lost)["aurc_all_items"] > by_hand


def test_a_policy_that_abstains_where_it_is_wrong_has_the_smaller_area():
    """Two policies right on the same 2 of 4 questions: one guesses the other two with confidence 0.8, the other
    abstains on them. Answered-only AURC would score the abstainer on 2 items; here both cover all 4."""
    guesser = [_record(0, confidence=0.8, correct=True), _record(1, confidence=0.8, correct=True),
               _record(2, confidence=0.8), _record(3, confidence=0.8)]
    abstainer = [*guesser[:2], _record(2, abstained=True), _record(3, abstained=True)]
    assert selective_view(guesser)["aurc_all_items"] == pytest.approx(0.5)  # one tie group: risk 1/2 throughout
    # the two right answers, then each abstention: risk 0 over 2/4, then 1/3 and 1/2 over 1/4 each
    assert selective_view(abstainer)["aurc_all_items"] == pytest.approx(2 / 4 * 0 + 1 / 4 * 1 / 3 + 1 / 4 * 1 / 2)
    # abstaining on them is worth what answering them wrongly below every other confidence is worth: the
    # abstentions are not one tie group charged the risk after all of them
    ranked_wrong = [*guesser[:2], _record(2, confidence=0.2), _record(3, confidence=0.1)]
    assert selective_view(abstainer)["aurc_all_items"] == pytest.approx(selective_view(ranked_wrong)["aurc_all_items"])
    assert selective_view([])["aurc_all_items"] is None


def test_the_mean_curve_is_the_mean_of_the_step_functions():
    a = {"coverage": [0.25, 1.0], "accuracy": [1.0, 0.5]}
    b = {"coverage": [0.5, 1.0], "accuracy": [0.5, 0.25]}
    assert accuracy_at(a, [0.1, 0.25, 0.5, 1.0]) == [1.0, 1.0, 0.5, 0.5]
    coverage, accuracy = mean_curve([a, b])
    assert coverage == [0.25, 0.5, 1.0]
    assert accuracy == pytest.approx([(1.0 + 0.5) / 2, (0.5 + 0.5) / 2, (0.5 + 0.25) / 2])

    def area(cov, acc):  # above the step function: 1 - accuracy, integrated over coverage
        return sum((c - p) * (1 - y) for p, c, y in zip([0.0, *cov], cov, acc))

    # the mean curve's area is the mean of the two areas (0.375 and 0.625)
    assert area(a["coverage"], a["accuracy"]) == pytest.approx(0.375)
    assert area(coverage, accuracy) == pytest.approx((area(a["coverage"], a["accuracy"])
                                                      + area(b["coverage"], b["accuracy"])) / 2)
