"""Reward pipeline: RM on stripped text, PPO-C, missing-confidence policies, abstention, correctness, faults."""

from types import SimpleNamespace

import pytest
import torch
from trl.experimental.utils import get_reward

from calrl.errors import ConfigError, TrainingFault
from calrl.rewards.abstention import AbstentionReward, abstention_threshold
from calrl.rewards.correctness import CorrectnessReward
from calrl.rewards.pipeline import RewardPipeline, RewardPipelineConfig
from calrl.tiny.models import build_tiny_reward_model, build_word_tokenizer

TOK = build_word_tokenizer(["good bad question what paris london capital france"])


class CountingRM(torch.nn.Module):
    """Score = 2 * #good - 2 * #bad + 5 * #confidence: easy to compute by hand, sensitive to stripping."""

    def __init__(self, tok):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.ids = {w: tok.convert_tokens_to_ids(w) for w in ("good", "bad", "confidence")}

    def forward(self, input_ids, attention_mask, **kwargs):
        def count(w):
            return ((input_ids == self.ids[w]) & attention_mask.bool()).sum(1).float()
        score = 2 * count("good") - 2 * count("bad") + 5 * count("confidence")
        return SimpleNamespace(logits=score[:, None] + self.anchor)


def pipeline(**cfg):
    return RewardPipeline(RewardPipelineConfig(**cfg), CountingRM(TOK), reward_tokenizer=TOK)


PROMPTS = ["question one", "question two", "question three", "question four"]
RESPONSES = ["good good. confidence: 9", "bad. confidence: 9", "good. confidence: 2", "good bad"]
# RM on stripped text: 4, -2, 2, 0 ; stated confidence .9, .9, .2, missing


def test_vanilla_scores_response_as_generated():
    scores, stats = pipeline().score_texts(PROMPTS, RESPONSES)
    torch.testing.assert_close(scores, torch.tensor([9.0, 3.0, 7.0, 0.0]))  # +5 for each confidence word
    assert stats["reward/adjustment"] == 0 and "reward/moving_average" not in stats
    assert stats["confidence/parsable_rate"] == 0.75 and stats["confidence/missing"] == 1
    assert stats["confidence/mean"] == pytest.approx((0.9 + 0.9 + 0.2) / 3)


def test_ppo_c_threshold_on_stripped_scores():
    pipe = pipeline(ppo_c_variant="threshold", ppo_c_init_average=0.0)
    scores, stats = pipe.score_texts(PROMPTS, RESPONSES)
    torch.testing.assert_close(pipe.last.rm_raw, torch.tensor([4.0, -2.0, 2.0, 0.0]))
    # avg = .1 * mean(4, -2, 2, 0) + .9 * 0 = 0.1 ; adj = .5 |r| (c - .5), sign by r >= 0.1
    # 4: +.8 ; -2 (below): -(.5*2*.4) = -.4 ; 2: .5*2*(-.3) = -.3 ; missing (half): 0
    torch.testing.assert_close(scores, torch.tensor([4.8, -2.4, 1.7, 0.0]))
    assert stats["reward/moving_average"] == pytest.approx(0.1)
    assert stats["reward/rm_raw"] == pytest.approx(1.0)
    assert stats["reward/adjustment"] == pytest.approx((0.8 - 0.4 - 0.3) / 4)
    assert stats["reward/final"] == pytest.approx(scores.mean().item())


def test_ppo_c_difference_and_first_batch_initialises_average():
    pipe = pipeline(ppo_c_variant="difference")
    scores, _ = pipe.score_texts(PROMPTS, RESPONSES)
    # avg = first batch mean = 1.0 ; adj = .5 (r - 1)(c - .5)
    torch.testing.assert_close(scores, torch.tensor([4.6, -2.6, 1.85, 0.0]))
    assert pipe.adjuster.average == pytest.approx(1.0)


