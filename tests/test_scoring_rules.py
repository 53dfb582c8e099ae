"""Scoring-rule rewards: hand-computed values, properness, and the TRL reward functions built on them."""

import math

import pytest
import torch

from calrl.errors import ConfigError
from calrl.rewards.reward_funcs import (
    RewardFuncsConfig,
    build_reward_funcs,
    completion_text,
)
from calrl.rewards.scoring_rules import brier_reward, expected_reward, log_score_reward


# ------------------------------------------------------------------------------------------ rules
@pytest.mark.parametrize("q, correct, expected", [
    (1.0, True, 1.0), (0.8, True, 1 - 0.04), (0.5, True, 0.75), (0.0, True, 0.0),
    (0.0, False, 0.0), (0.3, False, -0.09), (0.5, False, -0.25), (1.0, False, -1.0),
])
def test_brier_reward_hand_computed(q, correct, expected):
    assert brier_reward(q, correct).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("q, correct, expected", [
    (0.8, True, math.log(0.8)), (0.8, False, math.log(0.2)), (0.5, True, math.log(0.5)),
    (1.0, True, math.log(1 - 1e-3)), (1.0, False, math.log(1e-3)), (0.0, True, math.log(1e-3)),
    (0.0, False, math.log(1 - 1e-3)),
])
def test_log_score_hand_computed_and_clipped(q, correct, expected):
    assert log_score_reward(q, correct).item() == pytest.approx(expected, rel=1e-5)


def test_log_score_eps_bounds_the_reward():
    assert log_score_reward(1.0, False, eps=0.01).item() == pytest.approx(math.log(0.01), rel=1e-6)
    with pytest.raises(ValueError):
        log_score_reward(0.5, True, eps=0.0)


def test_rules_are_elementwise_on_tensors():
    q = torch.tensor([0.9, 0.2, 0.6])
    y = torch.tensor([True, False, False])
    assert torch.allclose(brier_reward(q, y), torch.tensor([1 - 0.01, -0.04, -0.36]))
    assert torch.allclose(log_score_reward(q, y), torch.log(torch.tensor([0.9, 0.8, 0.4])))


def test_confidence_outside_unit_interval_is_rejected():
    with pytest.raises(ValueError):
        brier_reward(1.2, True)
    with pytest.raises(ValueError):
        log_score_reward(-0.1, False)


@pytest.mark.parametrize("rule", [brier_reward, log_score_reward])
def test_expected_reward_is_maximised_at_the_true_probability(rule):
    grid = torch.linspace(0, 1, 101, dtype=torch.float64)
    for p in [0.05, 0.2, 0.37, 0.5, 0.73, 0.9, 0.99]:
        values = expected_reward(rule, grid, torch.tensor(p, dtype=torch.float64))
        best = grid[int(values.argmax())].item()
        assert best == pytest.approx(p, abs=0.0051), (rule.__name__, p, best)
        # strictly proper: every other grid point is worse
        others = values[(grid - p).abs() > 0.011]
        assert (others < values.max()).all()


def test_brier_expected_reward_at_honest_confidence_is_p_squared():
    for p in [0.1, 0.4, 0.8]:
        assert expected_reward(brier_reward, p, p).item() == pytest.approx(p * p, abs=1e-6)


def test_improper_rule_fails_the_properness_check():
    """The check above can fail: a linear reward q*1[correct] is not proper (its optimum is q = 1)."""
    grid = torch.linspace(0, 1, 101, dtype=torch.float64)
    values = expected_reward(lambda q, y: q * y, grid, torch.tensor(0.3, dtype=torch.float64))
    assert grid[int(values.argmax())].item() == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------ reward funcs
def _funcs(**kw):
    funcs, weights = build_reward_funcs(RewardFuncsConfig(**kw))
    return {f.__name__: f for f in funcs}, weights


PLAIN = ["42. Confidence: 8", "41. Confidence: 3", "I don't know.", "42"]
CONVERSATIONAL = [[{"role": "assistant", "content": c}] for c in PLAIN]
REFS = ["42", "42", "42", "42"]


