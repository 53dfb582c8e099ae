"""The reference mode (issue 8): hand cases worked out from methods.md section 9's rules, not from calrl's code."""

import sys
from pathlib import Path

import pytest
import torch

from calrl.confidence import ConfidenceReader
from calrl.errors import ConfigError
from calrl.reward_modeling.calibrated_data import CalibratedPairsConfig, build_calibrated_pairs
from calrl.reward_modeling.losses import calibrated_rm_loss, calibration_loss
from calrl.reward_modeling.stats import reward_statistics

sys.path.insert(0, str(Path(__file__).parent))
from ppo_c_helpers import Chain

REF_REWARD = ConfidenceReader("reference", purpose="reward")
REF_EVAL = ConfidenceReader("reference", purpose="eval")
CALRL = ConfidenceReader("calrl", purpose="reward", use_hedges=False)


@pytest.mark.parametrize("text, reference, calrl", [
    ("Paris. Confidence: 12", 1.0, 0.12),  # 12 / 10 clamped to 1; calrl: 12 %
    ("Paris. Confidence: 0.8", 0.08, 0.8),  # 0.8 / 10; calrl: a probability
    ("Paris. Confidence: 3. Confidence: 9", 0.3, 0.9),  # first vs last statement
    ("Paris. Confidence: 3. No, Confidence: 9", 0.3, None),  # calrl: a revision is no reward's one statement
    ("paris. confidence: 7", 0.7, 0.7),  # the training regex ignores case
    ("Paris. **Confidence:** 9", None, 0.9),  # not the reference's regex
    ("Paris. Confidence level: 8", None, 0.8),
])
def test_reward_parsers(text, reference, calrl):
    assert REF_REWARD.read(text).value == (None if reference is None else pytest.approx(reference))
    assert CALRL.read(text).value == (None if calrl is None else pytest.approx(calrl))


def test_reference_strip_removes_every_statement_and_leaves_variants():
    assert REF_REWARD.strip_statements("Paris. Confidence: 8.") == "Paris."
    assert REF_REWARD.strip_statements("A Confidence: 3, B confidence: 9/10!") == "A B"
    assert REF_REWARD.strip_statements("Paris. Confidence: 80%") == "Paris. %"  # the % sign stays
    assert REF_REWARD.strip_statements("Paris. **Confidence:** 9") == "Paris. **Confidence:** 9"


@pytest.mark.parametrize("text, value", [
    ("Answer: B\nConfidence: 8", 0.8),
    ("Answer: B\nConfidence: 85", 0.85),  # 10 < v <= 100: a percent
    ("Answer: B\nConfidence: 150", 1.0),  # above 100: 1.0
    ("Answer: B\nConfidence: 8\nConfidence: 2", 0.8),  # the first
    ("Answer: B\nconfidence: 8", 0.8),  # case-sensitive cue missed; the last line's number counts
    ("confidence: 8", None),  # one line, lowercase: nothing
    ("B\n7", 0.7),  # no cue: the last number of the last line
    ("B\n75", 0.75),  # above 10: divided by 10, then 7.5 / 10
    ("B\n7.5", 0.75),
    ("B\n7.3", None),  # a decimal other than .0 / .5 is invalid
    ("B\n150", None),  # above 100 is invalid
    ("B 7", None),  # one line: no fallback
])
def test_reference_eval_parser(text, value):
    got = REF_EVAL.read(text).value
    assert got == (None if value is None else pytest.approx(value))


def test_unknown_parser_and_old_missing_name_are_config_errors():
    with pytest.raises(ConfigError, match="confidence_parser"):
        ConfidenceReader("paper")
    from calrl.rewards.pipeline import RewardPipelineConfig

    with pytest.raises(ConfigError, match="now called 'exclude'"):
        RewardPipelineConfig(missing_confidence="skip")


