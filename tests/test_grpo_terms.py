"""GRPO/RLOO rewards from the reward-term registry: the same numbers as the reward functions they replace, a term
registered here used by name, the terms GRPO/RLOO refuse, and the TRL-style ``rewards`` list in recipes."""

from __future__ import annotations

import doctest
import itertools
import math
import pickle
import re
from pathlib import Path

import pytest
import torch

import calrl.rewards.confidence_terms as confidence_terms_module
import calrl.rewards.terms as terms_module
from calrl.cli.main import main
from calrl.errors import ConfigError
from calrl.rewards.pipeline import RewardPipelineConfig
from calrl.rewards.reward_funcs import (
    RewardFuncsConfig,
    build_reward_funcs,
    completion_text,
    parse_completion,
)
from calrl.rewards.scoring_rules import brier_reward, log_score_reward
from calrl.rewards.terms import REWARD_TERMS, RewardTerm, RolloutBatch, register_reward_term
from calrl.runners.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]
TINY_GRPO = REPO / "configs" / "tests" / "tiny_grpo_brier.yaml"


# ------------------------------------------------------------- the reward functions before the terms, kept here only
def _old_reward_funcs(names, *, reference_column="reference", choices_column="choices", grader="auto",
                      abstention_reward=0.25, missing_confidence="half", use_hedges=False,
                      confidence_parser="calrl", log_score_eps=1e-3):
    """What calrl.rewards.reward_funcs computed before the reward terms (its if/elif and its four classes), as
    ``{name: f(prompts, completions, **kwargs)}``."""
    from calrl.grading import grade

    def parse(completions):
        return [parse_completion(completion_text(c), use_hedges, confidence_parser) for c in completions]

    def references(value):
        if value is None:
            return []
        if isinstance(value, str | int | float):
            return [str(value)]
        return [str(v) for v in value]

    def graded(parsed, kwargs, name):
        if reference_column not in kwargs:
            raise ConfigError(f"reward {name!r} needs the dataset column {reference_column!r}", field="reference_column")
        refs = list(kwargs[reference_column])
        choices = list(kwargs[choices_column]) if choices_column and choices_column in kwargs else [None] * len(parsed)
        out = []
        for p, ref, ch in zip(parsed, refs, choices, strict=True):
            r = references(ref)
            out.append(False if p.abstained or not p.answer or not r
                       else bool(grade(p.answer, r, choices=list(ch) if ch else None, grader=grader)))
        return out

    def correctness(prompts, completions, **kwargs):
        return [1.0 if c else 0.0 for c in graded(parse(completions), kwargs, "correctness")]

    def scoring_rule(rule):
        def reward(prompts, completions, **kwargs):
            parsed = parse(completions)
            correct = graded(parsed, kwargs, rule)
            rewards, n_missing, n_answers = [], 0, 0
            for p, c in zip(parsed, correct, strict=True):
                if p.abstained and "abstention" in names:
                    rewards.append(None)
                    continue
                n_answers += 1
                q = p.confidence
                if q is None:
                    n_missing += 1
                    if missing_confidence == "exclude":
                        rewards.append(None)
                        continue
                    q = 0.5 if missing_confidence == "half" else (0.0 if c else 1.0)
                qt, ct = torch.tensor(q, dtype=torch.float64), torch.tensor(c)
                value = brier_reward(qt, ct) if rule == "brier" else log_score_reward(qt, ct, eps=log_score_eps)
                rewards.append(float(value))
            if kwargs.get("log_metric") is not None:
                stated = [p.confidence for p in parsed if p.confidence is not None]
                kwargs["log_metric"]("confidence/missing_rate", n_missing / n_answers if n_answers else float("nan"))
                kwargs["log_metric"]("confidence/mean_stated", sum(stated) / len(stated) if stated else float("nan"))
            return rewards
        return reward

    def abstention(prompts, completions, **kwargs):
        parsed = parse(completions)
        if kwargs.get("log_metric") is not None:
            kwargs["log_metric"]("abstention/rate",
                                 sum(p.abstained for p in parsed) / len(parsed) if parsed else float("nan"))
        return [float(abstention_reward) if p.abstained else 0.0 for p in parsed]

    def format_reward(prompts, completions, **kwargs):
        return [1.0 if p.answer and p.confidence_source == "explicit" else 0.0 for p in parse(completions)]

    made = {"correctness": correctness, "brier": scoring_rule("brier"), "log_score": scoring_rule("log_score"),
            "abstention": abstention, "format": format_reward}
    return {name: made[name] for name in names}


