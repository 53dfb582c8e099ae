"""The reference's reward-model dynamics as named modes, on hand-worked numbers (docs/fidelity.md):
RM statistics from a named split (``reward_stats_split``), " " + EOS after stripped PPO-C texts
(``strip_append_eos``) and truncation of long preference pairs (``long_pairs``)."""

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from calrl.cli.main import main
from calrl.errors import ConfigError
from calrl.reward_modeling.calibrated_data import CalibratedPairsConfig
from calrl.reward_modeling.stats import dataset_reward_statistics
from calrl.reward_modeling.tokenization import tokenize_preference_pairs
from calrl.rewards.pipeline import RewardPipeline, RewardPipelineConfig
from calrl.runners.recipe import load_recipe
from calrl.runners.rm import RewardModelRunner
from calrl.tiny.models import build_tiny_reward_model, build_word_tokenizer
from calrl.trainers.ppo_config import CalibratedPPOConfig
from calrl.trainers.reward import CalibratedRewardConfig, CalibratedRewardTrainer

REPO = Path(__file__).resolve().parents[1]
TINY_RM = REPO / "configs" / "tests" / "tiny_rm.yaml"


class CountingRM(torch.nn.Module):
    """Score = sum of ``weights[token]`` over the attended tokens: a reward model to work out by hand."""

    def __init__(self, tok, weights):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.weights = {tok.convert_tokens_to_ids(t): w for t, w in weights.items()}

    def counts(self, input_ids, attended):
        return sum(w * ((input_ids == i) & attended).sum(1).float() for i, w in self.weights.items())

    def forward(self, input_ids, attention_mask=None, **kwargs):
        mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        return SimpleNamespace(logits=self.counts(input_ids, mask)[:, None] + self.anchor)


# ------------------------------------------------------------------------------- f. reward_stats_split
WORDS = build_word_tokenizer(["q good bad"])
IDS = {w: WORDS.convert_tokens_to_ids(w) for w in ("q", "good", "bad", "</s>")}


def ids(*words):
    return [IDS[w] for w in words]


def test_statistics_over_every_id_column_of_a_tokenized_split():
    rm = CountingRM(WORDS, {"good": 1.0})
    pairs = Dataset.from_dict({
        "chosen_ids": [ids("q", "good", "good", "</s>"), ids("q", "good", "</s>")],  # 2, 1
        "rejected_ids": [ids("q", "bad", "</s>"), ids("q", "good", "good", "good", "</s>")],  # 0, 3
        "chosen_high_ids": [ids("good", "good", "good", "good", "</s>"), ids("</s>")],  # 4, 0
    })
    stats = dataset_reward_statistics(rm, pairs, ["chosen_ids", "rejected_ids"], WORDS.pad_token_id, batch_size=3)
    # mean 6/4 = 1.5; squared deviations .25 + .25 + 2.25 + 2.25 = 5, unbiased: 5/3
    assert stats["count"] == 4 and stats["mean"] == pytest.approx(1.5)
    assert stats["std"] == pytest.approx(math.sqrt(5 / 3))
    every = dataset_reward_statistics(rm, pairs, ["chosen_ids", "rejected_ids", "chosen_high_ids"],
                                      WORDS.pad_token_id)
    # 2, 1, 0, 3, 4, 0: mean 5/3; squared deviations 1/9 + 4/9 + 25/9 + 16/9 + 49/9 + 25/9 = 120/9, / 5 = 8/3
    assert every["count"] == 6 and every["mean"] == pytest.approx(5 / 3)
    assert every["std"] == pytest.approx(math.sqrt(8 / 3))