def test_missing_confidence_policies_are_counted():
    neutral = pipeline(ppo_c_variant="difference", ppo_c_init_average=0.0)
    penalty = pipeline(ppo_c_variant="difference", ppo_c_init_average=0.0, missing_confidence="penalty",
                       missing_confidence_penalty=1.5)
    exclude = pipeline(ppo_c_variant="difference", ppo_c_init_average=0.0, missing_confidence="exclude")
    s_neutral, _ = neutral.score_texts(PROMPTS, RESPONSES)
    s_penalty, _ = penalty.score_texts(PROMPTS, RESPONSES)
    s_exclude, _ = exclude.score_texts(PROMPTS, RESPONSES)
    assert s_neutral[3] == 0.0 and s_penalty[3] == -1.5 and s_exclude[3] == 0.0
    assert neutral.adjuster.average == pytest.approx(0.1 * 1.0)  # mean of 4, -2, 2, 0
    assert exclude.adjuster.average == pytest.approx(0.1 * 4 / 3)  # the missing one is left out
    for pipe in (neutral, penalty, exclude):
        assert pipe.missing_total == 1
        assert pipe.pop_stats()["confidence/missing"] == 1
    with pytest.raises(ConfigError, match="missing_confidence"):
        RewardPipelineConfig(missing_confidence="ignore")


def test_abstention_reward_and_threshold():
    responses = ["i don ' t know", "good. confidence: 9"]
    fixed = pipeline(abstention_reward=0.25)
    scores, stats = fixed.score_texts(PROMPTS[:2], responses)
    torch.testing.assert_close(scores, torch.tensor([0.25, 7.0]))
    assert stats["abstention/rate"] == 0.5
    kept, _ = pipeline(abstention_reward="rm").score_texts(PROMPTS[:2], responses)
    assert kept[0] == 0.0  # the RM score of the abstention is kept
    assert abstention_threshold(1.0, 0.0, 0.3) == pytest.approx(0.3)
    assert abstention_threshold(1.0, -1.0, 0.0) == pytest.approx(0.5)
    assert AbstentionReward(0.3).threshold(1.0, 0.0) == pytest.approx(0.3)
    assert AbstentionReward("rm").threshold(1.0, 0.0) is None
    with pytest.raises(ConfigError, match="abstention_reward"):
        AbstentionReward("sometimes")


def _exact(answer, refs, grader):
    return answer.strip().lower() in [r.lower() for r in refs]


def test_correctness_reward_add_and_replace():
    corr = CorrectnessReward(1.0, -1.0, extract=lambda t: t.split(".")[0], grade_fn=_exact)
    rewards, graded = corr(["paris. confidence: 9", "london", "paris"], [["Paris"], "Paris", None])
    torch.testing.assert_close(rewards, torch.tensor([1.0, -1.0, 0.0]))
    assert graded.tolist() == [True, True, False]

    prompts = ["capital of france", "capital of france", "a question"]
    responses = ["paris. confidence: 8", "london. confidence: 8", "good"]
    refs = [["paris"], ["paris"], None]
    add = pipeline(correctness_mode="add", correct_reward=1.0, wrong_reward=-1.0)
    add.correctness = corr
    scores, stats = add.score_texts(prompts, responses, refs)
    torch.testing.assert_close(scores, torch.tensor([5.0 + 1.0, 5.0 - 1.0, 2.0]))
    assert stats["correctness/accuracy"] == 0.5
    replace = pipeline(correctness_mode="replace", correct_reward=1.0, wrong_reward=-1.0)
    replace.correctness = corr
    scores, _ = replace.score_texts(prompts, responses, refs)
    torch.testing.assert_close(scores, torch.tensor([1.0, -1.0, 2.0]))
    assert torch.isnan(replace.last.rm_raw[:2]).all()  # the RM is not run on graded items


def test_non_finite_reward_raises_training_fault():
    class NaNRM(CountingRM):
        def forward(self, input_ids, attention_mask, **kwargs):
            out = super().forward(input_ids, attention_mask, **kwargs)
            out.logits[1] = float("nan")
            return out

    pipe = RewardPipeline(RewardPipelineConfig(ppo_c_variant="threshold"), NaNRM(TOK), reward_tokenizer=TOK)
    with pytest.raises(TrainingFault) as err:
        pipe.score_texts(PROMPTS, RESPONSES, step=7)
    msg = str(err.value)
    assert "step 7" in msg and "rollout 1" in msg and "question two" in msg and "bad. confidence: 9" in msg
    assert pipe.adjuster.average is None  # nothing was folded into the average


def _rollouts(tok, prompts, responses, with_eos):
    queries = tok([tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                           add_generation_prompt=True) for p in prompts],
                  add_special_tokens=False, padding=True, return_tensors="pt")["input_ids"]
    rows = [tok(r, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if e else [])
            for r, e in zip(responses, with_eos)]
    width = max(map(len, rows)) + 2
    resp = torch.full((len(rows), width), tok.pad_token_id)
    for i, r in enumerate(rows):
        resp[i, :len(r)] = torch.tensor(r)
    return torch.cat([queries, resp], 1), queries.shape[1]


