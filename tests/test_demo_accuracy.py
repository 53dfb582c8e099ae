"""The demo's paired claims. Accuracy: a non-inferiority statement over held-out items, Tango's interval of
accuracy(method) - accuracy(PPO) over every seed's answers pooled, with no verdict where the pairs are too few
for any outcome to show it (one seed of 120 items). Confidence: PPO against SFT on the questions both answered."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from calrl.data.records import RESOLVED_ROWS, ResolvedRecord
from calrl.demo.layout import Layout
from calrl.demo.report_prose import pooled_verdict
from calrl.demo.summary import ACCURACY_MARGIN, accuracy_non_inferiority, paired_confidence
from calrl.gate.inputs import read_resolved


def _write(layout: Layout, seed: int, policy: str, correct: list[bool], *, prefix: str = "eval") -> None:
    rows = [ResolvedRecord(id=f"{prefix}-{i}", abstained=False, correct=c, confidence=0.5, confidence_source="explicit",
                           hedged=False) for i, c in enumerate(correct)]
    RESOLVED_ROWS.write(layout.eval_dir(seed, policy) / "resolved.jsonl", ((r,) for r in reversed(rows)))


def _study(tmp_path: Path, seeds: list[int], lost_per_seed: int, n: int = 120) -> Layout:
    """PPO right on the first half of the items; the method loses ``lost_per_seed`` of them in every seed."""
    layout = Layout(tmp_path)
    for seed in seeds:
        ppo = [i < n // 2 for i in range(n)]
        method = [c and i >= lost_per_seed for i, c in enumerate(ppo)]
        _write(layout, seed, "ppo", ppo)
        _write(layout, seed, "ppo_m", method)
    return layout


def test_identical_answers_over_five_seeds_hold(tmp_path):
    check = accuracy_non_inferiority(_study(tmp_path, [0, 1, 2, 3, 4], 0), [0, 1, 2, 3, 4], "ppo_m", "ppo")
    assert check["passed"] is True and check["pooled"]["n"] == 600 and check["pooled"]["difference"] == 0.0
    assert -ACCURACY_MARGIN < check["pooled"]["low"] == check["best_possible_low"] < -0.006
    assert [s["n"] for s in check["per_seed_interval"]] == [120] * 5
    assert pooled_verdict(check).startswith("holds over the 5 seeds' answers: difference +0.0 points")


def test_a_method_that_loses_answers_does_not_hold(tmp_path):
    # 3 of 120 lost in each seed: -2.5 points, and nothing gained back
    check = accuracy_non_inferiority(_study(tmp_path, [0, 1, 2, 3, 4], 3), [0, 1, 2, 3, 4], "ppo_m", "ppo")
    assert check["passed"] is False and check["pooled"]["difference"] == pytest.approx(-0.025)
    assert check["pooled"]["b_only"] == 15 and check["pooled"]["a_only"] == 0
    assert pooled_verdict(check).startswith("does not hold")


def test_one_seed_of_120_items_gives_no_verdict(tmp_path):
    # identical answers, yet the narrowest interval 120 pairs can give reaches -3.1 points: no verdict, said why
    check = accuracy_non_inferiority(_study(tmp_path, [0], 0), [0], "ppo_m", "ppo")
    assert check["passed"] is None and check["best_possible_low"] == pytest.approx(-0.031, abs=1e-3)
    assert "no verdict: 120 paired answers cannot show it" in pooled_verdict(check)


def test_items_are_paired_by_id_and_must_match(tmp_path):
    layout = Layout(tmp_path)
    _write(layout, 0, "ppo", [True, False, True])
    _write(layout, 0, "ppo_m", [True, False, True], prefix="other")
    with pytest.raises(ValueError, match="evaluated different items"):
        accuracy_non_inferiority(layout, [0], "ppo_m", "ppo")


def test_confidence_is_compared_on_the_questions_both_answered(tmp_path):
    """SFT refuses most never-seen people, where it is least sure; PPO answers them all, more sure than SFT on
    every question: over its own answers PPO's mean is the lower one, over the questions both answered the higher."""
    layout = Layout(tmp_path)

    def rows(often: float, never: float, refused: int) -> list[ResolvedRecord]:
        out = [ResolvedRecord(id=f"o{i}", abstained=False, correct=True, confidence=often, confidence_source="explicit",
                              hedged=False) for i in range(60)]
        out += [ResolvedRecord(id=f"n{i}", abstained=i < refused, correct=False,
                               confidence=None if i < refused else never,
                               confidence_source="abstained" if i < refused else "explicit", hedged=False)
                for i in range(60)]
        return out

    for policy, records in (("sft", rows(0.9, 0.1, 40)), ("ppo", rows(0.95, 0.3, 0))):
        RESOLVED_ROWS.write(layout.eval_dir(0, policy) / "resolved.jsonl", ((r,) for r in records))
    own = {p: statistics.fmean(r.confidence for r in read_resolved(layout.eval_dir(0, p) / "resolved.jsonl")
                               if r.confidence is not None) for p in ("sft", "ppo")}
    assert own["ppo"] < own["sft"]  # 0.625 against 0.7
    paired = paired_confidence(layout, 0, "ppo", "sft")
    assert paired["n"] == 80 and paired["base"] == pytest.approx(0.7) and paired["policy"] == pytest.approx(0.7875)