# ----------------------------------------------------------------------------------------- PPO-C
def test_final_clamp_difference_w2():
    # w = 2, r = 9, c = 1, average 0 (no update): 9 + 2 * (9 - 0) * 0.5 = 18 -> clamped to 10
    on = Chain(variant="difference", weight=2.0, init_average=0.0)
    off = Chain(variant="difference", weight=2.0, init_average=0.0, final_clamp=False)
    r, c = torch.tensor([9.0]), torch.tensor([1.0])
    assert on(r, c, update=False)[0].item() == pytest.approx(10.0)
    assert off(r, c, update=False)[0].item() == pytest.approx(18.0)
    # with the update first (alpha 0.1): avg = 0.9; 9 + 2 * 8.1 * 0.5 = 17.1 -> 10
    assert on(r, c)[0].item() == pytest.approx(10.0)
    assert off(r, c)[0].item() == pytest.approx(17.1)


BATCHES = [([2.0, 4.0], [1.0, 0.0]), ([0.0, -2.0, 1.0], [1.0, 1.0, 0.5]), ([10.0, 6.0], [0.2, 0.9])]


def test_avg_type_mean_over_three_batches():
    adj = Chain(variant="threshold", weight=0.5, alpha=0.1, init_average=1.0)
    expected = [([2.5, 3.0], 1.2), ([0.0, -2.5, 1.0], 1.0466667), ([8.5, 7.2], 1.742)]
    for (r, c), (final, avg) in zip(BATCHES, expected):
        out, _ = adj(torch.tensor(r), torch.tensor(c))
        assert out.tolist() == pytest.approx(final)
        assert adj.average == pytest.approx(avg, abs=1e-6)


def test_avg_type_std_over_three_batches():
    adj = Chain(variant="threshold", weight=0.5, alpha=0.1, init_average=1.0, avg_type="std")
    # std (unbiased) of the batches: sqrt(2), sqrt(21/9), sqrt(8); threshold uses the signed r
    expected = [([2.5, 3.0], 1.0414214), ([0.0, -1.5, 1.0], 1.0900317), ([8.5, 7.2], 1.2638713)]
    for (r, c), (final, avg) in zip(BATCHES, expected):
        out, _ = adj(torch.tensor(r), torch.tensor(c))
        assert out.tolist() == pytest.approx(final)
        assert adj.average == pytest.approx(avg, abs=1e-6)


class _ConstRM(torch.nn.Module):
    def __init__(self, score, mean=None, std=None):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.score = score
        self.config = type("C", (), {})()
        if mean is not None:
            self.config.calrl_reward_mean, self.config.calrl_reward_std = mean, std

    def forward(self, input_ids, attention_mask, **kwargs):
        from types import SimpleNamespace

        return SimpleNamespace(logits=torch.full((input_ids.shape[0], 1), self.score) + self.anchor)


def _pipe(rm, **cfg):
    from calrl.rewards.pipeline import RewardPipeline, RewardPipelineConfig
    from calrl.tiny.models import build_word_tokenizer

    tok = build_word_tokenizer(["question answer confidence"])
    return RewardPipeline(RewardPipelineConfig(**cfg), rm, reward_tokenizer=tok)


def test_normalize_reward_and_average_from_the_rm_mean():
    # raw 10, stored mean 2, std 4: normalised (10 - 2) / 4 = 2; average starts at 0 (the mean, normalised)
    pipe = _pipe(_ConstRM(10.0, mean=2.0, std=4.0), ppo_c_variant="difference", normalize_reward=True)
    assert pipe.adjuster.average == 0.0
    scores, _ = pipe.score_texts(["question"], ["answer confidence: 10"])
    # avg = 0.1 * 2 = 0.2; 2 + 0.5 * (2 - 0.2) * 0.5 = 2.45
    assert scores.tolist() == pytest.approx([2.45])
    raw = _pipe(_ConstRM(10.0, mean=2.0, std=4.0), ppo_c_variant="difference")
    assert raw.adjuster.average == 2.0  # not normalised: the stored mean itself


