"""Calibrated reward modeling (PPO-M): pairs, the calibrated loss on TRL's RewardTrainer, the bias probe."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from peft import LoraConfig
from trl import RewardConfig, RewardTrainer

from calrl.confidence import parse_confidence
from calrl.errors import ConfigError, InputError
from calrl.reward_modeling import (
    CALIBRATED_ID_COLUMNS,
    CALIBRATED_TEXT_COLUMNS,
    CalibratedPairsConfig,
    RewardModelProbeCallback,
    bradley_terry_loss,
    build_calibrated_pairs,
    calibration_loss,
    reward_model_report,
    tokenize_response,
    write_reward_model_report,
)
from calrl.reward_modeling.probe import probe_pairs_config
from calrl.tiny.models import build_tiny_reward_model, build_word_tokenizer
from calrl.trainers import CalibratedRewardConfig, CalibratedRewardTrainer

GOOD = ["correct", "right", "exact", "precise", "accurate", "valid"]
BAD = ["wrong", "false", "broken", "invalid", "mistaken", "absurd"]
NEUTRAL = ["maybe", "perhaps", "blue", "green", "seven"]


def synthetic_pairs(n: int, seed: int, *, biased: bool = True) -> Dataset:
    """Good-word answers beat bad-word answers. ``biased``: like real preference data, chosen answers
    state high confidence more often, and a quarter of pairs differ only in stated confidence, so an
    ordinary reward model learns to reward confidence itself."""
    r = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt = f"question {r.randint(0, 99)} ?"
        chosen = f" the answer is {r.choice(GOOD)} {r.choice(GOOD)}"
        rejected = f" the answer is {r.choice(BAD)} {r.choice(BAD)}"
        if biased and r.random() < 0.25:
            neutral = f" the answer is {r.choice(NEUTRAL)}"
            chosen, rejected = neutral + f" confidence: {r.randint(7, 10)}", neutral + f" confidence: {r.randint(0, 3)}"
        elif biased and r.random() < 0.75:
            chosen += f" confidence: {r.randint(7, 10)}"
            rejected += f" confidence: {r.randint(0, 3)}"
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return Dataset.from_list(rows)


def conversational_pairs(n: int = 4) -> Dataset:
    rows = []
    for i in range(n):
        user = {"role": "user", "content": f"question {i} ?"}
        rows.append({
            "chosen": [user, {"role": "assistant", "content": f"the answer is {GOOD[i % 6]}"}],
            "rejected": [user, {"role": "assistant", "content": f"the answer is {BAD[i % 6]}"}],
        })
    return Dataset.from_list(rows)


@pytest.fixture(scope="module")
def tok():
    return build_word_tokenizer([*GOOD, *BAD, *NEUTRAL, "question answer the is confidence"])


def rm_config(tmp_path, **overrides) -> CalibratedRewardConfig:
    kwargs = {"output_dir": str(tmp_path / "rm"), "bf16": False, "use_cpu": True, "learning_rate": 1e-3,
              "num_train_epochs": 6, "per_device_train_batch_size": 8, "report_to": "none", "save_strategy": "no",
              "logging_steps": 8, "activation_checkpointing": False, "seed": 0}
    kwargs.update(overrides)
    return CalibratedRewardConfig(**kwargs)


# ----------------------------------------------------------------------------- calibrated pairs


@pytest.mark.parametrize("scale", ["0-10", "percent", "unit"])
def test_plain_pairs_state_sampled_confidence_in_range(scale):
    data = synthetic_pairs(40, seed=3)
    config = CalibratedPairsConfig(high_range=(7, 10), low_range=(0, 3), scale=scale, seed=5)
    out = build_calibrated_pairs(data, config)
    assert len(out) == 40 and out["prompt"] == data["prompt"]
    for row, src in zip(out, data):
        for col in CALIBRATED_TEXT_COLUMNS:
            p = row[f"{col}_confidence"]
            assert (0.7 <= p <= 1.0) if col.endswith("high") else (0.0 <= p <= 0.3)
            text = row[col]
            response = src[col.split("_")[0]]
            base = response[:response.lower().find(" confidence:")] if "confidence:" in response else response
            assert text.startswith(base + "\n")  # original response (its own statement removed), then the statement
            parsed = parse_confidence(text, use_hedges=False)
            assert parsed.source == "explicit" and parsed.value == pytest.approx(p, abs=1e-9)
            assert text.lower().count("confidence:") == 1
    # seeded: same seed same values, another seed other values
    again = build_calibrated_pairs(data, config)
    other = build_calibrated_pairs(data, CalibratedPairsConfig(scale=scale, seed=6))
    assert again["chosen_high_confidence"] == out["chosen_high_confidence"]
    assert other["chosen_high_confidence"] != out["chosen_high_confidence"]


def test_sampled_values_cover_the_grid():
    out = build_calibrated_pairs(synthetic_pairs(200, seed=0), CalibratedPairsConfig(seed=0))
    assert set(out["chosen_high_confidence"]) == {0.7, 0.8, 0.9, 1.0}
    assert set(out["rejected_low_confidence"]) == {0.0, 0.1, 0.2, 0.3}


def test_ordered_pairing_orders_every_pair_over_the_whole_span():
    config = CalibratedPairsConfig(seed=0, pairing="ordered")
    out = build_calibrated_pairs(synthetic_pairs(400, seed=0), config)
    grid = {round(k / 10, 1) for k in range(11)}
    for source in ("chosen", "rejected"):
        high, low = out[f"{source}_high_confidence"], out[f"{source}_low_confidence"]
        assert all(h > lo for h, lo in zip(high, low))
        assert set(high) == grid - {0.0} and set(low) == grid - {1.0}  # every value, inside the ranges too
        assert any(0.7 <= lo for lo in low) and any(h <= 0.3 for h in high)
    # the span follows the ranges' ends; the probe still compares the ranges whatever the pairing
    narrow = build_calibrated_pairs(synthetic_pairs(200, seed=0),
                                    CalibratedPairsConfig(seed=0, pairing="ordered", high_range=(6, 8),
                                                          low_range=(2, 4)))
    values = set(narrow["chosen_high_confidence"]) | set(narrow["chosen_low_confidence"])
    assert values == {0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8}
    assert probe_pairs_config(config).pairing == "ranges"
    assert CalibratedRewardConfig(output_dir="x", confidence_pairing="ordered", bf16=False,
                                  use_cpu=True).pairs_config().pairing == "ordered"


def test_conversational_pairs_append_to_last_assistant_message():
    data = conversational_pairs()
    out = build_calibrated_pairs(data, CalibratedPairsConfig(scale="percent", seed=1))
    for row, src in zip(out, data):
        for col in CALIBRATED_TEXT_COLUMNS:
            messages, original = row[col], src[col.split("_")[0]]
            assert messages[:-1] == original[:-1]  # user turn untouched
            assert messages[-1]["role"] == "assistant"
            assert messages[-1]["content"].startswith(original[-1]["content"] + "\nConfidence: ")
            parsed = parse_confidence(messages[-1]["content"])
            assert parsed.value == pytest.approx(row[f"{col}_confidence"])


def test_implicit_prompt_plain_pairs():
    data = Dataset.from_list([{"chosen": "q ? the answer is right", "rejected": "q ? the answer is wrong"}])
    row = build_calibrated_pairs(data)[0]
    assert row["chosen_low"].startswith("q ? the answer is right\nConfidence: ")
    assert "prompt" not in row


def test_bad_input_names_the_problem():
    with pytest.raises(ConfigError, match="'rejected'"):
        build_calibrated_pairs(Dataset.from_list([{"prompt": "q", "chosen": "a"}]))
    with pytest.raises(ConfigError, match="low_range"):
        CalibratedPairsConfig(high_range=(5, 10), low_range=(0, 6))
    with pytest.raises(ConfigError, match="scale"):
        CalibratedPairsConfig(scale="stars")
    with pytest.raises(ConfigError, match="did you mean 'ordered'"):
        CalibratedPairsConfig(pairing="orderd")
    with pytest.raises(ConfigError, match="pairing"):
        CalibratedRewardConfig(output_dir="x", confidence_pairing="sorted", bf16=False, use_cpu=True)
    with pytest.raises(ConfigError, match="high_range"):
        CalibratedPairsConfig(high_range=(7, 12))
    no_assistant = Dataset.from_list([{"chosen": [{"role": "user", "content": "q"}],
                                       "rejected": [{"role": "user", "content": "q"}]}])
    with pytest.raises(InputError, match="no assistant message"):
        build_calibrated_pairs(no_assistant)
    with pytest.raises(ConfigError, match="calibration_lambda"):
        CalibratedRewardConfig(output_dir="x", calibration_lambda=-1.0, bf16=False, use_cpu=True)
    with pytest.raises(ConfigError, match="scale"):
        CalibratedRewardConfig(output_dir="x", confidence_scale="stars", bf16=False, use_cpu=True)


# ----------------------------------------------------------------------------- loss


def test_bradley_terry_on_hand_computed_rewards():
    better, worse = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0])
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(1.0))) / 2
    assert bradley_terry_loss(better, worse).item() == pytest.approx(expected, rel=1e-6)
    # margin shifts the difference
    assert bradley_terry_loss(torch.tensor([1.5]), torch.tensor([0.0]), 0.5).item() == pytest.approx(
        math.log1p(math.exp(-1.0)), rel=1e-6)
    cwh, cwl, rwh, rwl = torch.tensor([1.0]), torch.tensor([-1.0]), torch.tensor([0.5]), torch.tensor([0.0])
    term_c, term_r = calibration_loss(cwh, cwl, rwh, rwl)
    assert term_c.item() == pytest.approx(math.log1p(math.exp(-2.0)), rel=1e-6)  # BT(cwh, cwl)
    assert term_r.item() == pytest.approx(math.log1p(math.exp(0.5)), rel=1e-6)  # BT(rwl, rwh): rwl is worse here


def _score(model, tok, example, column):
    ids = torch.tensor([tokenize_response(tok, example, column)])
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, 0]


def test_trainer_loss_matches_formula_on_the_models_own_rewards(tok, tmp_path):
    data = build_calibrated_pairs(synthetic_pairs(6, seed=2), CalibratedPairsConfig(seed=0))
    args = rm_config(tmp_path, calibration_lambda=0.5, calibration_margin=0.3)
    trainer = CalibratedRewardTrainer(build_tiny_reward_model(tok, seed=1), args=args, train_dataset=data,
                                      processing_class=tok)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(6)])
    assert batch["calibration_input_ids"].shape[0] == 4 * 6
    model = trainer.model.eval()
    loss = trainer.compute_loss(model, batch)
    r = {c: torch.stack([_score(model, tok, data[i], c) for i in range(6)])
         for c in ("chosen", "rejected", *CALIBRATED_TEXT_COLUMNS)}
    expected = (-F.logsigmoid(r["chosen"] - r["rejected"]).mean()
                + 0.5 * (-F.logsigmoid(r["chosen_high"] - r["chosen_low"] - 0.3).mean()
                         - F.logsigmoid(r["rejected_low"] - r["rejected_high"] - 0.3).mean()))
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)
    logged = trainer.calibration_metrics["eval"]
    assert logged["loss/calibration"] and logged["calibration/accuracy_chosen_high_over_low"]
    assert logged["calibration/accuracy_rejected_low_over_high"][0] == pytest.approx(
        (r["rejected_low"] > r["rejected_high"]).float().mean().item())


def _trl_ids(tok, tmp_path, data):
    """chosen_ids/rejected_ids of TRL's own RewardTrainer on ``data``."""
    args = RewardConfig(output_dir=str(tmp_path / "trl-tok"), bf16=False, use_cpu=True, report_to="none",
                        activation_checkpointing=False)
    prepared = RewardTrainer(build_tiny_reward_model(tok), args=args, train_dataset=data,
                             processing_class=tok).train_dataset
    return prepared["chosen_ids"], prepared["rejected_ids"]