def test_score_rollouts_reuses_tokens_and_retokenises_stripped_rows():
    rm = build_tiny_reward_model(TOK, seed=3)
    responses = ["good answer", "paris. confidence: 8", "london confidence: 3"]
    qr, ctx = _rollouts(TOK, PROMPTS[:3], responses, [True, True, False])
    pipe = RewardPipeline(RewardPipelineConfig(ppo_c_variant="threshold", ppo_c_init_average=0.0), rm,
                          policy_tokenizer=TOK)
    scores, stats = pipe.score_rollouts(qr, ctx, TOK.pad_token_id)
    expect_qr, _ = _rollouts(TOK, PROMPTS[:3], ["good answer", "paris.", "london"], [True, True, False])
    _, expected_raw, _ = get_reward(rm, expect_qr, TOK.pad_token_id, ctx)
    torch.testing.assert_close(pipe.last.rm_raw, expected_raw.float())
    assert stats["confidence/parsable_rate"] == pytest.approx(2 / 3)
    # vanilla reuses TRL's tokens exactly: identical to a bare get_reward call
    vanilla = RewardPipeline(RewardPipelineConfig(), rm, policy_tokenizer=TOK)
    scores, _ = vanilla.score_rollouts(qr, ctx, TOK.pad_token_id)
    torch.testing.assert_close(scores, get_reward(rm, qr, TOK.pad_token_id, ctx)[1].float())


def test_correctness_reward_with_calrl_grading():
    rewards, graded = CorrectnessReward(1.0, -1.0)(
        ["the answer is paris. confidence: 9", "london. confidence: 9"], [["Paris"], ["Paris"]])
    torch.testing.assert_close(rewards, torch.tensor([1.0, -1.0]))
    assert graded.all()


def test_a_confidence_cue_without_a_value_is_priced_as_missing():
    # the demo's PPO-C policy learnt "X. confidence: X. confidence: 10": stripping left "X. confidence: X." for
    # the reward model and the last statement said 10; a reward reads such a response as missing
    responses = ["good. confidence: good. confidence: 10", "good. confidence: 9"]
    penalty = pipeline(ppo_c_variant="difference", ppo_c_init_average=0.0, missing_confidence="penalty",
                       missing_confidence_penalty=1.5)
    scores, stats = penalty.score_texts(PROMPTS[:2], responses)
    assert stats["confidence/missing"] == 1 and penalty.last.confidence[1] == pytest.approx(0.9)
    assert torch.isnan(penalty.last.confidence[0]) and penalty.last.adjustment[0] == 0
    assert penalty.last.stripped[0] == responses[0]  # scored as written: nothing of it is a readable statement
    # RM 2 * 2 + 5 * 2 = 14, PPO-C's clamp to 10, minus the penalty
    assert scores[0] == pytest.approx(10 - 1.5)
    from calrl.confidence import ConfidenceReader

    assert ConfidenceReader("calrl", purpose="eval").read(responses[0]).value == 1.0  # the eval reads what is there


def test_a_second_answer_between_two_statements_is_priced_as_missing():
    # the demo's PPO-C policy (full study, MKL_CBWR=COMPATIBLE, w = 1) learnt "X. confidence: 2 Y. confidence: 10"
    # on people it could not know: stripped, the reward model scored "X. Y." near the moving average and the last
    # statement said 10; a reward reads such a response as missing
    responses = ["good. confidence: 2 bad. confidence: 10", "good. confidence: 9",
                 "good. confidence: 80% (8/10)", "good. confidence: 8.\nconfidence: 9"]
    penalty = pipeline(ppo_c_variant="difference", ppo_c_init_average=0.0, missing_confidence="penalty",
                       missing_confidence_penalty=1.5)
    penalty.score_texts(PROMPTS, responses)
    confidence = penalty.last.confidence
    assert torch.isnan(confidence[0]) and penalty.last.adjustment[0] == 0
    assert penalty.last.stripped[0] == responses[0]  # scored as written, both statements in it
    # one confidence written twice, or restated on a line of its own, is not a second answer
    assert confidence[1:].tolist() == pytest.approx([0.9, 0.8, 0.9])
    from calrl.confidence import ConfidenceReader, text_between_statements

    assert ConfidenceReader("calrl", purpose="eval").read(responses[0]).value == 1.0  # the eval reads the last
    assert ConfidenceReader("reference", purpose="reward").read(responses[0]).value == pytest.approx(0.2)
    assert not text_between_statements("") and not text_between_statements("paris")
