"""calrl's own PPO trainer on tiny CPU models: pipeline rewards, callback events, exact resume, formats."""

import json
import shutil

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file
from transformers import Trainer, TrainerCallback

from calrl.errors import ConfigError, InputError
from calrl.reward_modeling.sequence_scores import head_outputs
from calrl.rewards.ppo_c import ppo_c_adjustment
from calrl.tiny.models import (
    build_scripted_causal_lm,
    build_tiny_causal_lm,
    build_tiny_reward_model,
    build_word_tokenizer,
)
from calrl.trainers.ppo import CalibratedPPOConfig, CalibratedPPOTrainer
from calrl.trainers.ppo_checkpoint import COMPLETE_MARKER, STATE_FILE

QUESTIONS = ["what is 2 + 2 ?", "what is 3 + 1 ?", "what is 1 + 4 ?", "what is 2 + 3 ?",
             "what is 0 + 4 ?", "what is 1 + 1 ?", "what is 4 + 0 ?", "what is 6 - 2 ?"]
REFERENCES = ["4", "4", "5", "5", "4", "2", "4", "4"]
DIGITS = ("2", "5", "8")
TIMING_KEYS = ("eps", "train_runtime", "train_samples_per_second")


def scripted_confidence_lm(tok, seed=0):
    """A tiny LM that answers "4 confidence: D" (D drawn from 2, 5, 8) then EOS."""
    chain = [("<|assistant|>", ["4"]), ("4", ["confidence"]), ("confidence", [":"]), (":", list(DIGITS)),
             *[(d, [tok.eos_token]) for d in DIGITS]]
    return build_scripted_causal_lm(tok, chain, seed=seed)


class EventLog(TrainerCallback):
    def __init__(self):
        self.events, self.logs = [], []

    def __getattribute__(self, name):
        if name.startswith("on_"):
            def record(args, state, control, **kwargs):
                self.events.append((name, state.global_step))
                if name == "on_log":
                    self.logs.append(dict(kwargs["logs"]))
            return record
        return super().__getattribute__(name)


def conversations():
    return [[{"role": "user", "content": q}] for q in QUESTIONS]


def make_trainer(tmp_path, name, *, policy=None, callbacks=(), eval_dataset=None, value_model="rm", data=None,
                 **kwargs):
    tok = build_word_tokenizer(QUESTIONS)
    settings = {"output_dir": str(tmp_path / name), "use_cpu": True, "report_to": "none", "seed": 0, "num_train_epochs": 2,
                    "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1, "num_mini_batches": 1,
                    "response_length": 8, "num_ppo_epochs": 1, "stop_token": "eos", "num_sample_generations": 0, "logging_steps": 1,
                    "disable_tqdm": True, "save_strategy": "no", "learning_rate": 1e-3}
    settings.update(kwargs)
    args = CalibratedPPOConfig(**settings)
    if data is None:
        data = Dataset.from_dict({"prompt": conversations(), "reference": REFERENCES})
    value = build_tiny_reward_model(tok, seed=1) if value_model == "rm" else None
    return CalibratedPPOTrainer(args, tok, policy(tok) if policy else build_tiny_causal_lm(tok, seed=0), None,
                                build_tiny_reward_model(tok, seed=2), data, value, eval_dataset=eval_dataset,
                                callbacks=list(callbacks))


def recorded(trainer):
    records = []
    score = trainer.reward_pipeline.score_rollouts

    def recording(*a, **k):
        out = score(*a, **k)
        if k.get("update", True):
            records.append(trainer.reward_pipeline.last)
        return out

    trainer.reward_pipeline.score_rollouts = recording
    return records