# ------------------------------------------------------------------------------------------- the grid of calls
QA = [  # (completion, reference cell, choices cell)
    ("42. Confidence: 8", "42", None),
    ("41. Confidence: 3", ["42", "forty-two"], None),
    ("I don't know.", "42", None),
    ("42", 42, None),
    ("Probably 42, I think.", "42", None),
    ("Answer: Paris. Confidence: 10", ["paris", "Paris, France"], None),
    ("Lyon. Confidence: 0", None, None),
    ("Confidence: 7", "7", None),
    ("Could you clarify which year you mean? Confidence: 4", "1999", None),
    ("B. Confidence: 6", "B", ["red", "blue", "green"]),
    ("(C) green", "blue", ["red", "blue", "green"]),
    ("The answer is blue. Confidence: 9", "B", ["red", "blue", "green"]),
    ("A", ["A"], []),
    ("I'm not sure, maybe 12. Confidence: 5", "12", None),
    ("", "x", None),
    ("#### 7\nConfidence: 2", "7", None),
]
COMPLETIONS = [c for c, _, _ in QA]
CONVERSATIONAL = [[{"role": "user", "content": "q"}, {"role": "assistant", "content": c}] for c in COMPLETIONS]
COLUMNS = {"reference": [r for _, r, _ in QA], "choices": [ch for _, _, ch in QA]}
REWARD_SETS = [
    ["brier"], ["log_score"], ["correctness"], ["abstention"], ["format"], ["brier", "format"],
    ["brier", "abstention"], ["log_score", "correctness"], ["log_score", "abstention", "correctness"],
    ["correctness", "brier", "log_score", "abstention", "format"],
]
OPTIONS = [
    dict(zip(("missing_confidence", "use_hedges", "confidence_parser", "abstention_reward", "log_score_eps", "grader"),
             values, strict=True))
    for values in itertools.product(("half", "worst", "exclude"), (False, True), ("calrl", "reference"), (0.25, -0.5),
                                    (1e-3, 0.05), ("auto",))
] + [{"grader": "exact"}, {"grader": "mc"}, {"grader": "numeric", "missing_confidence": "worst"}]


def _same(a, b) -> bool:
    """Equal value for value (None as None, NaN as NaN, floats exactly)."""
    if a is None or b is None:
        return a is b
    return (math.isnan(a) and math.isnan(b)) or a == b


def _call(func, completions, columns):
    logged = []
    out = func(prompts=["q"] * len(completions), completions=completions,
               log_metric=lambda key, value: logged.append((key, value)), **columns)
    return out, logged


@pytest.mark.parametrize("names", REWARD_SETS, ids=lambda names: "+".join(names))
def test_the_term_reward_functions_return_what_the_old_ones_returned(names):
    """On 51 option sets x 10 reward sets x 4 calls (plain, conversational, without the choices column, one row),
    every reward function returns the old values exactly, logs the same metrics and keeps the weights."""
    calls = [(COMPLETIONS, COLUMNS), (CONVERSATIONAL, COLUMNS), (COMPLETIONS, {"reference": COLUMNS["reference"]}),
             (COMPLETIONS[9:10], {"reference": ["B"], "choices": [["red", "blue"]]})]
    compared = 0
    for options in OPTIONS:
        weights = [0.5 + i for i in range(len(names))]
        funcs, got_weights = build_reward_funcs(RewardFuncsConfig(reward_funcs=list(names), reward_weights=weights,
                                                                  **options))
        old = _old_reward_funcs(names, **options)
        assert [f.__name__ for f in funcs] == list(names) and got_weights == weights
        for func, (completions, columns) in itertools.product(funcs, calls):
            new_values, new_logged = _call(func, completions, columns)
            old_values, old_logged = _call(old[func.__name__], completions, columns)
            assert len(new_values) == len(old_values), (func.__name__, options)
            assert all(_same(a, b) for a, b in zip(new_values, old_values, strict=True)), \
                (func.__name__, options, new_values, old_values)
            assert [k for k, _ in new_logged] == [k for k, _ in old_logged]
            assert all(_same(a, b) for (_, a), (_, b) in zip(new_logged, old_logged, strict=True)), (new_logged, old_logged)
            compared += len(new_values)
    assert compared > 1000