@pytest.mark.parametrize("completions", [PLAIN, CONVERSATIONAL], ids=["plain", "conversational"])
def test_reward_funcs_on_plain_and_conversational_completions(completions):
    funcs, weights = _funcs(reward_funcs=["correctness", "brier", "log_score", "format"],
                            missing_confidence="half")
    assert weights == [1.0, 1.0, 1.0, 1.0]
    prompts = ["q"] * 4
    correctness = funcs["correctness"](prompts, completions, reference=REFS)
    assert correctness == [1.0, 0.0, 0.0, 1.0]
    brier = funcs["brier"](prompts, completions, reference=REFS)
    # abstention (no abstention reward configured) is scored as a wrong answer; its missing confidence as 0.5
    assert brier == pytest.approx([1 - 0.2 ** 2, -0.3 ** 2, -0.25, 0.75])
    log_score = funcs["log_score"](prompts, completions, reference=REFS)
    assert log_score == pytest.approx([math.log(0.8), math.log(0.7), math.log(0.5), math.log(0.5)])
    assert funcs["format"](prompts, completions, reference=REFS) == [1.0, 1.0, 0.0, 0.0]


def test_abstention_reward_and_scoring_rules_skip_abstentions():
    funcs, weights = _funcs(reward_funcs=["brier", "abstention"], reward_weights=[1.0, 2.0],
                            abstention_reward=0.3)
    assert weights == [1.0, 2.0]
    prompts = ["q"] * 4
    assert funcs["abstention"](prompts, PLAIN, reference=REFS) == [0.0, 0.0, 0.3, 0.0]
    brier = funcs["brier"](prompts, PLAIN, reference=REFS)
    assert brier[2] is None and brier[0] == pytest.approx(0.96)


@pytest.mark.parametrize("policy, expected", [("half", [0.75, -0.25]), ("worst", [0.0, -1.0]),
                                              ("exclude", [None, None])])
def test_missing_confidence_policy(policy, expected):
    funcs, _ = _funcs(reward_funcs=["brier"], missing_confidence=policy)
    logged = {}
    out = funcs["brier"](["q", "q"], ["42", "7"], reference=["42", "42"],
                         log_metric=lambda k, v: logged.__setitem__(k, v))
    if policy == "exclude":
        assert out == expected
    else:
        assert out == pytest.approx(expected)
    assert logged["confidence/missing_rate"] == 1.0


def test_reference_may_be_a_list_and_the_column_name_is_configurable():
    funcs, _ = _funcs(reward_funcs=["correctness"], reference_column="answers")
    assert funcs["correctness"](["q", "q"], ["Paris. Confidence: 9", "Lyon"],
                                answers=[["paris", "Paris, France"], ["Paris"]]) == [1.0, 0.0]
    with pytest.raises(ConfigError, match="answers"):
        funcs["correctness"](["q"], ["Paris"], reference=["Paris"])


def test_reward_funcs_given_as_one_string_are_split():
    funcs, weights = build_reward_funcs(RewardFuncsConfig(reward_funcs="brier, format"))
    assert [f.__name__ for f in funcs] == ["brier", "format"] and weights == [1.0, 1.0]


def test_reward_func_names_for_trl_logging():
    funcs, _ = build_reward_funcs(RewardFuncsConfig(reward_funcs=["correctness", "brier", "log_score",
                                                                   "abstention", "format"]))
    assert [f.__name__ for f in funcs] == ["correctness", "brier", "log_score", "abstention", "format"]


@pytest.mark.parametrize("kw, field", [
    ({"reward_funcs": ["brier", "nope"]}, "reward_funcs"),
    ({"reward_funcs": []}, "reward_funcs"),
    ({"reward_funcs": ["brier"], "reward_weights": [1.0, 2.0]}, "reward_weights"),
    ({"missing_confidence": "ignore"}, "missing_confidence"),
    ({"abstention_reward": float("nan")}, "abstention_reward"),
    ({"log_score_eps": 0.7}, "log_score_eps"),
    ({"grader": "fuzzy"}, "grader"),
])
def test_invalid_reward_options_name_the_field(kw, field):
    with pytest.raises(ConfigError, match=field):
        build_reward_funcs(RewardFuncsConfig(**kw))


def test_completion_text_joins_assistant_content_parts():
    msgs = [{"role": "user", "content": "hi"},
            {"role": "assistant",
             "content": [{"type": "text", "text": "42."}, {"type": "text", "text": "C: 1"}]}]
    assert completion_text(msgs) == "42.\nC: 1"
