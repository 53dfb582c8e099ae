"""Numerical parity of calrl's PPO with trl 1.12.0's PPOTrainer, from a fixture recorded by that version.

``tests/fixtures/ppo_parity_trl112.json`` was written by ``scripts/ppo_parity/record_trl112.py`` running trl
1.12.0 in its own virtual environment: per update, the rollout batch (tokens, logprobs, reference logprobs,
values, scores) and what trl computed from it (rewards, advantages, returns, KL, per-micro-batch losses,
logged metrics). The same rollout tensors go through calrl's code here and must give the same numbers to
1e-5. The long run's logged metrics give the qualitative target of calrl's full loop.
"""

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from calrl.trainers.ppo_core import (
    INVALID_LOGPROB,
    generalized_advantages,
    per_token_kl,
    ppo_loss,
    response_masks,
    token_rewards,
    truncate_after_stop,
    whitened_advantages,
)

REPO = Path(__file__).resolve().parents[1]
FIXTURE = json.loads((REPO / "tests" / "fixtures" / "ppo_parity_trl112.json").read_text())
TOL = 1e-5


def t(values, dtype=torch.float32):
    return torch.tensor(values, dtype=dtype)


def close(actual, expected, what):
    expected = t(expected)
    assert actual.shape == expected.shape, what
    assert torch.allclose(actual.float(), expected, atol=TOL, rtol=0), \
        f"{what}: max diff {float((actual.float() - expected).abs().max())}"


def replay(step, config):
    """calrl's arithmetic on one recorded rollout; returns what the losses and metrics need."""
    pad, stop = config["pad_token_id"], config["stop_token_id"]
    responses = t(step["responses"], torch.long)
    final = truncate_after_stop(responses, stop, pad)
    assert final.tolist() == step["postprocessed_responses"]
    masks = response_masks(final, pad)
    assert masks.sequence_lengths.tolist() == step["sequence_lengths"]
    has_eos = (final == config["eos_token_id"]).any(-1)
    scores = torch.where(has_eos, t(step["scores_raw"]), t(step["scores_raw"]) - config["missing_eos_penalty"])
    close(scores, step["scores"], "scores after the missing-EOS penalty")
    logprobs = t(step["logprobs_raw"]).masked_fill(masks.padding, INVALID_LOGPROB)
    ref_logprobs = t(step["ref_logprobs_raw"]).masked_fill(masks.padding, INVALID_LOGPROB)
    values = t(step["values_raw"]).masked_fill(masks.padding_p1, 0.0)
    kl = per_token_kl(logprobs, ref_logprobs, config["kl_estimator"])
    close(kl, step["kl"], "per-token KL")
    rewards, non_score = token_rewards(scores, kl, masks, config["kl_coef"], whiten=config["whiten_rewards"])
    close(rewards, step["rewards"], "per-token rewards")
    advantages, returns = generalized_advantages(rewards, values, config["gamma"], config["lam"])
    close(returns, step["returns"], "returns")
    advantages = whitened_advantages(advantages, masks.padding)
    close(advantages, step["advantages"], "whitened advantages")
    return {"masks": masks, "scores": scores, "logprobs": logprobs, "values": values, "kl": kl,
            "non_score": non_score, "advantages": advantages, "returns": returns}


def check_losses(step, config, r):
    losses = []
    for mb in step["micro_batches"]:
        idx = torch.tensor(mb["indices"])
        out = ppo_loss(t(mb["new_logprobs_raw"]), r["logprobs"][idx], r["advantages"][idx], t(mb["vpred_raw"]),
                       r["values"][idx], r["returns"][idx], r["masks"].padding[idx], r["masks"].padding_p1[idx],
                       cliprange=config["cliprange"], cliprange_value=config["cliprange_value"],
                       vf_coef=config["vf_coef"])
        for name in ("pg_loss", "vf_loss", "pg_clipfrac", "vf_clipfrac", "approxkl", "ratio_mean"):
            assert float(getattr(out, name)) == pytest.approx(mb[name], abs=TOL), name
        losses.append(out)
    return losses