@pytest.mark.parametrize("kind", ["plain", "conversational"])
def test_tokenization_matches_trl_for_plain_and_conversational(tok, tmp_path, kind):
    data = synthetic_pairs(4, seed=1) if kind == "plain" else conversational_pairs()
    args = rm_config(tmp_path)
    trainer = CalibratedRewardTrainer(build_tiny_reward_model(tok), args=args, train_dataset=data,
                                      processing_class=tok)
    prepared = trainer.train_dataset
    assert sorted(prepared.column_names) == sorted(["chosen_ids", "rejected_ids", *CALIBRATED_ID_COLUMNS])
    chosen, rejected = _trl_ids(tok, tmp_path, data)
    assert prepared["chosen_ids"] == chosen and prepared["rejected_ids"] == rejected
    if kind == "plain":
        assert all(ids[-1] == tok.eos_token_id for ids in chosen)  # TRL appends EOS to plain text
    # the four calibrated texts, built from the config's seed, tokenized as TRL tokenizes chosen/rejected
    texts = build_calibrated_pairs(data, args.pairs_config())
    for high, low in (("chosen_high", "chosen_low"), ("rejected_high", "rejected_low")):
        as_pairs = texts.remove_columns(["chosen", "rejected"]).rename_columns({high: "chosen", low: "rejected"})
        trl_high, trl_low = _trl_ids(tok, tmp_path, as_pairs.select_columns(
            [c for c in ("prompt", "chosen", "rejected") if c in as_pairs.column_names]))
        assert prepared[f"{high}_ids"] == trl_high and prepared[f"{low}_ids"] == trl_low
    for i in range(len(data)):
        assert prepared[i]["chosen_high_ids"] == tokenize_response(tok, texts[i], "chosen_high")


