"""The reference's PPO dynamics as named modes, each on hand-worked numbers (rows of docs/fidelity.md)."""

from types import SimpleNamespace

import pytest
import torch
from ppo_arithmetic import arithmetic_trainer

from calrl.errors import ConfigError
from calrl.rewards.pipeline import RewardPipeline, RewardPipelineConfig
from calrl.tiny.models import build_word_tokenizer
from calrl.trainers.ppo import CalibratedPPOConfig
from calrl.trainers.ppo_core import ppo_loss, response_masks, token_rewards, whitened_advantages
from calrl.trainers.ppo_optim import global_moments, split_critic


def test_loss_aggregation_token_mean_against_sequence_mean():
    # ratio 1 everywhere; row 0 has three tokens of advantage 1, row 1 one token of advantage 4
    padding = torch.tensor([[False, False, False], [False, True, True]])
    padding_p1 = padding  # values defined where the tokens are, for a simple hand count
    adv = torch.tensor([[1.0, 1.0, 1.0], [4.0, 0.0, 0.0]])
    logp = torch.zeros(2, 3)
    values, returns = torch.zeros(2, 3), torch.tensor([[1.0, 1.0, 1.0], [3.0, 0.0, 0.0]])
    kwargs = {"cliprange": 0.2, "cliprange_value": 10.0, "vf_coef": 0.1}
    token = ppo_loss(logp, logp, adv, values, values, returns, padding, padding_p1, **kwargs)
    sequence = ppo_loss(logp, logp, adv, values, values, returns, padding, padding_p1, aggregation="sequence_mean",
                        **kwargs)
    assert token.pg_loss.item() == pytest.approx(-(1 + 1 + 1 + 4) / 4)  # -1.75: every token alike
    assert sequence.pg_loss.item() == pytest.approx(-(1 + 4) / 2)  # -2.5: every sequence alike
    assert token.vf_loss.item() == pytest.approx(0.5 * (1 + 1 + 1 + 9) / 4)
    assert sequence.vf_loss.item() == pytest.approx(0.5 * (1 + 9) / 2)
    with pytest.raises(ValueError, match="aggregation"):
        ppo_loss(logp, logp, adv, values, values, returns, padding, padding_p1, aggregation="mean", **kwargs)


def test_score_placement_after_eos_or_on_the_last_token():
    masks = response_masks(torch.tensor([[7, 7, 2, 0, 0], [7, 2, 0, 0, 0]]), pad_token_id=0)
    scores, kl = torch.tensor([1.0, 2.0]), torch.zeros(2, 5)
    after, _ = token_rewards(scores, kl, masks, 0.0)
    last, _ = token_rewards(scores, kl, masks, 0.0, placement="last_token")
    assert after.nonzero().tolist() == [[0, 3], [1, 2]]  # one past the stop token (trl 1.12)
    assert last.nonzero().tolist() == [[0, 2], [1, 1]]  # on the stop token (OpenRLHF compute_reward)


def test_global_whitening_uses_every_process_and_the_references_variance():
    adv = torch.tensor([[1.0, 3.0, 5.0]])
    padding = torch.tensor([[False, False, True]])
    assert global_moments(None, adv, padding, "local") is None
    # another process holds advantages 0 and 0: the sums are added (a stand-in accelerator for two processes)
    other = torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64)
    acc = SimpleNamespace(num_processes=2, device="cpu", reduce=lambda t, reduction: t + other)
    moments = global_moments(acc, adv, padding, "global")
    assert moments == (4.0, 10.0, 4.0)
    out = whitened_advantages(adv, padding, moments)
    # mean 1, population variance (0 + 4 + 1 + 1) / 4 = 1.5
    torch.testing.assert_close(out, torch.tensor([[0.0, 2 / 1.5 ** 0.5, 0.0]]))