def test_the_grid_has_the_cases_it_claims():
    """The grid holds abstentions, missing and hedged confidences, multiple choice and rows without a reference, and
    the old computation scores them differently from PPO's term defaults (so the comparison can fail)."""
    parsed = [parse_completion(c) for c in COMPLETIONS]
    assert sum(p.abstained for p in parsed) >= 2 and sum(p.confidence is None for p in parsed) >= 3
    assert any(parse_completion(c, True).confidence_source == "hedge" for c in COMPLETIONS)
    assert sum(bool(ch) for ch in COLUMNS["choices"]) >= 3 and None in COLUMNS["reference"]
    old = _old_reward_funcs(["brier"])["brier"](["q"] * len(QA), COMPLETIONS, **COLUMNS)
    batch = RolloutBatch.of(COMPLETIONS, [r if isinstance(r, list | str) else None for r in COLUMNS["reference"]])
    ppo = terms_module.BrierTerm().values(batch).tolist()  # PPO's grading and abstention handling
    assert not all(_same(a, None if math.isnan(b) else b) for a, b in zip(old, ppo, strict=True))


def test_legacy_keys_and_the_rewards_list_give_the_same_functions():
    legacy = RewardFuncsConfig(reward_funcs=["brier", "abstention", "format"], reward_weights=[1.0, 2.0, 0.1],
                               abstention_reward=0.3, missing_confidence="worst")
    listed = RewardFuncsConfig(rewards=[{"name": "brier", "missing": "worst"},
                                        {"name": "abstention", "value": 0.3, "weight": 2.0},
                                        {"name": "format", "weight": 0.1}])
    (funcs_a, weights_a), (funcs_b, weights_b) = build_reward_funcs(legacy), build_reward_funcs(listed)
    assert weights_a == weights_b == [1.0, 2.0, 0.1]
    assert listed.reward_funcs == ["brier", "abstention", "format"] and listed.reward_weights == [1.0, 2.0, 0.1]
    for a, b in zip(funcs_a, funcs_b, strict=True):
        assert a.term.spec() == b.term.spec()
        assert _call(a, COMPLETIONS, COLUMNS)[0] == _call(b, COMPLETIONS, COLUMNS)[0]
    brier = funcs_b[0].term
    assert (brier.abstentions, brier.missing) == ("skip", "worst")  # an abstention term is among the rewards
    alone = build_reward_funcs(RewardFuncsConfig(rewards=["brier"]))[0][0].term
    assert alone.abstentions == "score" and RewardFuncsConfig().reward_specs() == [(
        {"name": "brier", "missing": "half", "grader": "auto", "abstentions": "score"}, 1.0)]


# ------------------------------------------------------------------------------------- a term registered here
class WordCount(RewardTerm):
    """``per_word`` x the number of words of the completion; NaN (not scored) for an empty one.

    Example:
        >>> WordCount(per_word=0.5).values(RolloutBatch.of(["a b c", ""])).tolist()
        [1.5, nan]
    """

    name = "word_count"
    needs = frozenset({"texts"})
    options = {"per_word": 1.0}  # noqa: RUF012

    def values(self, batch):
        words = torch.tensor([len(r.split()) for r in batch.responses], dtype=torch.float64)
        return torch.where(words > 0, self.per_word * words, torch.tensor(math.nan, dtype=torch.float64))

    def completion_metrics(self, batch):
        return {"words/mean": sum(len(r.split()) for r in batch.responses) / max(batch.n, 1)}


@pytest.fixture
def word_count():
    register_reward_term(WordCount)
    yield WordCount
    REWARD_TERMS.pop("word_count", None)  # the registry is the package's: leave it as it was


def test_a_registered_term_is_a_grpo_reward_function_by_name(word_count):
    funcs, weights = build_reward_funcs(RewardFuncsConfig(reward_funcs=["brier", "word_count"],
                                                          reward_weights=[1.0, 0.2]))
    assert [f.__name__ for f in funcs] == ["brier", "word_count"] and weights == [1.0, 0.2]
    values, logged = _call(funcs[1], ["a b c", "", "d"], {"reference": ["x", "y", "z"]})
    assert values == [3.0, None, 1.0] and logged == [("words/mean", 4 / 3)]
    funcs, weights = build_reward_funcs(RewardFuncsConfig(rewards=[{"name": "word_count", "per_word": 0.5,
                                                                    "weight": 0.1}]))
    assert _call(funcs[0], ["a b c"], {})[0] == [1.5] and weights == [0.1]
    assert _call(pickle.loads(pickle.dumps(funcs[0])), ["a b c"], {})[0] == [1.5]  # picklable, as TRL may need
    with pytest.raises(ConfigError, match=r"did you mean 'word_count'"):
        RewardFuncsConfig(reward_funcs=["word_cont"]).validate_reward_options()
    runner = doctest.DocTestRunner()
    for test in doctest.DocTestFinder().find(WordCount, "WordCount", globs={"WordCount": WordCount,
                                                                            "RolloutBatch": RolloutBatch}):
        runner.run(test)
    assert runner.failures == 0 and runner.tries == 1


