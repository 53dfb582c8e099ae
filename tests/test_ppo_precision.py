"""Precision that learns: float32 master weights under bf16 mixed precision, low-precision trained weights refused."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from calrl.errors import ConfigError
from calrl.runners.ppo import PPORunner
from calrl.runners.recipe import load_recipe
from calrl.tiny.models import (
    build_tiny_causal_lm,
    build_tiny_reward_model,
    build_word_tokenizer,
    save_pretrained,
)

REPO = Path(__file__).resolve().parents[1]
TINY_PPO = REPO / "configs" / "tests" / "tiny_ppo_c.yaml"
PAPER_PPO_C = REPO / "configs" / "paper" / "qwen2.5-0.5b_ppo_c_difference.yaml"


def test_low_precision_trained_weights_are_refused_unless_opted_in(monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    with pytest.raises(ConfigError, match=r"tiny_ppo_c.yaml.*model.dtype.*bfloat16.*low_precision_weights") as err:
        load_recipe(TINY_PPO, ["model.dtype=bfloat16"])
    assert "\n" not in str(err.value)
    assert load_recipe(TINY_PPO, ["model.dtype=bfloat16", "model.low_precision_weights=true"]).model.dtype == \
        "bfloat16"
    assert load_recipe(TINY_PPO, ["model.frozen_dtype=bfloat16"]).model.frozen_dtype == "bfloat16"
    # DeepSpeed's bf16 keeps float32 master copies: a recipe launched with a DeepSpeed config may store bf16 weights
    zero2 = REPO / "configs" / "accelerate" / "deepspeed_zero2.yaml"
    assert load_recipe(TINY_PPO, ["model.dtype=bfloat16", f"launch.accelerate_config={zero2}"]).model.dtype == \
        "bfloat16"


class KeepModel(TrainerCallback):
    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.policy = {k: v.detach().clone() for k, v in model.policy.state_dict().items()}


def moved_fraction(before: dict, after: dict) -> float:
    changed = total = 0
    for name, tensor in before.items():
        if tensor.is_floating_point():
            changed += int((after[name] != tensor.to(after[name].dtype)).sum())  # in the dtype that trained
            total += tensor.numel()
    return changed / total


def train_tiny_ppo(tmp_path: Path, name: str, overrides: list[str]) -> tuple[dict, dict, dict]:
    """Two PPO updates at the paper's learning rate on tiny saved models; (initial, in memory, saved) policy."""
    texts = [line for line in (REPO / "calrl" / "data" / "tiny" / "qa.jsonl").read_text().splitlines()]
    tok = build_word_tokenizer(texts + ["confidence answer"])
    policy_dir = save_pretrained(build_tiny_causal_lm(tok, seed=0), tok, tmp_path / "policy")
    rm = build_tiny_reward_model(tok, seed=2)
    rm.config.pad_token_id = tok.pad_token_id
    rm.config.calrl_reward_mean, rm.config.calrl_reward_std = 0.0, 1.0
    rm_dir = save_pretrained(rm, tok, tmp_path / "rm")
    paper = load_recipe(PAPER_PPO_C, check_hardware=False)
    recipe = load_recipe(TINY_PPO, [
        f"model.policy={policy_dir}", f"model.reward_model={rm_dir}", f"model.value_model={rm_dir}",
        f"model.dtype={paper.model.dtype}", f"model.frozen_dtype={paper.model.frozen_dtype}",
        f"training.bf16={str(paper.training.bf16).lower()}",
        f"training.learning_rate={paper.training.learning_rate}", "training.max_steps=2",
        f"training.output_dir={tmp_path / name}", "training.report_to=none", "training.save_strategy='no'",
        "eval.heldout=null", *overrides])
    keep = KeepModel()
    PPORunner(recipe, [keep]).run()
    return load_file(policy_dir / "model.safetensors"), keep.policy, load_file(tmp_path / name / "model.safetensors")


def test_paper_precision_settings_learn_at_the_paper_learning_rate(tmp_path):
    paper = load_recipe(PAPER_PPO_C, check_hardware=False)
    assert paper.training.bf16 and paper.model.dtype == "float32" and paper.training.learning_rate == 5e-7
    initial, learnt, saved = train_tiny_ppo(tmp_path, "mixed", [])
    assert moved_fraction(initial, learnt) >= 0.9
    assert set(saved) == set(initial)
    for name, tensor in saved.items():  # the saved model keeps the learnt values, in float32
        assert tensor.dtype == torch.float32
        torch.testing.assert_close(tensor, learnt[name].float(), rtol=0, atol=0)
    # what the old recipes did (bf16 weights, plain AdamW): most updates round away
    initial, learnt, _ = train_tiny_ppo(tmp_path, "pure", ["model.dtype=bfloat16", "model.low_precision_weights=true"])
    assert moved_fraction(initial, learnt) < 0.5
