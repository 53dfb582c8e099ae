"""End-to-end CPU PPO with tiny models: pipeline rewards, logged components, PPO-C vs vanilla, checkpoints."""

import json

import pytest
import torch
from datasets import Dataset
from transformers import TrainerCallback

from calrl.errors import ConfigError
from calrl.testing.tiny import build_scripted_causal_lm, build_tiny_reward_model, build_word_tokenizer
from calrl.rewards.ppo_c import ppo_c_adjustment
from calrl.trainers.ppo import REWARD_STATE_FILE, CalibratedPPOConfig, CalibratedPPOTrainer

QUESTIONS = ["what is 2 + 2 ?", "what is 3 + 1 ?", "what is 1 + 4 ?", "what is 2 + 3 ?",
             "what is 0 + 4 ?", "what is 1 + 1 ?", "what is 4 + 0 ?", "what is 6 - 2 ?"]
REFERENCES = ["4", "4", "5", "5", "4", "2", "4", "4"]
DIGITS = ("2", "5", "8")


def scripted_confidence_lm(tok, seed=0):
    """A tiny LM that answers "4 confidence: D" (D drawn from 2, 5, 8) then EOS."""
    chain = [("<|assistant|>", ["4"]), ("4", ["confidence"]), ("confidence", [":"]), (":", list(DIGITS)),
             *[(d, [tok.eos_token]) for d in DIGITS]]
    return build_scripted_causal_lm(tok, chain, seed=seed)


class LogCollector(TrainerCallback):
    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs))


def run_ppo(tmp_path, name, *, save_steps=None, with_eval=False, **pipeline_args):
    tok = build_word_tokenizer(QUESTIONS)
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
               for q in QUESTIONS]
    data = Dataset.from_dict({"input_ids": [tok(p, add_special_tokens=False)["input_ids"] for p in prompts],
                              "reference": REFERENCES})
    args = CalibratedPPOConfig(
        output_dir=str(tmp_path / name), use_cpu=True, report_to="none", seed=0, total_episodes=16,
        per_device_train_batch_size=4, gradient_accumulation_steps=1, num_mini_batches=1, response_length=16,
        num_ppo_epochs=1, stop_token="eos", num_sample_generations=0, logging_steps=1, disable_tqdm=True,
        save_strategy="steps" if save_steps else "no", save_steps=save_steps or 500,
        reference_column="reference", correctness_mode="add", correct_reward=1.0, wrong_reward=0.0,
        **pipeline_args)
    collector = LogCollector()
    trainer = CalibratedPPOTrainer(
        args=args, processing_class=tok, model=scripted_confidence_lm(tok), ref_model=scripted_confidence_lm(tok),
        reward_model=build_tiny_reward_model(tok, seed=2), value_model=build_tiny_reward_model(tok, seed=1),
        train_dataset=data, eval_dataset=data if with_eval else None, callbacks=[collector])
    records = []
    score = trainer.reward_pipeline._score

    def recording_score(*a, **k):
        out = score(*a, **k)
        records.append(trainer.reward_pipeline.last)
        return out

    trainer.reward_pipeline._score = recording_score
    trainer.train()
    return trainer, records, [log for log in collector.logs if "objective/scores" in log]