def test_a_registered_term_trains_in_a_tiny_grpo_run(word_count, tmp_path):
    from datasets import Dataset

    from calrl.tiny.models import build_tiny_causal_lm, build_word_tokenizer
    from calrl.trainers.grpo import CalibratedGRPOConfig, CalibratedGRPOTrainer

    qa = [("what is 2 + 2 ?", "4"), ("what is 3 + 4 ?", "7")]
    tokenizer = build_word_tokenizer([q for q, _ in qa])
    args = CalibratedGRPOConfig(
        output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none", num_generations=2, max_completion_length=6,
        per_device_train_batch_size=2, num_train_epochs=1, logging_steps=1, save_strategy="no", disable_tqdm=True,
        seed=0, rewards=[{"name": "brier"}, {"name": "word_count", "per_word": 0.1, "weight": 0.5}])
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": q}], "reference": a} for q, a in qa])
    trainer = CalibratedGRPOTrainer(model=build_tiny_causal_lm(tokenizer), args=args, train_dataset=data,
                                    processing_class=tokenizer)
    assert trainer.reward_func_names == ["brier", "word_count"]
    assert trainer.reward_weights.tolist() == pytest.approx([1.0, 0.5])
    trainer.train()
    logs = [row for row in trainer.state.log_history if "rewards/word_count/mean" in row]
    assert len(logs) == trainer.state.global_step == 2 and all("words/mean" in row for row in logs)
    # 0.1 per word of a completion of at most 6 tokens (one word each); NaN when every completion is empty
    assert all(math.isnan(row["rewards/word_count/mean"]) or 0.1 - 1e-6 <= row["rewards/word_count/mean"] <= 0.6 + 1e-6
               for row in logs)


# ------------------------------------------------------------------------------------------- refusals and errors
@pytest.mark.parametrize("name, why", [("clamp", "clamps the running score"),
                                       ("ppo_c", "moving average"),
                                       ("missing_penalty", "subtracts from the running score"),
                                       ("rm", "reward model")])
def test_terms_that_transform_the_running_score_are_refused(name, why):
    for kwargs, field in (({"reward_funcs": ["brier", name]}, "reward_funcs"),
                          ({"rewards": [{"name": "brier"}, {"name": name}]}, r"rewards\[1\]\.name")):
        with pytest.raises(ConfigError, match=field) as caught:
            RewardFuncsConfig(**kwargs).validate_reward_options()
        message = str(caught.value)
        assert "\n" not in message and f"the {name} term" in message and why in message
        assert "sum weighted per-completion rewards" in message


@pytest.mark.parametrize("kwargs, field, text", [
    ({"rewards": [{"name": "brier", "wieght": 2}]}, r"rewards\[0\]", "did you mean 'weight'"),
    ({"rewards": [{"name": "abstension"}]}, r"rewards\[0\]\.name", "did you mean 'abstention'"),
    ({"reward_funcs": ["breir"]}, "reward_funcs", "did you mean 'brier'"),
    ({"rewards": [{"name": "brier", "weight": float("nan")}]}, r"rewards\[0\]\.weight", "finite number"),
    ({"rewards": [{"name": "brier", "weight": True}]}, r"rewards\[0\]\.weight", "finite number"),
    ({"rewards": [{"name": "log_score", "missing": "skp"}]}, r"rewards\.log_score\.missing", "unknown"),
    ({"rewards": [{"name": "brier", "abstentions": "skipp"}]}, r"rewards\.brier\.abstentions", "did you mean 'skip'"),
    ({"rewards": [{"name": "correctness", "mode": "replace"}]}, r"rewards\.correctness\.mode", "no reward model"),
    ({"rewards": [{"name": "brier", "grader": "fuzzy"}]}, r"rewards\[0\]\.grader", "fuzzy"),
    ({"rewards": ["brier", {"name": "brier", "missing": "worst"}]}, r"rewards\[1\]\.name", "listed twice"),
    ({"rewards": []}, "rewards", "non-empty"),
    ({"rewards": [7]}, r"rewards\[0\]", "term name or a mapping"),
    ({"rewards": ["format"], "reward_funcs": ["brier"]}, "reward_funcs", "not both"),
    ({"rewards": [{"name": "format", "weight": 2.0}], "reward_weights": [1.0]}, "reward_weights", "not both"),
])
def test_bad_rewards_name_the_field_in_one_line(kwargs, field, text):
    with pytest.raises(ConfigError, match=field) as caught:
        RewardFuncsConfig(**kwargs).validate_reward_options()
    assert text in str(caught.value) and "\n" not in str(caught.value)


