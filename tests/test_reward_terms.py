"""The reward-term interface of PPO: the registry, the earlier flat keys translated, a new term added by one
registration, and the log-score reward trained in a tiny PPO run."""

from __future__ import annotations

import doctest
import json
import math
from pathlib import Path

import pytest
import torch

import calrl.rewards.terms as terms_module
from calrl.cli.main import main
from calrl.errors import ConfigError
from calrl.rewards.pipeline import RewardPipeline, RewardPipelineConfig
from calrl.rewards.terms import (
    FLAT_KEYS,
    REWARD_TERMS,
    RewardTerm,
    RolloutBatch,
    build_reward_terms,
    register_reward_term,
    terms_from_flat_keys,
)
from calrl.runners.recipe import load_recipe
from calrl.tiny.models import build_word_tokenizer

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["capital of france", "capital of france", "a question", "capital of spain"]
RESPONSES = ["paris. confidence: 9", "lyon. confidence: 8", "I don't know.", "madrid."]
REFERENCES = [["paris"], ["paris"], None, ["madrid"]]


class ScoreByLength(torch.nn.Module):
    """A reward model whose score is the number of non-pad tokens, minus 4."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.config = type("C", (), {"calrl_reward_mean": 1.0, "calrl_reward_std": 2.0})()

    def forward(self, input_ids, attention_mask, **kwargs):
        from types import SimpleNamespace

        return SimpleNamespace(logits=attention_mask.sum(-1, keepdim=True).float() - 4.0 + self.anchor)


def _pipeline(config: RewardPipelineConfig) -> RewardPipeline:
    tok = build_word_tokenizer(PROMPTS + RESPONSES)
    return RewardPipeline(config, ScoreByLength(), reward_tokenizer=tok)


def test_every_term_has_a_runnable_example():
    result = doctest.testmod(terms_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed (see stdout)"
    for name, cls in REWARD_TERMS.items():
        examples = doctest.DocTestFinder(recurse=False).find(cls, name)
        assert sum(len(t.examples) for t in examples) > 0, f"the {name} term has no '>>>' example"


@pytest.mark.parametrize("flat", [
    {},
    {"ppo_c_variant": "difference", "ppo_c_weight": 2.0, "normalize_reward": True},
    {"ppo_c_variant": "threshold", "reward_final_clamp": False, "reward_clamp": 0.5, "ppo_c_avg_type": "std"},
    {"correctness_mode": "replace", "correct_reward": 1.0, "wrong_reward": -1.0, "abstention_reward": "0.3",
     "ppo_c_variant": "difference", "ppo_c_init_average": 0.25},
    {"correctness_mode": "add", "missing_confidence_penalty": 0.7},
])
def test_flat_keys_and_their_terms_score_alike_batch_after_batch(flat):
    missing = "penalty" if "missing_confidence_penalty" in flat else "half"
    old = _pipeline(RewardPipelineConfig(missing_confidence=missing, **flat))
    new = _pipeline(RewardPipelineConfig(rewards=terms_from_flat_keys(flat, missing), missing_confidence=missing))
    for _ in range(3):  # the moving average carries over batches
        a, stats_a = old.score_texts(PROMPTS, RESPONSES, REFERENCES)
        b, stats_b = new.score_texts(PROMPTS, RESPONSES, REFERENCES)
        assert torch.equal(a, b) and stats_a == stats_b
    assert old.state_dict() == new.state_dict()


def test_the_flat_terms_in_order():
    names = [t["name"] for t in terms_from_flat_keys(
        {"ppo_c_variant": "threshold", "correctness_mode": "add", "abstention_reward": 0.3}, "penalty")]
    assert names == ["rm", "correctness", "clamp", "ppo_c", "clamp", "missing_penalty", "abstention"]
    assert [t["name"] for t in terms_from_flat_keys({})] == ["rm", "clamp"]  # vanilla PPO
    assert set(FLAT_KEYS) == {f for f in RewardPipelineConfig.__dataclass_fields__ if f in FLAT_KEYS}


@pytest.mark.parametrize("rewards, field, message", [
    ([{"name": "ppo_cc"}], "rewards[0].name", "did you mean 'ppo_c'"),
    ([{"name": "clamp", "valeu": 3}], "rewards[0]", "did you mean 'value'"),
    ([{"name": "clamp", "value": -1}], "rewards.clamp.value", "positive"),
    ([{"name": "ppo_c", "variant": "thresh"}], "rewards.ppo_c.variant", "did you mean 'threshold'"),
    ([{"name": "ppo_c", "alpha": 0}], "rewards.ppo_c.alpha", "(0, 1]"),
    ([{"name": "log_score", "eps": 0.7}], "rewards.log_score.eps", "(0, 0.5)"),
    ([{"name": "brier", "missing": "skip"}], "rewards.brier.missing", "now called 'exclude'"),
    ([{"name": "correctness", "correct": 0, "wrong": 1}], "rewards.correctness.correct", "must exceed"),
    ([7], "rewards", "term name or a mapping"),
])
def test_bad_terms_name_the_entry_and_key(rewards, field, message):
    with pytest.raises(ConfigError, match=r"\b" + field.replace(".", r"\.").replace("[", r"\[")) as caught:
        RewardPipelineConfig(rewards=rewards)
    assert message in str(caught.value)


def test_flat_keys_beside_rewards_and_a_lone_penalty_are_refused():
    with pytest.raises(ConfigError, match="ppo_c_variant.*not both"):
        RewardPipelineConfig(rewards=[{"name": "rm"}], ppo_c_variant="threshold")
    with pytest.raises(ConfigError, match="missing_penalty"):
        RewardPipelineConfig(rewards=[{"name": "rm"}], missing_confidence="penalty")
    with pytest.raises(ConfigError, match="missing_penalty"):
        RewardPipelineConfig(rewards=[{"name": "rm"}, {"name": "missing_penalty"}])


def test_log_score_in_ppo_by_hand():
    config = RewardPipelineConfig(rewards=[{"name": "rm"}, {"name": "log_score", "weight": 0.5}])
    pipe = _pipeline(config)
    scores, stats = pipe.score_texts(PROMPTS, RESPONSES, REFERENCES)
    rm = pipe.last.rm_raw
    # correct at q = 0.9: log 0.9; wrong at q = 0.8: log 0.2; an abstention and an ungraded row: 0;
    # "madrid." states no confidence: q = 0.5 (missing: half), correct: log 0.5
    expected = rm + 0.5 * torch.tensor([math.log(0.9), math.log(0.2), 0.0, math.log(0.5)])
    torch.testing.assert_close(scores, expected.float())
    assert stats["reward/log_score"] == pytest.approx((math.log(0.9) + math.log(0.2) + math.log(0.5)) / 3)
    assert stats["correctness/accuracy"] == pytest.approx(2 / 3)  # graded by the term, logged as PPO-C's is


@pytest.fixture
def forget_length_penalty():
    yield
    REWARD_TERMS.pop("length_penalty", None)  # the registry is the package's: leave it as it was


def test_a_new_term_is_one_registration(forget_length_penalty):
    @register_reward_term
    class LengthPenalty(RewardTerm):
        """``per_word`` subtracted per word of the response."""

        name = "length_penalty"
        needs = frozenset({"texts"})
        options = {"per_word": 0.1}  # noqa: RUF012

        def apply(self, batch: RolloutBatch, score: torch.Tensor) -> torch.Tensor:
            return score - self.per_word * torch.tensor([len(r.split()) for r in batch.responses], dtype=score.dtype)

        def stat_sums(self, batch):
            return {"reward/words": (float(sum(len(r.split()) for r in batch.responses)), float(batch.n))}

    pipe = _pipeline(RewardPipelineConfig(rewards=[{"name": "rm"}, {"name": "length_penalty", "per_word": 1.0}]))
    scores, stats = pipe.score_texts(PROMPTS, RESPONSES, REFERENCES)
    torch.testing.assert_close(scores, pipe.last.rm_raw - torch.tensor([3.0, 3.0, 3.0, 1.0]))
    assert stats["reward/words"] == pytest.approx(2.5) and pipe.pop_stats()["reward/words"] == pytest.approx(2.5)
    with pytest.raises(ValueError, match="new name"):
        register_reward_term(LengthPenalty)
    assert [t.name for t in build_reward_terms(["rm", "length_penalty"])] == ["rm", "length_penalty"]


def test_a_recipe_with_flat_keys_is_translated_with_a_notice(tmp_path, capsys):
    text = (REPO / "configs" / "tests" / "tiny_ppo_c.yaml").read_text()
    start = text.index("  rewards:")
    end = text.index("\n  missing_confidence:", start)
    flat = "  ppo_c_variant: difference\n  ppo_c_weight: 2.0\n  abstention_reward: 0.3"
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(text[:start] + flat + text[end:])
    training = load_recipe(recipe_file).training
    notice = capsys.readouterr().err.strip().splitlines()
    assert len(notice) == 1 and notice[0].startswith(f"calrl: {recipe_file}: the flat reward keys (ppo_c_variant, ")
    assert "training.rewards: [{name: rm" in notice[0]
    assert [t.name for t in training.reward_terms()] == ["rm", "clamp", "ppo_c", "clamp", "abstention"]
    assert (training.reward_term("ppo_c").variant, training.reward_term("ppo_c").weight) == ("difference", 2.0)
    assert training.ppo_c_variant == "none"  # the flat keys are read once, into the terms


def test_tiny_ppo_trains_with_the_log_score_reward(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = REPO / "configs" / "tests" / "tiny_ppo_log_score.yaml"
    assert main(["train-ppo", "--config", str(config), "wandb.mode=disabled"]) == 0
    out = Path("runs/tiny_ppo_log_score")
    assert (out / "model.safetensors").is_file()
    state = json.loads(next(out.glob("checkpoint-*/trainer_state.json")).read_text())
    logged = [row for row in state["log_history"] if "reward/log_score" in row]
    assert logged and all(math.log(1e-3) <= row["reward/log_score"] <= 0.0 for row in logged)
    assert all(row["reward/final"] != row["reward/rm_raw"] for row in logged)  # the term changed the reward