def rm_runner(split, tmp_path):
    recipe = load_recipe(TINY_RM, [f"training.reward_stats_split={split}", f"training.output_dir={tmp_path}",
                                   "training.report_to=none"])
    runner = RewardModelRunner(recipe)
    runner.tokenizer = WORDS
    runner.train_pairs = Dataset.from_dict({"prompt": ["q ", "q "], "chosen": ["good good good", "good"],
                                            "rejected": ["bad", "good good"]})  # 3, 1, 0, 2
    eval_ids = Dataset.from_dict({"chosen_ids": [ids("q", "good", "</s>")], "rejected_ids": [ids("q", "bad", "</s>")],
                                  "margin": [0.0]})  # 1, 0 (the margin column is not a sequence)
    trainer = SimpleNamespace(model=CountingRM(WORDS, {"good": 1.0}), eval_dataset=eval_ids,
                              train_dataset=tokenize_preference_pairs(runner.train_pairs, WORDS),
                              accelerator=SimpleNamespace(is_main_process=False))
    return runner, trainer


def test_train_rm_statistics_come_from_the_named_split(tmp_path):
    runner, trainer = rm_runner("train", tmp_path)
    stats = runner.reward_statistics(trainer)
    # training responses 3, 1, 0, 2: mean 1.5, squared deviations 2.25 + .25 + 2.25 + .25 = 5, unbiased 5/3
    assert (stats["count"], stats["mean"], stats["std"]) == (4, pytest.approx(1.5), pytest.approx(math.sqrt(5 / 3)))
    runner, trainer = rm_runner("eval", tmp_path)
    stats = runner.reward_statistics(trainer)
    # the reference's: the eval split's responses 1, 0: mean .5, std sqrt(.5)
    assert (stats["count"], stats["mean"], stats["std"]) == (2, pytest.approx(0.5), pytest.approx(math.sqrt(0.5)))
    runner.reward_stats, runner.scalars, runner.held_out = stats, {}, True
    assert any(title.startswith("Reward statistics (eval responses") for title in runner.card_sections(trainer))