def test_ppo_c_vs_vanilla_scores_and_logged_components(tmp_path):
    _, vanilla, vlogs = run_ppo(tmp_path, "vanilla", strip_confidence=True)
    trainer, ppo_c, clogs = run_ppo(tmp_path, "ppo_c", save_steps=2, with_eval=True, ppo_c_variant="threshold",
                                    ppo_c_weight=0.5)
    assert len(vanilla) == len(ppo_c) == 4 and len(vlogs) == len(clogs) == 4

    # every rollout states a confidence, answers "4", and the RM read it without the statement
    for rec in ppo_c:
        assert not torch.isnan(rec.confidence).any()
        assert {round(x, 4) for x in rec.confidence.tolist()} <= {0.2, 0.5, 0.8}
        assert all(s.strip() == "4" for s in rec.stripped)

    # step 1: same seed, same rollouts; PPO-C differs from vanilla by exactly the adjustment
    v, c = vanilla[0], ppo_c[0]
    torch.testing.assert_close(v.base, c.base)
    torch.testing.assert_close(v.final, v.base)
    assert c.average == pytest.approx(c.base.clamp(-10, 10).mean().item())  # first batch initialises avg
    predicted = ppo_c_adjustment(c.base.clamp(-10, 10), c.confidence, c.average, variant="threshold", weight=0.5)
    torch.testing.assert_close(c.final - v.final, predicted)
    assert predicted.abs().sum() > 0  # the two runs really differ

    # later steps follow the formula with the moving average of that step
    avg = c.average
    for rec in ppo_c[1:]:
        r = rec.base.clamp(-10, 10)
        avg = 0.1 * r.mean().item() + 0.9 * avg
        assert rec.average == pytest.approx(avg, rel=1e-5)
        torch.testing.assert_close(rec.final, r + ppo_c_adjustment(r, rec.confidence, avg, variant="threshold",
                                                                   weight=0.5))

    # logged every step beside TRL's own metrics; objective/scores is the pipeline's final score
    for log, rec in zip(clogs, ppo_c):
        for key in ("reward/rm_raw", "reward/adjustment", "reward/final", "reward/moving_average",
                    "confidence/mean", "confidence/parsable_rate", "abstention/rate", "correctness/accuracy",
                    "objective/kl"):
            assert key in log, key
        assert log["reward/final"] == pytest.approx(rec.final.mean().item(), abs=1e-4)
        assert log["objective/scores"] == pytest.approx(rec.final.mean().item(), abs=1e-4)
        assert log["reward/moving_average"] == pytest.approx(rec.average, abs=1e-4)
        assert log["confidence/parsable_rate"] == 1.0 and log["abstention/rate"] == 0.0
        assert log["correctness/accuracy"] == pytest.approx(rec.correct.float().mean().item())
    assert "reward/moving_average" not in vlogs[0] and vlogs[0]["reward/adjustment"] == 0.0
    # reference lookup: rollouts answer "4", graded against each prompt's reference, added to the RM score
    assert any(r.correct.any() and not r.correct.all() for r in ppo_c)
    torch.testing.assert_close(ppo_c[0].base - ppo_c[0].rm_raw, ppo_c[0].correct.float())

    # sample tables (generate_completions) score with the pipeline but leave the average and stats alone
    pipe = trainer.reward_pipeline
    average, updates = pipe.adjuster.average, pipe.adjuster.num_updates
    trainer.generate_completions(sampling=True)
    assert pipe.last.average == average and pipe.last.final.numel() == 8
    assert (pipe.adjuster.average, pipe.adjuster.num_updates) == (average, updates) and pipe.pop_stats() == {}

    # checkpoints carry the moving average; a new trainer resumes from it
    saved = json.loads((tmp_path / "ppo_c" / "checkpoint-2" / REWARD_STATE_FILE).read_text())
    assert saved["adjuster"]["average"] == pytest.approx(ppo_c[1].average)
    final_state = json.loads((tmp_path / "ppo_c" / "checkpoint-4" / REWARD_STATE_FILE).read_text())
    assert final_state["adjuster"]["average"] == pytest.approx(trainer.reward_pipeline.adjuster.average)
    trainer.load_reward_state(tmp_path / "ppo_c" / "checkpoint-2")
    assert trainer.reward_pipeline.adjuster.average == pytest.approx(ppo_c[1].average)
    assert trainer.reward_pipeline.adjuster.num_updates == 2


def test_config_rejects_bad_pipeline_settings(tmp_path):
    with pytest.raises(ConfigError, match="ppo_c_variant"):
        CalibratedPPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", ppo_c_variant="thresh")
    with pytest.raises(ConfigError, match="abstention_reward"):
        CalibratedPPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", abstention_reward="maybe")
    cfg = CalibratedPPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", abstention_reward="0.3")
    assert cfg.pipeline_config().abstention_reward == 0.3


def test_value_model_must_not_be_the_reward_model(tmp_path):
    tok = build_word_tokenizer(QUESTIONS)
    shared = build_tiny_reward_model(tok)
    data = Dataset.from_dict({"input_ids": [tok(q)["input_ids"] for q in QUESTIONS]})
    args = CalibratedPPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", total_episodes=8,
                               per_device_train_batch_size=4, num_mini_batches=1)
    with pytest.raises(ConfigError, match="separate instances"):
        CalibratedPPOTrainer(args=args, processing_class=tok, model=scripted_confidence_lm(tok),
                             ref_model=scripted_confidence_lm(tok), reward_model=shared, value_model=shared,
                             train_dataset=data)