def test_ppo_c_vs_vanilla_scores_and_logged_components(tmp_path):
    common = {"policy": scripted_confidence_lm, "correctness_mode": "add", "total_episodes": 8, "num_train_epochs": 1}
    vanilla = make_trainer(tmp_path, "vanilla", strip_confidence=True, **common)
    vrec, vlog = recorded(vanilla), EventLog()
    vanilla.add_callback(vlog)
    vanilla.train()
    ppo_c = make_trainer(tmp_path, "ppo_c", ppo_c_variant="threshold", ppo_c_weight=0.5, save_strategy="steps",
                         save_steps=2, eval_dataset=Dataset.from_dict({"prompt": conversations()}), **common)
    crec, clog = recorded(ppo_c), EventLog()
    ppo_c.add_callback(clog)
    ppo_c.train()
    clogs = [log for log in clog.logs if "objective/scores" in log]
    assert len(vrec) == len(crec) == 2 and len(clogs) == 2

    for rec in crec:  # every rollout states a confidence; the RM read the answer without the statement
        assert {round(x, 4) for x in rec.confidence.tolist()} <= {0.2, 0.5, 0.8}
        assert all(s.strip() == "4" for s in rec.stripped)
    v, c = vrec[0], crec[0]  # same seed, same rollouts: PPO-C differs from vanilla by exactly the adjustment
    torch.testing.assert_close(v.base, c.base)
    assert c.average == pytest.approx(c.base.clamp(-10, 10).mean().item())
    predicted = ppo_c_adjustment(c.base.clamp(-10, 10), c.confidence, c.average, variant="threshold", weight=0.5)
    torch.testing.assert_close(c.final - v.final, predicted)
    assert predicted.abs().sum() > 0
    r = crec[1].base.clamp(-10, 10)
    avg = 0.1 * r.mean().item() + 0.9 * c.average
    assert crec[1].average == pytest.approx(avg, rel=1e-5)

    for log, rec in zip(clogs, crec):
        assert log["objective/scores"] == pytest.approx(rec.final.mean().item(), abs=1e-5)
        assert log["reward/moving_average"] == pytest.approx(rec.average, abs=1e-5)
        assert log["correctness/accuracy"] == pytest.approx(rec.correct.float().mean().item())
    torch.testing.assert_close(crec[0].base - crec[0].rm_raw, crec[0].correct.float())
    assert any(r.correct.any() and not r.correct.all() for r in crec)  # graded against each prompt's reference

    # evaluation scores with the pipeline but leaves the moving average and the statistics alone
    pipe = ppo_c.reward_pipeline
    average, updates = pipe.adjuster.average, pipe.adjuster.num_updates
    metrics = ppo_c.evaluate()
    assert metrics["eval_objective/scores"] == pytest.approx(float(pipe.last.final.mean()), abs=1e-5)
    assert (pipe.adjuster.average, pipe.adjuster.num_updates) == (average, updates) and pipe.pop_stats() == {}

    saved = json.loads((tmp_path / "ppo_c" / "checkpoint-2" / STATE_FILE).read_text())
    assert saved["reward_pipeline"]["adjuster"]["average"] == pytest.approx(crec[1].average)
    assert (tmp_path / "ppo_c" / "checkpoint-2" / COMPLETE_MARKER).is_file()


def test_trl_metric_names_and_callback_events(tmp_path):
    events = EventLog()
    trainer = make_trainer(tmp_path, "events", callbacks=[events], save_strategy="epoch", eval_strategy="epoch",
                           eval_dataset=Dataset.from_dict({"prompt": conversations()[:4]}), logging_steps=2)
    trainer.train()
    names = [e for e, _ in events.events]
    assert names[0] == "on_init_end" or names[0] == "on_train_begin"
    assert names.count("on_epoch_begin") == names.count("on_epoch_end") == 2
    assert names.count("on_step_begin") == names.count("on_step_end") == 4
    assert names.count("on_evaluate") == 2 and names.count("on_save") == 2 and names[-1] in ("on_log", "on_train_end")
    ends = [step for e, step in events.events if e == "on_epoch_end"]
    assert ends == [2, 4]
    saves = [step for e, step in events.events if e == "on_save"]
    assert saves == [2, 4]
    train_logs = [log for log in events.logs if "objective/kl" in log]
    assert len(train_logs) == 2  # logging_steps=2 over 4 updates: each log averages its window
    for key in ("objective/kl", "objective/entropy", "objective/non_score_reward", "objective/rlhf_reward",
                "objective/scores", "policy/approxkl_avg", "policy/clipfrac_avg", "loss/policy_avg",
                "loss/value_avg", "val/clipfrac_avg", "policy/entropy_avg", "val/ratio", "val/ratio_var",
                "val/num_eos_tokens", "val/explained_variance", "lr", "episode", "objective/kl_coef",
                "reward/final"):
        assert key in train_logs[0], key
    assert [log["episode"] for log in train_logs] == [8, 16]
    assert all("eval_objective/scores" in log for log in events.logs if any(k.startswith("eval_") for k in log))


# the reference's dynamics (docs/fidelity.md): the critic's own rate and clipping, the other named modes
REFERENCE_MODES = {"critic_learning_rate": 3e-3, "critic_max_grad_norm": 0.5, "loss_aggregation": "sequence_mean",
                   "advantage_whitening": "global", "score_placement": "last_token",
                   "scheduler_cadence": "per_optimizer_step", "ppo_c_average_cadence": "per_micro_batch",
                   "local_rollout_forward_batch_size": 2}