def test_missing_rm_statistics():
    with pytest.raises(ConfigError, match="normalize_reward"):
        _pipe(_ConstRM(1.0), normalize_reward=True)
    with pytest.raises(ConfigError, match="ppo_c_init_average"):
        _pipe(_ConstRM(1.0), ppo_c_variant="threshold", ppo_c_init_average="rm_mean")
    assert _pipe(_ConstRM(1.0), ppo_c_variant="threshold").adjuster.average is None  # auto: first batch


def test_reward_statistics_by_hand():
    stats = reward_statistics(torch.tensor([1.0, 2.0, 3.0, 6.0]))  # mean 3; var (4+1+0+9)/3
    assert stats["mean"] == pytest.approx(3.0) and stats["std"] == pytest.approx((14 / 3) ** 0.5)


# ----------------------------------------------------------------------------------------- PPO-M
def test_ppo_m_losses_on_small_tensors():
    ch, cl = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0])
    rh, rl = torch.tensor([0.0, 2.0]), torch.tensor([0.0, 0.0])
    import math

    def bt(d):
        return -math.log(1 / (1 + math.exp(-d)))
    tc, tr = calibration_loss(ch, cl, rh, rl)
    assert tc.item() == pytest.approx((bt(1) + bt(0)) / 2)
    assert tr.item() == pytest.approx((bt(0) + bt(-2)) / 2)
    # per-row margin (1, 0) inside the calibration terms
    tc_m, tr_m = calibration_loss(ch, cl, rh, rl, torch.tensor([1.0, 0.0]))
    assert tc_m.item() == pytest.approx((bt(0) + bt(0)) / 2)
    assert tr_m.item() == pytest.approx((bt(-1) + bt(-2)) / 2)
    pref, cal = torch.tensor(0.7), torch.tensor(0.4)
    assert calibrated_rm_loss(pref, cal, 2.0, "combined").item() == pytest.approx(1.5)
    assert calibrated_rm_loss(pref, cal, 2.0, "calibration_only").item() == pytest.approx(0.8)


def test_reference_calibrated_texts():
    from datasets import Dataset

    ds = Dataset.from_dict({"prompt": [[{"role": "user", "content": "q"}]],
                            "chosen": [[{"role": "assistant", "content": "A. Confidence: 5"}]],
                            "rejected": [[{"role": "assistant", "content": "B"}]]})
    cfg = CalibratedPairsConfig(template="\n{confidence}.", strip_existing=False, system_prompt="SYS", seed=1)
    row = build_calibrated_pairs(ds, cfg)[0]
    n = round(row["chosen_high_confidence"] * 10)
    assert 7 <= n <= 10
    assert row["chosen_high"][-1]["content"] == f"A. Confidence: 5\nConfidence: {n}."  # kept, then appended
    assert row["calibrated_prompt"][0] == {"role": "system", "content": "SYS"}


# ----------------------------------------------------------------------------------------- retry rule
def test_retry_until_a_confidence_is_stated_last_try_forced():
    from calrl.data.heldout import EvalItem
    from calrl.generation.generate import generate_predictions
    from calrl.generation.prompts import ElicitationPrompt
    from calrl.tiny.models import build_scripted_causal_lm, build_word_tokenizer

    tok = build_word_tokenizer(["paris confidence 7 question capital"])
    chain = [("<|assistant|>", ["paris"]), ("paris", [tok.eos_token]), (":", ["7"]), ("7", [tok.eos_token])]
    model = build_scripted_causal_lm(tok, chain)
    items = [EvalItem(id="a", question="capital", reference=["paris"])]
    records = generate_predictions(model, tok, items, prompt=ElicitationPrompt(style="standard"),
                                   max_new_tokens=4, confidence_retries=3, show_progress=False)
    # greedy: tries 1 and 2 repeat "paris"; try 3 appends " Confidence: " and the model writes 7
    assert records[0].retries == 3
    assert ConfidenceReader().read(records[0].response).value == pytest.approx(0.7)
    plain = generate_predictions(model, tok, items, prompt=ElicitationPrompt(), max_new_tokens=4,
                                 show_progress=False)
    assert plain[0].retries is None and ConfidenceReader().read(plain[0].response).value is None
