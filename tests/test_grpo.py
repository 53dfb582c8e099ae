"""GRPO and RLOO with calibration rewards on a tiny local model (CPU), and the std-scaling warning."""

import math
import warnings

import pytest
from datasets import Dataset

from calrl.errors import ConfigError
from calrl.tiny.models import build_tiny_causal_lm, build_word_tokenizer, save_pretrained
from calrl.trainers.grpo import CalibratedGRPOConfig, CalibratedGRPOTrainer, std_scaling_warning
from calrl.trainers.rloo import CalibratedRLOOConfig, CalibratedRLOOTrainer

QA = [("what is 2 + 2 ?", "4"), ("what is 3 + 4 ?", "7"), ("what is 1 + 1 ?", "2"), ("what is 5 + 3 ?", "8")]
ALL_REWARDS = ["correctness", "brier", "log_score", "abstention", "format"]
COMMON = {"use_cpu": True, "report_to": "none", "num_generations": 2, "max_completion_length": 8,
          "per_device_train_batch_size": 2, "num_train_epochs": 1, "logging_steps": 1, "save_strategy": "no",
          "disable_tqdm": True, "seed": 0}


@pytest.fixture(scope="module")
def tokenizer():
    return build_word_tokenizer([q for q, _ in QA])


def _dataset(column="reference"):
    return Dataset.from_list([{"prompt": [{"role": "user", "content": q}], column: a} for q, a in QA])


def _grpo_args(tmp_path, **kw):
    return CalibratedGRPOConfig(output_dir=str(tmp_path / "out"), **{**COMMON, **kw})


def test_grpo_run_logs_each_calibration_reward(tmp_path, tokenizer):
    args = _grpo_args(tmp_path, reward_funcs=ALL_REWARDS, reward_weights=[1.0, 1.0, 0.5, 1.0, 0.1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = CalibratedGRPOTrainer(model=build_tiny_causal_lm(tokenizer), args=args,
                                        train_dataset=_dataset(), processing_class=tokenizer)
    assert trainer.std_scaling_warning is None  # scale_rewards defaults to "none"
    assert not [w for w in caught if "Bereket" in str(w.message)]
    assert trainer.reward_func_names == ALL_REWARDS
    assert trainer.reward_weights.tolist() == pytest.approx([1.0, 1.0, 0.5, 1.0, 0.1])
    trainer.train()
    logs = [row for row in trainer.state.log_history if "rewards/brier/mean" in row]
    assert len(logs) == trainer.state.global_step == len(QA)  # one prompt (2 generations) per step
    for row in logs:
        for name in ALL_REWARDS:
            assert f"rewards/{name}/mean" in row and f"rewards/{name}/std" in row
        assert 0.0 <= row["rewards/correctness/mean"] <= 1.0
        assert -1.0 <= row["rewards/brier/mean"] <= 1.0
        assert math.log(1e-3) - 1e-6 <= row["rewards/log_score/mean"] <= 0.0
        assert 0.0 <= row["rewards/format/mean"] <= 1.0
        assert 0.0 <= row["confidence/missing_rate"] <= 1.0


def test_std_scaling_warning_fires_with_group_scaling_and_a_calibration_reward(tmp_path, tokenizer):
    args = _grpo_args(tmp_path, reward_funcs=["brier"], scale_rewards="group")
    with pytest.warns(UserWarning, match="Bereket & Leskovec") as record:
        trainer = CalibratedGRPOTrainer(model=build_tiny_causal_lm(tokenizer), args=args,
                                        train_dataset=_dataset(), processing_class=tokenizer)
    message = str(next(w.message for w in record if "Bereket" in str(w.message)))
    assert "overconfidence" in message and "scale_rewards='none'" in message and "RLOO" in message
    assert trainer.std_scaling_warning == message


@pytest.mark.parametrize("kw, fires", [
    ({"reward_funcs": ["log_score", "correctness"], "scale_rewards": True}, True),
    ({"reward_funcs": ["brier"], "scale_rewards": "batch"}, False),
    ({"reward_funcs": ["brier"], "scale_rewards": False}, False),
    ({"reward_funcs": ["correctness", "format"], "scale_rewards": "group"}, False),
    ({"reward_funcs": ["brier", "format"], "scale_rewards": "none",
      "multi_objective_aggregation": "normalize_then_sum"}, True),
])
def test_std_scaling_warning_conditions(tmp_path, kw, fires):
    args = _grpo_args(tmp_path, **kw)
    assert (std_scaling_warning(args) is not None) == fires


def test_grpo_config_defaults_and_validation(tmp_path):
    args = _grpo_args(tmp_path)
    assert args.scale_rewards == "none" and args.reward_funcs == ["brier"]
    with pytest.raises(ConfigError, match="scale_rewards"):
        _grpo_args(tmp_path, scale_rewards="sometimes")
    with pytest.raises(ConfigError, match="reward_funcs"):
        _grpo_args(tmp_path, reward_funcs=["brier", "accuracy"])


def test_missing_reference_column_is_a_config_error(tmp_path, tokenizer):
    args = _grpo_args(tmp_path, reward_funcs=["brier"], reference_column="gold")
    with pytest.raises(ConfigError, match="gold"):
        CalibratedGRPOTrainer(model=build_tiny_causal_lm(tokenizer), args=args, train_dataset=_dataset(),
                              processing_class=tokenizer)


def test_rloo_run_logs_rewards_and_never_warns(tmp_path, tokenizer):
    # RLOO keeps a KL reference model (beta > 0), loaded from the model's folder: give it a saved tiny model
    model_dir = save_pretrained(build_tiny_causal_lm(tokenizer), tokenizer, tmp_path / "tiny")
    args = CalibratedRLOOConfig(output_dir=str(tmp_path / "rloo"), reward_funcs=["brier", "format"],
                                reference_column="answer", **COMMON)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = CalibratedRLOOTrainer(model=str(model_dir), args=args,
                                        train_dataset=_dataset("answer"), processing_class=tokenizer)
    assert trainer.std_scaling_warning is None and trainer.beta > 0
    assert not [w for w in caught if "Bereket" in str(w.message)]
    trainer.train()
    logs = [row for row in trainer.state.log_history if "rewards/brier/mean" in row]
    assert logs and all("rewards/format/mean" in row for row in logs)