def test_ppo_c_average_per_micro_batch():
    """The reference updates the average with each micro-batch of experience, then adjusts that micro-batch."""
    tok = build_word_tokenizer(["good bad question"])

    class CountingRM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, attention_mask, **kwargs):
            def count(w):
                return ((input_ids == tok.convert_tokens_to_ids(w)) & attention_mask.bool()).sum(1).float()
            return SimpleNamespace(logits=(2 * count("good") - 2 * count("bad"))[:, None] + self.anchor)

    responses = ["good good. confidence: 9", "bad. confidence: 9", "good. confidence: 2", "i think"]
    prompts = ["question"] * 4

    def run(chunk):
        pipe = RewardPipeline(RewardPipelineConfig(ppo_c_variant="threshold", ppo_c_init_average=0.0), CountingRM(),
                              reward_tokenizer=tok, average_chunk=chunk)
        return pipe.score_texts(prompts, responses)[0], pipe.adjuster.average

    # RM on the stripped texts: 4, -2, 2, 0; confidences .9, .9, .2, none (c = 0.5, still in the average)
    per_step, average = run(None)  # one update: avg = 0.1 * mean(4, -2, 2, 0) = 0.1
    torch.testing.assert_close(per_step, torch.tensor([4.8, -2.4, 1.7, 0.0]))
    assert average == pytest.approx(0.1)
    per_micro, average = run(2)
    # rows 1-2: avg = 0.1 * mean(4, -2) = 0.1 -> 4 + .5*4*.4 = 4.8, -2 - .5*2*.4 = -2.4
    # rows 3-4: avg = 0.1 * mean(2, 0) + 0.9 * 0.1 = 0.19 -> 2 >= 0.19: 2 + .5*2*(.2-.5) = 1.7; 0 unchanged
    torch.testing.assert_close(per_micro, torch.tensor([4.8, -2.4, 1.7, 0.0]))
    assert average == pytest.approx(0.19)
    with pytest.raises(ConfigError, match="average_chunk"):
        RewardPipeline(RewardPipelineConfig(), CountingRM(), reward_tokenizer=tok, average_chunk=0)


def make_trainer(tmp_path, **kwargs):
    return arithmetic_trainer(tmp_path / "out", **{"max_steps": 2, "learning_rate": 5e-7,
                                                    "lr_scheduler_type": "linear", **kwargs})


def test_critic_learning_rate_gives_the_value_model_its_own_groups(tmp_path):
    trainer = make_trainer(tmp_path, critic_learning_rate=9e-6, weight_decay=0.0)
    optimizer = trainer.create_optimizer()
    policy, critic = split_critic(trainer.model)
    by_lr = {}
    for group in optimizer.param_groups:
        by_lr.setdefault(group["lr"], set()).update(id(p) for p in group["params"])
    assert by_lr[5e-7] == {id(p) for _, p in policy} and by_lr[9e-6] == {id(p) for _, p in critic}
    plain = make_trainer(tmp_path).create_optimizer()  # trl 1.12: one rate for all
    assert {g["lr"] for g in plain.param_groups} == {5e-7}


def test_critic_gradients_clipped_apart(tmp_path):
    trainer = make_trainer(tmp_path, max_grad_norm=1.0, critic_max_grad_norm=2.0)
    policy, critic = split_critic(trainer.model)
    for _, p in policy + critic:
        p.grad = torch.full_like(p, 3.0)
    trainer._clip_gradients()

    def norm(named):
        return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for _, p in named])).item()

    assert norm(policy) == pytest.approx(1.0, rel=1e-4) and norm(critic) == pytest.approx(2.0, rel=1e-4)
    joint = make_trainer(tmp_path, max_grad_norm=1.0)
    for _, p in joint.model.named_parameters():
        p.grad = torch.full_like(p, 3.0)
    joint._clip_gradients()
    policy, critic = split_critic(joint.model)
    assert norm(policy) ** 2 + norm(critic) ** 2 == pytest.approx(1.0, rel=1e-4)  # one norm over both


@pytest.mark.parametrize("cadence,steps", [("per_update", 2), ("per_optimizer_step", 2 * 2 * 2)])
def test_scheduler_cadence(tmp_path, cadence, steps):
    trainer = make_trainer(tmp_path, scheduler_cadence=cadence, critic_learning_rate=9e-6,
                           critic_max_grad_norm=1.0, loss_aggregation="sequence_mean", advantage_whitening="global",
                           score_placement="last_token", ppo_c_average_cadence="per_micro_batch",
                           ppo_c_variant="difference", ppo_c_init_average=0.0)
    trainer.train()
    # max_steps 2 updates x num_ppo_epochs 2 x num_mini_batches 2 = 8 optimiser steps
    assert trainer.lr_scheduler.last_epoch == steps
    assert [g["lr"] for g in trainer.optimizer.param_groups] == pytest.approx([0.0] * 4, abs=1e-12)  # linear to 0


@pytest.mark.parametrize("key,value", [("loss_aggregation", "sequence"), ("advantage_whitening", "globl"),
                                       ("score_placement", "eos"), ("scheduler_cadence", "per_step"),
                                       ("ppo_c_average_cadence", "micro"), ("critic_learning_rate", -1.0)])
def test_modes_are_checked_with_a_hint(tmp_path, key, value):
    with pytest.raises(ConfigError, match=key):
        CalibratedPPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", **{key: value})
