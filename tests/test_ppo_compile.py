"""TrainingArguments' torch_compile in calrl's PPO (calrl.trainers.ppo_compile): off, nothing is compiled; on, the
trained module (accelerate), the generating policy's forward and the frozen backbones are, and a run trains with the
eager run's first rollout."""

import dataclasses
import re
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, set_seed

from calrl.errors import ConfigError
from calrl.trainers.ppo import CalibratedPPOConfig, CalibratedPPOTrainer
from calrl.trainers.ppo_compile import CompiledForwards, compile_options, generating_model, named_module
from calrl.trainers.ppo_optim import split_critic

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts" / "ppo_parity"))
try:
    import tiny_setup
finally:
    sys.path.pop(0)

MODE = "max-autotune-no-cudagraphs"
LOSS_KEYS = ("loss/policy_avg", "loss/value_avg", "objective/kl", "objective/scores", "objective/entropy")


def config(tmp_path, name, updates, **extra):
    known = {f.name for f in dataclasses.fields(CalibratedPPOConfig)}
    hp = {k: v for k, v in tiny_setup.PPO_HPARAMS.items() if k in known and k != "total_episodes"}
    return CalibratedPPOConfig(output_dir=str(tmp_path / name), use_cpu=True, report_to="none", save_strategy="no",
                               logging_steps=1, disable_tqdm=True, num_sample_generations=0,
                               total_episodes=updates * hp["per_device_train_batch_size"], **{**hp, **extra})


def run(tmp_path, name, updates, **extra):
    """A PPO run on the parity fixture's tiny Qwen2 models; returns (trainer, rollouts, per-update logs)."""
    torch.set_num_threads(1)
    set_seed(tiny_setup.PPO_HPARAMS["seed"])
    parts = tiny_setup.build_all()
    trainer = CalibratedPPOTrainer(config(tmp_path, name, updates, **extra), parts["tokenizer"], parts["policy"],
                                   parts["ref_policy"], parts["reward_model"], parts["train_dataset"],
                                   parts["value_model"])
    rollouts, rollout = [], trainer.rollout

    def recording(*a, **k):
        rollouts.append(rollout(*a, **k))
        return rollouts[-1]

    trainer.rollout = recording
    trainer.train()
    logs = [log for log in trainer.state.log_history if "loss/policy_avg" in log]
    assert len(logs) == len(rollouts) == updates
    return trainer, rollouts, logs


def test_compile_options_follow_the_training_arguments(tmp_path):
    assert compile_options(config(tmp_path, "off", 1)) is None
    on = config(tmp_path, "on", 1, torch_compile_mode="max-autotune-no-cudagraphs")  # a mode alone turns it on
    assert compile_options(on) == {"backend": "inductor", "dynamic": True, "mode": "max-autotune-no-cudagraphs"}
    assert compile_options(config(tmp_path, "eager", 1, torch_compile_backend="eager")) == {
        "backend": "eager", "dynamic": True}