def _tiny_recipe(tmp_path, rewards_block: str) -> Path:
    text = TINY_GRPO.read_text()
    legacy = "  reward_funcs: [brier, format]\n  reward_weights: [1.0, 0.1]\n"
    assert legacy in text
    path = tmp_path / "recipe.yaml"
    path.write_text(text.replace(legacy, rewards_block))
    return path


def test_a_recipe_lists_the_rewards_trl_style(tmp_path):
    listed = _tiny_recipe(tmp_path, "  rewards:\n    - {name: brier}\n    - {name: format, weight: 0.1}\n")
    new, old = load_recipe(listed).training, load_recipe(TINY_GRPO).training
    assert new.reward_funcs == old.reward_funcs == ["brier", "format"]
    assert new.reward_weights == old.reward_weights == [1.0, 0.1]
    assert new.reward_specs() == old.reward_specs()


def test_a_bad_rewards_entry_in_a_recipe_is_one_line_with_file_line_and_key(tmp_path, capsys):
    bad = _tiny_recipe(tmp_path, "  rewards:\n    - {name: brier}\n    - {name: clamp, value: 3}\n")
    with pytest.raises(ConfigError) as caught:
        load_recipe(bad)
    message = str(caught.value)
    assert re.search(r"recipe\.yaml:\d+: key 'training\.rewards\[1\]\.name': the clamp term clamps", message)
    assert main(["train-grpo", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training.rewards[1].name" in err[0] and "Traceback" not in err[0]


def test_the_shipped_grpo_and_rloo_recipes_keep_their_rewards():
    legacy = RewardFuncsConfig(reward_funcs=["brier", "format"], reward_weights=[1.0, 0.1], missing_confidence="half")
    for name in ("grpo_brier", "grpo_brier_lora", "rloo_brier"):
        training = load_recipe(REPO / "configs" / f"{name}.yaml", check_hardware=False).training
        assert training.reward_specs() == legacy.reward_specs(), name


# ----------------------------------------------------------------------------- the new term and option in PPO
def test_format_term_and_scored_abstentions_in_ppo():
    from calrl.rewards.pipeline import RewardPipeline
    from calrl.tiny.models import build_word_tokenizer

    class ZeroRM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(1))
            self.config = type("C", (), {})()

        def forward(self, input_ids, attention_mask, **kwargs):
            from types import SimpleNamespace

            return SimpleNamespace(logits=torch.zeros(input_ids.shape[0], 1) * self.anchor)

    responses = ["paris. confidence: 9", "probably lyon.", "I don't know. confidence: 2", "confidence: 5"]
    refs = [["paris"], ["paris"], ["paris"], ["paris"]]
    tok = build_word_tokenizer(responses + ["q"])
    config = RewardPipelineConfig(rewards=[{"name": "rm"}, {"name": "format", "value": 0.5},
                                           {"name": "brier", "abstentions": "score"}], use_hedges=True)
    scores, stats = RewardPipeline(config, ZeroRM(), reward_tokenizer=tok).score_texts(["q"] * 4, responses, refs)
    # format: an answer and an explicit statement (the second's confidence is a hedge, the last has no answer; an
    # abstention's "I don't know" is an answer, as GRPO's format reward has always read it); brier scores the
    # abstention (graded wrong at q = 0.2) as the option asks
    q_hedge = parse_completion("probably lyon.", True).confidence
    expected = torch.tensor([0.5 + 1 - 0.1 ** 2, -q_hedge ** 2, 0.5 - 0.2 ** 2, -0.5 ** 2])
    torch.testing.assert_close(scores, expected.float())
    assert stats["reward/brier"] == pytest.approx((1 - 0.1 ** 2 - q_hedge ** 2 - 0.2 ** 2 - 0.5 ** 2) / 4)


def test_the_moved_terms_keep_runnable_examples():
    result = doctest.testmod(confidence_terms_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted >= 10