@pytest.mark.parametrize("modes", [{}, REFERENCE_MODES], ids=["trl", "reference"])
def test_interrupted_and_resumed_run_equals_the_uninterrupted_run(tmp_path, modes):
    class StopAfterFirstEpoch(TrainerCallback):
        def on_epoch_end(self, args, state, control, **kwargs):
            control.should_training_stop = True

    settings = {"num_train_epochs": 3, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 2,
                    "num_mini_batches": 2, "num_ppo_epochs": 2, "save_strategy": "epoch", "logging_steps": 3,
                    "ppo_c_variant": "threshold", "correctness_mode": "add", "kl_target": 0.1, "kl_horizon": 100,
                    **modes}
    full = make_trainer(tmp_path, "full", **settings)
    full.train()
    make_trainer(tmp_path, "resumed", callbacks=[StopAfterFirstEpoch()], **settings).train()
    assert sorted(p.name for p in (tmp_path / "resumed").glob("checkpoint-*")) == ["checkpoint-2"]
    resumed = make_trainer(tmp_path, "resumed", **settings)
    resumed.train(resume_from_checkpoint="latest")
    for part in ("model.safetensors", "value_model/model.safetensors"):
        a, b = load_file(tmp_path / "full" / "checkpoint-6" / part), load_file(tmp_path / "resumed" / "checkpoint-6" / part)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    strip = [[{k: v for k, v in log.items() if k not in TIMING_KEYS} for log in t.state.log_history]
             for t in (full, resumed)]
    assert strip[0] == strip[1] and len(strip[0]) == 3
    assert full.kl_controller.value == resumed.kl_controller.value != 0.05  # the adaptive coefficient moved
    assert full.reward_pipeline.adjuster.average == resumed.reward_pipeline.adjuster.average
    lrs = {g["initial_lr"] for g in resumed.optimizer.param_groups}  # the schedule ends at 0
    assert lrs == {g["initial_lr"] for g in full.optimizer.param_groups} and len(lrs) == (2 if modes else 1)


def test_resume_refuses_incomplete_and_foreign_checkpoints(tmp_path):
    trainer = make_trainer(tmp_path, "run", save_strategy="epoch", num_train_epochs=1)
    trainer.train()
    good = tmp_path / "run" / "checkpoint-2"
    broken = tmp_path / "run" / "checkpoint-9"
    shutil.copytree(good, broken)
    (broken / COMPLETE_MARKER).unlink()
    with pytest.raises(InputError, match="incomplete checkpoint"):
        make_trainer(tmp_path, "run").train(resume_from_checkpoint=str(broken))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "trainer_state.json").write_text("{}")
    with pytest.raises(InputError, match="another method"):
        make_trainer(tmp_path, "run").train(resume_from_checkpoint=str(foreign))
    state = json.loads((good / STATE_FILE).read_text())
    (good / STATE_FILE).write_text(json.dumps({**state, "method": "grpo"}))
    with pytest.raises(InputError, match="method 'grpo'"):
        make_trainer(tmp_path, "run").train(resume_from_checkpoint=str(good))


def test_text_conversation_and_tokenized_prompts_give_the_same_rows(tmp_path):
    tok = build_word_tokenizer(QUESTIONS)
    texts = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in conversations()]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    rows = []
    for data in ({"prompt": conversations()}, {"prompt": texts}, {"input_ids": ids}):
        trainer = make_trainer(tmp_path, f"fmt{len(rows)}", data=Dataset.from_dict(data))
        rows.append(trainer.prompts.input_ids)
    assert rows[0] == rows[1] == rows[2] == ids
    with pytest.raises(InputError, match="'input_ids' or 'prompt'"):
        make_trainer(tmp_path, "bad", data=Dataset.from_dict({"question": QUESTIONS}))
    with pytest.raises(InputError, match="reference column"):
        make_trainer(tmp_path, "noref", data=Dataset.from_dict({"prompt": texts}), correctness_mode="add")