@pytest.mark.parametrize("key,value,message", [
    ("torch_compile_backend", "inductr", "torch.compile has no backend 'inductr' (did you mean 'inductor'?)"),
    ("torch_compile_mode", "max_autotune", "got 'max_autotune' (did you mean 'max-autotune'?)"),
])
def test_unknown_backend_or_mode_is_refused_with_the_recipe(tmp_path, key, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        config(tmp_path, "bad", 1, **{key: value})
    assert err.value.field == key


def test_generation_forward_is_swapped_in_only_inside_the_block():
    from peft import LoraConfig, get_peft_model

    parts = tiny_setup.build_all()
    policy = parts["policy"]
    compiled = CompiledForwards({"backend": "eager", "dynamic": True})
    with compiled.generating(policy):
        swapped = vars(policy)["forward"]
        assert swapped is not None
    assert "forward" not in vars(policy)  # the class's forward again: training never sees the generation graph
    with compiled.generating(policy):
        assert vars(policy)["forward"] is swapped  # compiled once per model
    lora = get_peft_model(parts["ref_policy"], LoraConfig(r=2, target_modules=["q_proj"]))
    assert generating_model(lora) is lora.get_base_model()
    with compiled.generating(lora):
        assert "forward" in vars(lora.get_base_model()) and "forward" not in vars(lora)
    assert "forward" not in vars(lora.get_base_model())
    for inert in (CompiledForwards(None), CompiledForwards({"backend": "eager"}, "DEEPSPEED")):
        with inert.generating(policy):
            assert "forward" not in vars(policy)
        inert.compile_frozen(parts["reward_model"])
        assert not inert.active


def test_torch_compile_off_compiles_nothing(tmp_path, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("torch.compile called with torch_compile off")

    monkeypatch.setattr(torch, "compile", refuse)
    trainer, _, logs = run(tmp_path, "off", 2)
    assert not trainer.compiled_forwards.active and all(torch.isfinite(torch.tensor(log["loss/policy_avg"]))
                                                        for log in logs)


def recording_compile(monkeypatch):
    """torch.compile replaced by a recorder (what was compiled, with which options) that still compiles; the
    generation forward it returns counts its calls (and whether gradients were on)."""
    real_compile, compiled, generation_calls = torch.compile, [], []

    def recording(target, **kwargs):
        name = getattr(target, "__name__", None)
        compiled.append((getattr(target, "__self__", target), name, kwargs))
        out = real_compile(target, **kwargs)
        if name != "forward":
            return out

        def counted(*a, **k):
            generation_calls.append(torch.is_grad_enabled())
            return out(*a, **k)
        return counted

    monkeypatch.setattr(torch, "compile", recording)
    return compiled, generation_calls


def test_torch_compile_compiles_the_trained_module_generation_and_the_frozen_backbones(tmp_path, monkeypatch):
    """What is compiled, without running it (torch.compile is lazy)."""
    compiled, _ = recording_compile(monkeypatch)
    parts = tiny_setup.build_all()
    trainer = CalibratedPPOTrainer(config(tmp_path, "wiring", 1, torch_compile=True, torch_compile_mode=MODE),
                                   parts["tokenizer"], parts["policy"], parts["ref_policy"], parts["reward_model"],
                                   parts["train_dataset"], parts["value_model"])
    trainer._prepare()
    wrapper = trainer.accelerator.unwrap_model(trainer.model, keep_torch_compile=False)
    with trainer.compiled_forwards.generating(wrapper.policy):
        pass
    targets = {(id(owner), name) for owner, name, _ in compiled}
    assert (id(wrapper), None) in targets  # accelerate: the trained module (training and value forwards)
    assert (id(wrapper.policy), "forward") in targets  # generation
    assert (id(trainer.ref_model.model), "_call_impl") in targets  # the frozen backbones, in place
    assert (id(trainer.reward_model.model), "_call_impl") in targets
    assert len(compiled) == 4 and all(kw.get("mode") == MODE for _, _, kw in compiled)  # the recipe's mode everywhere
    assert all(kw == {"backend": "inductor", "dynamic": True, "mode": MODE} for _, name, kw in compiled
               if name is not None)
    # names and state dicts are read below accelerate's compile layer: the critic's gradient groups, the saved policy
    assert named_module(trainer.model, trainer.accelerator) is wrapper
    policy_names, critic_names = split_critic(named_module(trainer.model, trainer.accelerator))
    assert policy_names and critic_names
    trainer.save_model(str(tmp_path / "saved"))
    saved = AutoModelForCausalLM.from_pretrained(str(tmp_path / "saved"))
    for name, tensor in wrapper.policy.state_dict().items():
        assert torch.equal(saved.state_dict()[name], tensor), name


@pytest.mark.slow
def test_eager_backend_run_is_the_eager_run(tmp_path, monkeypatch):
    """With dynamo's eager backend (graphs captured, no code generated) every generated token goes through the
    compiled generation forward without gradients, and the run is the eager run's, gradient clipping of the policy
    and the critic apart included: the same tokens, the logged losses to 1e-5 (captured graphs may order a few
    operations differently: policy losses of 1e-7 near 0)."""
    clipping = {"max_grad_norm": 0.05, "critic_max_grad_norm": 0.01}  # the critic's own groups, read by name
    _, eager_rollouts, eager_logs = run(tmp_path, "eager", 2, **clipping)
    _, generation_calls = recording_compile(monkeypatch)
    trainer, rollouts, logs = run(tmp_path, "compiled", 2, torch_compile=True, torch_compile_backend="eager",
                                  **clipping)
    assert len(generation_calls) >= 2 * tiny_setup.PPO_HPARAMS["response_length"] and not any(generation_calls)
    assert "forward" not in vars(trainer.accelerator.unwrap_model(trainer.model).policy)
    for ours, theirs in zip(rollouts, eager_rollouts):
        assert torch.equal(ours.responses, theirs.responses)
    for ours, theirs in zip(logs, eager_logs):
        for key in LOSS_KEYS:
            assert ours[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-5), key


@pytest.mark.slow
def test_inductor_compiled_run_trains_from_the_eager_first_rollout(tmp_path):
    """torch_compile: true as a recipe sets it (inductor): the first update samples the eager run's tokens (the
    compiled kernels' floats differ from eager's by rounding only, so the draw is the same at this seed) and
    its log-probabilities, values, scores and losses agree to 1e-4; later updates train from weights that differ by
    rounding, so only that they are finite is checked."""
    _, eager_rollouts, eager_logs = run(tmp_path, "eager", 1)
    _, rollouts, logs = run(tmp_path, "compiled", 3, torch_compile=True)
    first, eager = rollouts[0], eager_rollouts[0]
    assert torch.equal(first.responses, eager.responses)
    for field in ("logprobs", "ref_logprobs", "values", "scores", "advantages"):
        torch.testing.assert_close(getattr(first, field), getattr(eager, field), rtol=1e-4, atol=1e-4,
                                   msg=lambda m, f=field: f"{f}: {m}")
    for key in LOSS_KEYS:
        assert logs[0][key] == pytest.approx(eager_logs[0][key], rel=1e-4, abs=1e-4), key
    assert all(torch.isfinite(torch.tensor([log[k] for k in LOSS_KEYS])).all() for log in logs)