def test_statistics_from_eval_without_an_eval_split_is_one_line(tmp_path, capsys):
    with pytest.raises(ConfigError, match="'training.reward_stats_split': 'eval' needs an eval split"):
        load_recipe(TINY_RM, ["data.eval_fraction=0", "training.reward_stats_split=eval"])
    code = main(["train-rm", "--config", str(TINY_RM), "--dry-run", "data.eval_fraction=0",
                 "training.reward_stats_split=eval", f"training.output_dir={tmp_path / 'out'}",
                 "training.report_to=none"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "needs an eval split" in err and "Traceback" not in err, err
    with pytest.raises(ConfigError, match="must be one of train, eval, got 'test'"):
        CalibratedRewardConfig(str(tmp_path), reward_stats_split="test", report_to="none", use_cpu=True)


# ---------------------------------------------------------------------------------- h. long_pairs
PAIRS = Dataset.from_dict({"prompt": ["q ", "q "], "chosen": ["good", "good good good good"], "rejected": ["bad", "bad"]})


def test_long_pairs_dropped_or_truncated_on_the_left():
    dropped = tokenize_preference_pairs(PAIRS, WORDS, max_length=4)
    assert dropped["chosen_ids"] == [ids("q", "good", "</s>")]  # [q good good good good </s>] is 6 > 4: row gone
    kept = tokenize_preference_pairs(PAIRS, WORDS, max_length=4, long_pairs="truncate")
    # the reference's tokenizer truncates on the left: the last 4 ids, EOS kept; the short sequences unchanged
    assert kept["chosen_ids"] == [ids("q", "good", "</s>"), ids("good", "good", "good", "</s>")]
    assert kept["rejected_ids"] == [ids("q", "bad", "</s>")] * 2
    calibrated = tokenize_preference_pairs(PAIRS, WORDS, max_length=4, long_pairs="truncate",
                                           pairs_config=CalibratedPairsConfig(high_range=(8, 8), low_range=(2, 2)))
    # "q good\nConfidence: 8</s>" is [q good confidence : 8 </s>]: its last 4 ids; the same for every text
    for column, value in (("chosen_high_ids", "8"), ("chosen_low_ids", "2"), ("rejected_high_ids", "8"),
                          ("rejected_low_ids", "2")):
        assert [WORDS.convert_ids_to_tokens(row) for row in calibrated[column]] == \
            [["confidence", ":", value, "</s>"]] * 2
    with pytest.raises(ConfigError, match="must be one of drop, truncate"):
        tokenize_preference_pairs(PAIRS, WORDS, max_length=4, long_pairs="cut")


@pytest.mark.parametrize("mode, rows", [("drop", 1), ("truncate", 2)])
def test_reward_trainer_keeps_the_truncated_pairs(tmp_path, mode, rows):
    args = CalibratedRewardConfig(str(tmp_path), max_length=4, long_pairs=mode, calibration_lambda=0.0,
                                  report_to="none", use_cpu=True)
    trainer = CalibratedRewardTrainer(build_tiny_reward_model(WORDS), args=args, train_dataset=PAIRS,
                                      processing_class=WORDS)
    assert len(trainer.train_dataset) == rows  # TRL's own max_length filter keeps what calrl truncated
    assert max(map(len, trainer.train_dataset["chosen_ids"])) <= 4


# ---------------------------------------------------------------------------- g. strip_append_eos
def space_tokenizer(extra=()):
    """Words, punctuation and each space as tokens (a space is a token, as in byte-level BPE); pad != EOS."""
    words = ["<pad>", "</s>", "<unk>", *extra, " ", "good", "bad", "q", "confidence", ":", ".", *map(str, range(10))]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"\s|\w+|[^\w\s]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


SPACED = space_tokenizer()
WEIGHTS = {"good": 1.0, " ": 10.0, "</s>": 100.0}  # the RM counts good words, spaces and EOS tokens
RESPONSES = ["good confidence: 8", "good good confidence: 8.", "good", "bad bad confidence: 2"]
ENDED = [True, False, True, True]  # the 2nd is cut at the length limit; the 4th ends in the last column
# stripped by the reference's regex (calrl's confidence_parser: reference): "good", "good good", -, "bad bad"
DEFAULT = [101.0, 12.0, 101.0, 110.0]  # good </s> | good _ good | good </s> (not stripped) | bad _ bad </s>
# the reference's " " + EOS where the row does not end with EOS: good </s> _ </s> | good _ good _ </s>
APPENDED = [211.0, 122.0, 101.0, 110.0]


def rollouts(tok, pad):
    rows = [tok(r, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if e else [])
            for r, e in zip(RESPONSES, ENDED)]
    width = max(map(len, rows))
    assert [len(r) for r in rows] == [7, 9, 2, 9]  # rows 2 and 4 fill the width; 1 and 3 are padded
    responses = torch.full((len(rows), width), pad)
    for i, r in enumerate(rows):
        responses[i, :len(r)] = torch.tensor(r)
    queries = torch.tensor([[tok.convert_tokens_to_ids("q")]] * len(rows))
    return torch.cat([queries, responses], 1)


def counting_scorer(model, rows, pad, context_length):
    """The RM read on the rollout's own tokens: every non-pad token counts (calrl masks pads)."""
    return None, model.counts(rows, rows != pad)


def rm_scores(append, pad=None, reward_tokenizer=None):
    pad = SPACED.pad_token_id if pad is None else pad
    rm = CountingRM(reward_tokenizer or SPACED, WEIGHTS)
    config = RewardPipelineConfig(ppo_c_variant="difference", ppo_c_init_average=0.0, confidence_parser="reference",
                                  strip_append_eos=append)
    pipe = RewardPipeline(config, rm, reward_tokenizer=reward_tokenizer, policy_tokenizer=SPACED,
                          rm_scorer=counting_scorer)
    pipe.score_rollouts(rollouts(SPACED, pad), 1, pad, prompts=["q"] * len(RESPONSES))
    return pipe.last.rm_raw.tolist()


def test_space_eos_after_stripped_texts_not_ending_with_eos():
    assert rm_scores(False) == DEFAULT
    assert rm_scores(True) == APPENDED


def test_space_eos_in_the_reward_models_own_tokens():
    other = space_tokenizer(extra=["zebra"])  # other ids: the RM reads the text in its own tokens
    assert other.convert_tokens_to_ids("good") != SPACED.convert_tokens_to_ids("good")
    assert rm_scores(False, reward_tokenizer=other) == DEFAULT
    assert rm_scores(True, reward_tokenizer=other) == APPENDED


def test_pad_that_is_eos_appends_only_to_cut_responses():
    # every row padded with EOS ends with EOS, so the reference appends nothing there; the cut response (row 2)
    # still gets " " + EOS, and that EOS counts as padding as every EOS does here: good _ good _ = 22
    eos = SPACED.eos_token_id
    assert rm_scores(False, pad=eos) == [1.0, 12.0, 1.0, 10.0]
    assert rm_scores(True, pad=eos) == [1.0, 22.0, 1.0, 10.0]


def test_space_eos_needs_stripped_texts_and_is_mirrored_by_the_ppo_config(tmp_path):
    with pytest.raises(ConfigError, match="none is"):
        RewardPipelineConfig(strip_append_eos=True)  # vanilla PPO strips nothing
    assert RewardPipelineConfig(strip_confidence=True, strip_append_eos=True).strip_append_eos
    args = CalibratedPPOConfig(str(tmp_path), ppo_c_variant="threshold", strip_append_eos=True, report_to="none",
                               use_cpu=True)
    assert args.strip_append_eos is True


@pytest.mark.slow
def test_train_rm_stores_the_eval_splits_statistics(tmp_path, monkeypatch):
    import json

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "rm"
    code = main(["train-rm", "--config", str(TINY_RM), f"training.output_dir={out}", "training.report_to=none",
                 "training.reward_stats_split=eval", "training.calibration_lambda=1.0"])
    assert code == 0
    stats = json.loads((out / "reward_stats.json").read_text())
    # eval_fraction 0.25 of 32 pairs: 8 held out, each scored as chosen, rejected and the four calibrated texts
    assert stats["count"] == 8 * 6
    assert json.loads((out / "config.json").read_text())["calrl_reward_count"] == 48
    assert "Reward statistics (eval responses" in (out / "README.md").read_text()


# ------------------------------------------------------------- the training statistics from the trainer's ids
def test_training_statistics_read_the_trainers_ids_when_every_pair_is_there_uncut(monkeypatch):
    from calrl.reward_modeling import probe
    from calrl.reward_modeling.stats import same_rows, training_reward_statistics

    model = build_tiny_reward_model(WORDS, seed=3).eval()
    pairs = Dataset.from_dict({"prompt": ["q "] * 5, "chosen": ["good", "good good", "bad good", "good", "bad"],
                               "rejected": ["bad", "bad bad", "bad", "good bad", "good good good good"]})
    expected = training_reward_statistics(model, WORDS, pairs, batch_size=2)  # tokenizing every text itself
    tokenized = tokenize_preference_pairs(pairs, WORDS)
    assert same_rows(pairs, tokenized) and same_rows(pairs, tokenized, max_length=16)

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(probe, "tokenize_responses", no_tokenizing)
    # the same ids in the same batches: the same statistics to the bit
    assert training_reward_statistics(model, WORDS, pairs, batch_size=2, tokenized=tokenized) == expected
    # a pair dropped, or one that max_length may have cut, or no id columns: the texts are tokenized again
    assert not same_rows(pairs, tokenize_preference_pairs(pairs, WORDS, max_length=4))
    assert not same_rows(pairs, tokenized, max_length=6)  # [q good good good good </s>] is 6 long
    assert not same_rows(pairs, pairs)
    with pytest.raises(AssertionError, match="tokenized again"):
        training_reward_statistics(model, WORDS, pairs, batch_size=2, tokenized=tokenized, max_length=6)