def test_value_head_and_lora_reference(tmp_path):
    from peft import LoraConfig

    trainer = make_trainer(tmp_path, "head", value_model=None, save_strategy="epoch", num_train_epochs=1)
    trainer.train()
    assert (tmp_path / "head" / "checkpoint-2" / "value_head.safetensors").is_file()
    tok = build_word_tokenizer(QUESTIONS)
    args = CalibratedPPOConfig(output_dir=str(tmp_path / "lora"), use_cpu=True, report_to="none", seed=0,
                               num_train_epochs=1, per_device_train_batch_size=4, response_length=6, num_ppo_epochs=1,
                               stop_token="eos", num_sample_generations=0, logging_steps=1, disable_tqdm=True,
                               save_strategy="no")
    lora = CalibratedPPOTrainer(args, tok, build_tiny_causal_lm(tok), None, build_tiny_reward_model(tok, seed=2),
                                Dataset.from_dict({"prompt": conversations()}), build_tiny_reward_model(tok, seed=1),
                                peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                       task_type="CAUSAL_LM"))
    assert lora.ref_model is None and lora.is_peft_model
    lora.train()
    first = next(log for log in lora.state.log_history if "objective/kl" in log)
    assert abs(first["objective/kl"]) < 1e-5  # the adapter starts at zero: policy == reference at step 1
    lora.save_model(str(tmp_path / "lora_out"))
    assert (tmp_path / "lora_out" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("key,value,pattern", [
    ("ppo_c_variant", "thresh", "ppo_c_variant"), ("abstention_reward", "maybe", "abstention_reward"),
    ("learning_rate", -1e-6, "learning_rate"), ("learning_rate", float("nan"), "learning_rate"),
    ("response_length", 0, "response_length"), ("num_train_epochs", 0, "num_train_epochs"),
    ("num_train_epochs", -1, "num_train_epochs"), ("kl_coef", float("nan"), "kl_coef"),
    ("gamma", 1.5, "gamma"), ("num_mini_batches", 3, "num_mini_batches"), ("kl_estimator", "k2", "kl_estimator"),
])
def test_config_rejects_bad_values(tmp_path, key, value, pattern):
    with pytest.raises(ConfigError, match=pattern):
        CalibratedPPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", gradient_accumulation_steps=4,
                            **{key: value})


def test_the_mixins_shadow_nothing_of_transformers_trainer_nor_each_other():
    # the mixins come before Trainer in the MRO: a name of Trainer's defined in one would silently replace it
    mixins = CalibratedPPOTrainer.__mro__[1:CalibratedPPOTrainer.__mro__.index(Trainer)]
    assert len(mixins) == 4
    seen: dict[str, str] = {}
    for mixin in mixins:
        for name in vars(mixin):
            if name.startswith("__"):
                continue
            assert not hasattr(Trainer, name), f"{mixin.__name__}.{name} shadows transformers.Trainer.{name}"
            assert name not in seen, f"{mixin.__name__}.{name} shadows {seen[name]}.{name}"
            seen[name] = mixin.__name__


def test_config_is_not_changed_by_the_trainer(tmp_path):
    trainer = make_trainer(tmp_path, "frozen", num_train_epochs=1)
    before = trainer.args.to_dict()
    trainer.train()
    assert trainer.args.to_dict() == before
    cfg = CalibratedPPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", abstention_reward="0.3")
    assert cfg.abstention_reward == "0.3" and cfg.reward_term("abstention").value == 0.3  # read, not rewritten


def test_value_model_must_not_be_the_reward_model(tmp_path):
    tok = build_word_tokenizer(QUESTIONS)
    shared = build_tiny_reward_model(tok)
    args = CalibratedPPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", total_episodes=8,
                               per_device_train_batch_size=4)
    with pytest.raises(ConfigError, match="separate instances"):
        CalibratedPPOTrainer(args=args, processing_class=tok, model=scripted_confidence_lm(tok), ref_model=None,
                             reward_model=shared, value_model=shared,
                             train_dataset=Dataset.from_dict({"prompt": QUESTIONS}))


@pytest.mark.parametrize("normalize", [True, False])
def test_value_model_is_read_on_the_normalised_scale(tmp_path, normalize):
    """Under normalize_reward a separate value model's outputs are (raw - mean) / std with its stored statistics,
    as the reference's critic is; without it they are raw."""
    tok = build_word_tokenizer(QUESTIONS)
    reward, value = build_tiny_reward_model(tok, seed=2), build_tiny_reward_model(tok, seed=1)
    for model, (mean, std) in ((reward, (0.5, 2.0)), (value, (3.0, 4.0))):
        model.config.calrl_reward_mean, model.config.calrl_reward_std = mean, std
    args = CalibratedPPOConfig(output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none", seed=0,
                               num_train_epochs=1, per_device_train_batch_size=4, response_length=6,
                               num_ppo_epochs=1, stop_token="eos", num_sample_generations=0, disable_tqdm=True,
                               save_strategy="no", normalize_reward=normalize)
    trainer = CalibratedPPOTrainer(args, tok, build_tiny_causal_lm(tok), None, reward,
                                   Dataset.from_dict({"prompt": conversations()}), value)
    ids = torch.tensor([tok(QUESTIONS[0], add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        raw = head_outputs(value, ids, tok.pad_token_id).squeeze(-1)
        read = trainer.model.values(ids, tok.pad_token_id)
        logits_and_values = trainer.model(ids, tok.pad_token_id)[1]
    expected = (raw - 3.0) / 4.0 if normalize else raw
    torch.testing.assert_close(read, expected)
    torch.testing.assert_close(logits_and_values, expected)
    assert not torch.allclose(read, (raw - 3.0) / 4.0 if not normalize else raw)