def check_metrics(step, r, losses):
    m = step["metrics"]
    kl_sum = r["kl"].sum(1).mean()
    entropy = ((-r["logprobs"]) * (~r["masks"].padding)).sum(1).mean()
    non_score = r["non_score"].sum(1).mean()
    expected = {"objective/kl": kl_sum, "objective/entropy": entropy, "objective/non_score_reward": non_score,
                "objective/rlhf_reward": non_score + r["scores"].mean(), "objective/scores": r["scores"].mean(),
                "loss/policy_avg": torch.stack([x.pg_loss for x in losses]).mean(),
                "loss/value_avg": torch.stack([x.vf_loss for x in losses]).mean(),
                "policy/approxkl_avg": torch.stack([x.approxkl for x in losses]).mean(),
                "policy/clipfrac_avg": torch.stack([x.pg_clipfrac for x in losses]).mean(),
                "val/clipfrac_avg": torch.stack([x.vf_clipfrac for x in losses]).mean(),
                "val/ratio": torch.stack([x.ratio_mean for x in losses]).mean()}
    for key, value in expected.items():
        assert float(value) == pytest.approx(m[key], abs=TOL * max(1.0, abs(m[key]))), key


@pytest.mark.parametrize("step_index", range(len(FIXTURE["steps"])))
def test_rollout_arithmetic_and_losses_match_trl_1_12(step_index):
    step, config = FIXTURE["steps"][step_index], FIXTURE["config"]
    r = replay(step, config)
    check_metrics(step, r, check_losses(step, config, r))


@pytest.mark.parametrize("step_index", range(len(FIXTURE["variants"]["epochs4_minibatches2"]["steps"])))
def test_off_policy_epochs_clip_like_trl_1_12(step_index):
    """4 PPO epochs x 2 mini-batches: ratios away from 1, clipping active; the losses still match."""
    variant = FIXTURE["variants"]["epochs4_minibatches2"]
    step = variant["steps"][step_index]
    r = replay(step, variant["config"])
    losses = check_losses(step, variant["config"], r)
    check_metrics(step, r, losses)
    if step_index > 0:
        assert any(x.pg_clipfrac > 0 for x in losses)


def test_fixture_is_from_trl_1_12():
    assert FIXTURE["source"]["trl"] == "1.12.0"
    assert len(FIXTURE["steps"]) >= 3 and FIXTURE["long_run"]["updates"] >= 30


@pytest.mark.slow
def test_full_loop_reproduces_the_qualitative_run(tmp_path):
    """The same tiny setup and hyperparameters in calrl's trainer: the score rises as in trl's run, KL stays bounded."""
    sys.path.insert(0, str(REPO / "scripts" / "ppo_parity"))
    try:
        import tiny_setup
    finally:
        sys.path.pop(0)
    from calrl.trainers.ppo import CalibratedPPOConfig, CalibratedPPOTrainer

    torch.set_num_threads(1)
    parts = tiny_setup.build_all()
    trl_metrics = FIXTURE["long_run"]["metrics"]
    import dataclasses

    known = {f.name for f in dataclasses.fields(CalibratedPPOConfig)}
    hp = {k: v for k, v in tiny_setup.PPO_HPARAMS.items() if k in known and k != "total_episodes"}
    hp["max_grad_norm"] = 0.0  # trl 1.12's PPO loop never clips gradients
    args = CalibratedPPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", save_strategy="no",
                               logging_steps=1, disable_tqdm=True, num_sample_generations=0,
                               total_episodes=FIXTURE["long_run"]["updates"] * hp["per_device_train_batch_size"],
                               **hp)
    trainer = CalibratedPPOTrainer(args, parts["tokenizer"], parts["policy"], parts["ref_policy"],
                                   parts["reward_model"], parts["train_dataset"], parts["value_model"])
    trainer.train()
    ours = [log for log in trainer.state.log_history if "objective/scores" in log]
    assert len(ours) == len(trl_metrics)
    window = len(ours) // 4

    def rise(rows):
        scores = [row["objective/scores"] for row in rows]
        return sum(scores[-window:]) / window - sum(scores[:window]) / window

    trl_rise, our_rise = rise(trl_metrics), rise(ours)
    assert trl_rise > 0 and our_rise > 0.5 * trl_rise, (our_rise, trl_rise)
    trl_kl = max(row["objective/kl"] for row in trl_metrics)
    our_kl = [row["objective/kl"] for row in ours]
    assert all(math.isfinite(k) for k in our_kl) and max(our_kl) <= 2 * trl_kl, (max(our_kl), trl_kl)