def test_max_length_drops_pairs_whose_calibrated_texts_are_too_long(tok, tmp_path):
    data = synthetic_pairs(12, seed=6, biased=False)
    full = CalibratedRewardTrainer(build_tiny_reward_model(tok), args=rm_config(tmp_path), train_dataset=data,
                                   processing_class=tok).train_dataset
    pair = [max(len(row["chosen_ids"]), len(row["rejected_ids"])) for row in full]
    longest = [max(len(row[c]) for c in CALIBRATED_ID_COLUMNS) for row in full]
    limit = sorted(longest)[len(longest) // 2]
    # rows TRL's own filter (chosen/rejected only) would keep, but whose calibrated texts are too long
    assert any(p <= limit < n for p, n in zip(pair, longest))
    cut = CalibratedRewardTrainer(build_tiny_reward_model(tok), args=rm_config(tmp_path, max_length=limit),
                                  train_dataset=data, processing_class=tok).train_dataset
    assert len(cut) == sum(max(p, n) <= limit for p, n in zip(pair, longest))
    assert 0 < len(cut) < len(data)


def test_streamed_pairs_train_when_they_carry_the_calibrated_texts(tok, tmp_path):
    rows = synthetic_pairs(8, seed=9)
    args = rm_config(tmp_path, max_steps=2, per_device_train_batch_size=4, logging_steps=1)
    trainer = CalibratedRewardTrainer(build_tiny_reward_model(tok), args=args, processing_class=tok,
                                      train_dataset=build_calibrated_pairs(rows).to_iterable_dataset())
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss/calibration" in h]
    assert len(logs) == 2 and logs[-1]["calibration/num_tokens"] > logs[0]["calibration/num_tokens"] > 0
    with pytest.raises(ConfigError, match="streamed .* 'chosen_high'"):
        CalibratedRewardTrainer(build_tiny_reward_model(tok), args=args, processing_class=tok,
                                train_dataset=rows.to_iterable_dataset())


def test_tokenizer_settings_apply_before_calrl_tokenizes(tok, tmp_path):
    data = synthetic_pairs(4, seed=10)
    with pytest.raises(ConfigError, match="chat_template_path"):
        CalibratedRewardTrainer(build_tiny_reward_model(tok), train_dataset=data, processing_class=tok,
                                args=rm_config(tmp_path, chat_template_path="some-org/some-model"))
    with pytest.raises(ConfigError, match="eos_token"):
        CalibratedRewardTrainer(build_tiny_reward_model(tok), train_dataset=data, processing_class=tok,
                                args=rm_config(tmp_path, eos_token="<not-a-token>"))
    template = tmp_path / "plain.jinja"
    template.write_text("{% for m in messages %}{{ m['content'] }} {% endfor %}")
    tokenizer = build_word_tokenizer([*GOOD, *BAD, "question answer the is confidence"])
    trainer = CalibratedRewardTrainer(build_tiny_reward_model(tokenizer), train_dataset=conversational_pairs(2),
                                      processing_class=tokenizer, args=rm_config(tmp_path, chat_template_path=str(template)))
    first = conversational_pairs(2)[0]
    expected = tokenizer(text=" ".join(m["content"] for m in first["chosen"]) + " ")["input_ids"]
    assert trainer.train_dataset[0]["chosen_ids"] == expected


def test_remove_unused_columns_must_stay_off():
    with pytest.raises(ConfigError, match="remove_unused_columns"):
        CalibratedRewardConfig(output_dir="x", remove_unused_columns=True, bf16=False, use_cpu=True)
    assert CalibratedRewardConfig(output_dir="x", bf16=False, use_cpu=True).remove_unused_columns is False


def test_evaluate_tokenizes_a_raw_dataset_and_logs_eval_calibration_metrics(tok, tmp_path):
    trainer = CalibratedRewardTrainer(build_tiny_reward_model(tok, seed=6), train_dataset=synthetic_pairs(8, seed=7),
                                      processing_class=tok, args=rm_config(tmp_path, per_device_eval_batch_size=4))
    metrics = trainer.evaluate(synthetic_pairs(8, seed=8, biased=False))
    for key in ("eval_loss", "eval_accuracy", "eval_loss/preference", "eval_loss/calibration",
                "eval_calibration/accuracy_chosen_high_over_low", "eval_calibration/accuracy_rejected_low_over_high"):
        assert key in metrics, key
    assert trainer.state.log_history[-1]["eval_loss/calibration"] == metrics["eval_loss/calibration"]
    assert not trainer.calibration_metrics["eval"]  # cleared after the log
    # the evaluation loss is the calibrated loss: preference + lambda (1) * calibration, averaged over batches
    assert metrics["eval_loss"] == pytest.approx(metrics["eval_loss/preference"] + metrics["eval_loss/calibration"],
                                                 rel=1e-5)


def test_lambda_zero_is_trl_loss_on_the_same_batch(tok, tmp_path):
    data = build_calibrated_pairs(synthetic_pairs(8, seed=4))
    ours = CalibratedRewardTrainer(build_tiny_reward_model(tok, seed=2), train_dataset=data, processing_class=tok,
                                   args=rm_config(tmp_path, calibration_lambda=0.0, center_rewards_coefficient=0.01))
    trl_args = RewardConfig(output_dir=str(tmp_path / "trl"), bf16=False, use_cpu=True, report_to="none",
                            center_rewards_coefficient=0.01, activation_checkpointing=False)
    theirs = RewardTrainer(build_tiny_reward_model(tok, seed=2), args=trl_args,
                           train_dataset=synthetic_pairs(8, seed=4), processing_class=tok)
    batch = ours.data_collator([ours.train_dataset[i] for i in range(8)])
    trl_batch = theirs.data_collator([theirs.train_dataset[i] for i in range(8)])
    assert torch.equal(batch["input_ids"], trl_batch["input_ids"])
    assert "calibration_input_ids" in batch and "calibration_input_ids" not in trl_batch
    ours_loss = ours.compute_loss(ours.model, batch)
    trl_loss = theirs.compute_loss(theirs.model, trl_batch)
    # exact on any CPU: the same operations on the same tensors in one process take the same code path
    assert torch.equal(ours_loss, trl_loss)
    ours_loss.backward()  # no gradient reaches the calibration forward at lambda = 0
    assert ours.calibration_metrics["train"]["loss/calibration"]  # ... but the diagnostics are still logged


def test_lambda_zero_trains_exactly_like_trl_reward_trainer(tok, tmp_path):
    data = synthetic_pairs(16, seed=5)
    ours = CalibratedRewardTrainer(build_tiny_reward_model(tok, seed=3), train_dataset=data, processing_class=tok,
                                   args=rm_config(tmp_path, calibration_lambda=0.0, num_train_epochs=1, logging_steps=1))
    trl_args = RewardConfig(output_dir=str(tmp_path / "trl"), bf16=False, use_cpu=True, report_to="none",
                            learning_rate=1e-3, num_train_epochs=1, per_device_train_batch_size=8, logging_steps=1,
                            save_strategy="no", activation_checkpointing=False, seed=0)
    theirs = RewardTrainer(build_tiny_reward_model(tok, seed=3), args=trl_args, train_dataset=data,
                           processing_class=tok)
    ours.train()
    theirs.train()
    ours_losses = [h["loss"] for h in ours.state.log_history if "loss" in h]
    trl_losses = [h["loss"] for h in theirs.state.log_history if "loss" in h]
    assert len(ours_losses) == 2 and ours_losses == trl_losses
    for (name, p), q in zip(ours.model.named_parameters(), theirs.model.parameters()):
        assert torch.equal(p, q), name


# ----------------------------------------------------------------------------- training behaviour


@pytest.fixture(scope="module")
def trained(tok, tmp_path_factory):
    """An ordinary (lambda = 0) and a calibrated (lambda = 1) RM trained on the same biased pairs."""
    data = synthetic_pairs(64, seed=0)
    models = {}
    for lam in (0.0, 1.0):
        out = tmp_path_factory.mktemp(f"rm{lam}")
        trainer = CalibratedRewardTrainer(build_tiny_reward_model(tok, seed=0), train_dataset=data,
                                          processing_class=tok,
                                          args=rm_config(out, calibration_lambda=lam, num_train_epochs=10))
        trainer.train()
        models[lam] = trainer
    return models


def test_calibrated_rm_prefers_confident_chosen_and_humble_rejected(trained, tok):
    held_out = synthetic_pairs(32, seed=1, biased=False)
    probe = CalibratedPairsConfig(seed=123)
    plain = reward_model_report(trained[0.0].model, tok, held_out, config=probe)
    calibrated = reward_model_report(trained[1.0].model, tok, held_out, config=probe)
    assert plain["preference_accuracy"] >= 0.9 and calibrated["preference_accuracy"] >= 0.9
    cal_c, cal_r = calibrated["confidence_bias"]["chosen"], calibrated["confidence_bias"]["rejected"]
    plain_r = plain["confidence_bias"]["rejected"]
    assert cal_c["prefers_high_rate"] >= 0.8 and cal_c["mean_reward_difference_high_minus_low"] > 0
    assert 1 - cal_r["prefers_high_rate"] >= 0.8 and cal_r["mean_reward_difference_high_minus_low"] < 0
    # the ordinary RM learned the data's confidence bias: it rewards confidence on rejected answers too
    assert plain_r["prefers_high_rate"] >= 0.7
    assert (1 - cal_r["prefers_high_rate"]) - (1 - plain_r["prefers_high_rate"]) >= 0.5
    # the training log carries the components through TRL's metric logging
    logs = [h for h in trained[1.0].state.log_history if "loss/calibration" in h]
    assert len(logs) >= 2 and logs[-1]["loss/calibration"] < logs[0]["loss/calibration"]
    assert logs[-1]["calibration/accuracy_rejected_low_over_high"] >= 0.8
    assert all({"loss/preference", "calibration/accuracy_chosen_high_over_low"} <= set(h) for h in logs)


def test_probe_report_fields_and_files(trained, tok, tmp_path):
    held_out = synthetic_pairs(10, seed=7, biased=False)
    report = reward_model_report(trained[1.0].model, tok, held_out, batch_size=3, config=CalibratedPairsConfig(seed=1))
    model = trained[1.0].model
    chosen = torch.stack([_score(model, tok, held_out[i], "chosen") for i in range(10)])
    rejected = torch.stack([_score(model, tok, held_out[i], "rejected") for i in range(10)])
    assert report["n_pairs"] == 10
    assert report["preference_accuracy"] == pytest.approx((chosen > rejected).float().mean().item())
    assert report["mean_reward_margin"] == pytest.approx((chosen - rejected).mean().item(), abs=1e-5)
    for side in ("chosen", "rejected"):
        bias = report["confidence_bias"][side]
        assert bias["n"] == 10 and 0.0 <= bias["prefers_high_rate"] <= 1.0
    json_path, md_path = write_reward_model_report(report, tmp_path / "out")
    assert json.loads(json_path.read_text()) == json.loads(json.dumps(report))
    md = md_path.read_text()
    assert "Confidence-bias probe" in md and "| rejected | 10 |" in md
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp files left


def test_lora_reward_model_trains_on_cpu(tok, tmp_path):
    lora = LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    trainer = CalibratedRewardTrainer(build_tiny_reward_model(tok, seed=4), train_dataset=synthetic_pairs(16, seed=2),
                                      processing_class=tok, peft_config=lora,
                                      args=rm_config(tmp_path, num_train_epochs=1, logging_steps=1))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert any("lora_" in n for n in changed)
    assert not any("lora_" not in n and "score" not in n for n in changed)  # base weights frozen
    assert any("loss/calibration" in h for h in trainer.state.log_history)


def _wandb_history(run_dir: Path) -> list[dict]:
    wandb_bin = Path(sys.executable).with_name("wandb")
    files = list(run_dir.glob("run-*.wandb"))
    assert files, f"no .wandb file in {run_dir}"
    out = subprocess.run([str(wandb_bin), "leet", "inspect", "--json", str(files[0])], capture_output=True,
                         text=True, check=True, timeout=60)
    records = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return [r["history"]["item"] for r in records if r.get("type") == "history"]


def test_probe_callback_logs_bias_each_epoch_to_offline_wandb(tok, tmp_path):
    import wandb

    held_out = synthetic_pairs(8, seed=9, biased=False)
    callback = RewardModelProbeCallback(held_out, config=CalibratedPairsConfig(seed=2), batch_size=4,
                                        out_dir=tmp_path / "probe")
    trainer = CalibratedRewardTrainer(build_tiny_reward_model(tok, seed=5), train_dataset=synthetic_pairs(16, seed=3),
                                      processing_class=tok, callbacks=[callback],
                                      args=rm_config(tmp_path, num_train_epochs=2, report_to="wandb",
                                                     run_name="rm-probe-test", logging_steps=1))
    trainer.train()
    run_dir = Path(wandb.run.dir).parent
    wandb.finish()
    assert [h["epoch"] for h in callback.history] == [1.0, 2.0]
    assert sorted(p.name for p in (tmp_path / "probe").iterdir()) == ["step-2", "step-4"]
    assert (tmp_path / "probe" / "step-4" / "reward_model_report.json").exists()
    history = _wandb_history(run_dir)
    probes = [h for h in history if "rm_probe/rejected_prefers_high_rate" in h]
    assert [h["train/global_step"] for h in probes] == [2, 4]
    assert [h["rm_probe/rejected_prefers_high_rate"] for h in probes] == [
        r["confidence_bias"]["rejected"]["prefers_high_rate"] for r in callback.history]
    assert all(h["rm_probe/confidence_bias._type"] == "table-file" for h in probes)
    assert any("train/loss/calibration" in h for h in history)
    assert list((run_dir / "files" / "media" / "table").rglob("*.table.json"))


def test_batched_tokenization_gives_each_rows_own_ids(tok):
    """tokenize_responses (one batched call per kind of row) gives the ids of tokenizing each row alone as TRL's
    reward trainer does: plain text with EOS appended, conversations through the chat template, rows with their own
    chat_template_kwargs grouped apart."""
    from calrl.reward_modeling.tokenization import tokenize_responses

    tok.chat_template = ("{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}"
                         "{% if flag %}confidence{% endif %}")
    conv = [{"role": "user", "content": "the question"}]
    rows = [{"prompt": "the question ", "chosen": "answer is good"},
            {"prompt": conv, "chosen": [{"role": "assistant", "content": "answer is bad"}]},
            {"prompt": conv, "chosen": [{"role": "assistant", "content": "good"}], "chat_template_kwargs": {"flag": 1}},
            {"prompt": None, "chosen": "bad" + tok.eos_token},
            {"prompt": conv, "chosen": [{"role": "assistant", "content": "the answer"}]}]

    def alone(row):
        response = row["chosen"]
        if isinstance(response, str):
            text = (row["prompt"] or "") + (response if response.endswith(tok.eos_token) else response + tok.eos_token)
            return list(tok(text=text)["input_ids"])
        return list(tok.apply_chat_template(row["prompt"] + response, tokenize=True, return_dict=True, tools=None,
                                            **(row.get("chat_template_kwargs") or {}))["input_ids"])

    expected = [alone(r) for r in rows]
    assert tokenize_responses(tok, rows, "chosen") == expected
    assert [tokenize_response(tok, r, "chosen") for r in rows] == expected
    assert tok.convert_ids_to_tokens(expected[2])[-1] == "confidence"
    assert "confidence" not in tok.convert_ids_to_tokens(expected[1])
    assert tokenize_responses(tok, [], "chosen") == []
    with pytest.raises(InputError, match="expected a string or a list of messages, got int"):
        tokenize_responses(tok, [{"chosen": 3}], "chosen")
