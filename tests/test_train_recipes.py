"""Recipes and launch configs: every recipe validates, every tiny recipe trains end to end, resume continues."""

import json
import shutil
import time
from pathlib import Path

import pytest
import torch

from calrl.cli.main import main
from calrl.config import load_yaml
from calrl.runners.data import with_confidence_prompts
from calrl.runners.recipe import METHODS, load_recipe, training_config_class

REPO = Path(__file__).resolve().parents[1]
REAL_RECIPES = sorted((REPO / "configs").glob("*.yaml"))
TINY_RECIPES = sorted((REPO / "configs" / "tests").glob("*.yaml"))
PAPER_RECIPES = sorted((REPO / "configs" / "paper").glob("*.yaml"))
PAPER_MODELS = ("llama3-8b", "qwen2.5-0.5b", "qwen2.5-1.5b")
PAPER_KINDS = ("rm", "rm_calibrated", "ppo", "ppo_m", "ppo_c_threshold", "ppo_c_difference")
ACCELERATE = {p.stem: p for p in (REPO / "configs" / "accelerate").glob("*.yaml")}
REQUIRED_REAL = {"rm_plain", "rm_calibrated", "ppo", "ppo_m", "ppo_c_threshold", "ppo_c_difference",
                 "ppo_c_abstention", "grpo_brier", "rloo_brier"}


def test_the_recipe_set_is_complete():
    assert REQUIRED_REAL <= {p.stem for p in REAL_RECIPES}
    assert {"tiny_rm", "tiny_rm_calibrated", "tiny_ppo", "tiny_ppo_c", "tiny_ppo_c_abstention", "tiny_ppo_m",
            "tiny_grpo_brier", "tiny_rloo_brier", "tiny_ppo_c_lora", "tiny_ppo_m_lora",
            "tiny_grpo_brier_lora"} <= {p.stem for p in TINY_RECIPES}
    assert {"ppo_c_threshold_lora", "ppo_m_lora", "grpo_brier_lora"} <= {p.stem for p in REAL_RECIPES}
    assert {"single_gpu", "multi_gpu", "deepspeed_zero2", "deepspeed_zero3", "fsdp", "cpu", "cpu_multi"} \
        <= set(ACCELERATE)
    assert {f"{m}_{k}" for m in PAPER_MODELS for k in PAPER_KINDS} <= {p.stem for p in PAPER_RECIPES}


@pytest.mark.parametrize("path", REAL_RECIPES + TINY_RECIPES + PAPER_RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_recipe_validates_without_loading_models(path):
    recipe = load_recipe(path, check_hardware=False)
    assert recipe.method in METHODS
    assert isinstance(recipe.training, training_config_class(recipe.method))
    assert recipe.training.report_to == ["wandb"]  # the default, and what every shipped recipe uses
    assert str(getattr(recipe.training.save_strategy, "value", recipe.training.save_strategy)) == "epoch"
    assert recipe.wandb.project and recipe.wandb.run_name
    if path.parent.name == "tests":
        assert recipe.training.use_cpu and recipe.trained_model() == "tiny"


def test_real_recipes_carry_the_reference_hyperparameters():
    ppo_c = load_recipe(REPO / "configs" / "ppo_c_threshold.yaml", check_hardware=False).training
    assert (ppo_c.reward_term("ppo_c").variant, ppo_c.reward_term("ppo_c").weight, ppo_c.reward_term("ppo_c").alpha, ppo_c.kl_coef) == ("threshold", 0.5, 0.1, 0.01)
    assert ppo_c.learning_rate == 5e-7 and ppo_c.bf16
    diff = load_recipe(REPO / "configs" / "ppo_c_difference.yaml", check_hardware=False).training
    assert (diff.reward_term("ppo_c").variant, diff.reward_term("ppo_c").weight) == ("difference", 2.0)
    ppo = load_recipe(REPO / "configs" / "ppo.yaml", check_hardware=False)
    assert ppo.training.reward_term("ppo_c") is None and ppo.data.confidence_prompt_fraction == 0.25
    ppo_m = load_recipe(REPO / "configs" / "ppo_m.yaml", check_hardware=False)
    assert ppo_m.model.reward_model.endswith("rm_calibrated") and ppo_m.training.reward_term("ppo_c") is None
    assert load_recipe(REPO / "configs" / "rm_plain.yaml", check_hardware=False).training.calibration_lambda == 0
    rm = load_recipe(REPO / "configs" / "rm_calibrated.yaml", check_hardware=False).training
    assert rm.calibration_lambda == 1.0 and rm.learning_rate == 9e-6
    abst = load_recipe(REPO / "configs" / "ppo_c_abstention.yaml", check_hardware=False).training
    assert abst.reward_term("correctness").wrong < abst.reward_term("abstention").value < abst.reward_term("correctness").correct
    grpo = load_recipe(REPO / "configs" / "grpo_brier.yaml", check_hardware=False).training
    assert grpo.scale_rewards == "none" and "brier" in grpo.reward_funcs


PAPER_SYSTEM_PROMPT_START = "For the following question, provide your best response first, followed by your confidence"


@pytest.mark.parametrize("model", PAPER_MODELS)
def test_paper_recipes_carry_the_reference_settings(model):
    """Values read off scripts/general_scripts/*.sh and OpenRLHF/openrlhf/cli/*.py of SeanLeng1/Reward-Calibration."""
    def load(kind):
        return load_recipe(REPO / "configs" / "paper" / f"{model}_{kind}.yaml", check_hardware=False)

    rm = load("rm").training
    assert (rm.calibration_lambda, rm.learning_rate, rm.num_train_epochs, rm.weight_decay) == (0.0, 2e-6, 2, 0.01)
    assert rm.per_device_train_batch_size * rm.gradient_accumulation_steps * 8 == 512  # train_rm.sh L13
    assert (rm.reward_stats_split, rm.long_pairs) == ("eval", "truncate")  # rm_trainer.py L243-260, reward_dataset.py
    crm = load("rm_calibrated")
    t = crm.training
    assert (t.calibration_loss, t.calibration_lambda, t.learning_rate, t.num_train_epochs) == \
        ("calibration_only", 1.0, 9e-6, 1)
    assert t.per_device_train_batch_size * t.gradient_accumulation_steps * 8 == 256  # train_crm.sh L13
    assert (t.reward_stats_split, t.long_pairs) == ("eval", "truncate")  # crm_trainer.py L322-341
    assert (list(t.confidence_high_range), list(t.confidence_low_range)) == ([7, 10], [0, 3])
    assert t.confidence_template == "\n{confidence}." and t.strip_existing_confidence is False
    assert t.confidence_system_prompt.startswith(PAPER_SYSTEM_PROMPT_START)
    assert t.confidence_system_prompt.endswith("Explicitly include the word 'Confidence:' in your response.")
    assert "```Example Format:\n<Your responses>\nConfidence: <Insert" in t.confidence_system_prompt
    assert crm.model.reward_model == ("models/llama3-8b-rm-mixture" if model == "llama3-8b"  # converted
                                      else f"runs/paper/{model}_rm")  # train_crm.sh L15: a trained RM
    for kind in ("ppo", "ppo_m", "ppo_c_threshold", "ppo_c_difference"):
        recipe = load(kind)
        p = recipe.training
        assert (p.learning_rate, p.kl_coef, p.num_ppo_epochs, p.cliprange, p.cliprange_value) == (5e-7, 0.01, 1, 0.2, 0.2)
        assert (p.gamma, p.lam, p.temperature, p.response_length, p.max_prompt_length) == (1.0, 0.95, 1.0, 1024, 1024)
        rollout = p.per_device_train_batch_size * p.gradient_accumulation_steps * 8
        assert (rollout, rollout // p.num_mini_batches) == (512, 64)
        assert p.reward_term("rm").normalize is True and p.missing_eos_penalty is None and p.reward_terms()[-1].name == "clamp"
        assert recipe.data.columns.prompt == "confidence_prompt" and recipe.data.confidence_prompt_fraction == 0.0
        e = recipe.eval
        assert (e.prompt_style, e.confidence_parser, e.confidence_retries, e.n_bins) == ("cot", "reference", 11, 10)
        assert (e.retry_when, e.forced_retry_tokens, e.option_format) == ("reference", 16, "({letter}) {text}")
        assert (e.do_sample, e.temperature, e.top_k, e.generation_seed) == (True, 1.0, 50, 1234)
        # the reference's dynamics, by name (docs/fidelity.md)
        assert (p.critic_learning_rate, p.critic_max_grad_norm) == (9e-6, 1.0)
        assert (p.loss_aggregation, p.advantage_whitening, p.score_placement, p.scheduler_cadence) == \
            ("sequence_mean", "global", "last_token", "per_optimizer_step")
        if kind.startswith("ppo_c"):
            assert p.ppo_c_average_cadence == "per_micro_batch"
            assert p.confidence_parser == "reference" and p.reward_term("ppo_c").init_average == "auto"
            assert (p.reward_term("ppo_c").alpha, p.reward_term("clamp").value, p.missing_confidence) == (0.1, 10.0, "half")
            assert p.strip_append_eos is True  # calibrated_experience_maker.py L183-185
        else:
            assert p.reward_term("ppo_c") is None and p.strip_append_eos is False
    assert (load("ppo_c_difference").training.reward_term("ppo_c").variant, load("ppo_c_difference").training.reward_term("ppo_c").weight) == \
        ("difference", 2.0)  # train-ppo-c-llama.sh L38-39
    assert (load("ppo_c_threshold").training.reward_term("ppo_c").variant, load("ppo_c_threshold").training.reward_term("ppo_c").weight) == \
        ("threshold", 0.5)  # train_cppo.py --w / --adjustment_type defaults
    assert load("ppo_m").model.reward_model == f"runs/paper/{model}_rm_calibrated"


def test_paper_recipes_cite_a_source_on_every_setting():
    for path in PAPER_RECIPES:
        lines = path.read_text().splitlines()
        assert "SeanLeng1/Reward-Calibration" in path.read_text()
        for key in ("learning_rate:", "kl_coef:", "ppo_c_weight:", "ppo_c_variant:", "normalize_reward:",
                    "calibration_loss:", "confidence_template:", "num_train_epochs:"):
            for line in (x for x in lines if x.strip().startswith(key)):
                assert "#" in line.split(key, 1)[1], f"{path.name}: {line.strip()} cites no source"


def test_overrides_reach_every_section(tmp_path):
    recipe = load_recipe(REPO / "configs" / "tests" / "tiny_ppo_c.yaml",
                         ["training.learning_rate=3e-5", "data.limit=4", "eval.every_n_steps=2",
                          "wandb.run_name=other", "lora.r=4", "training.kl_coef=0.125"])
    assert recipe.training.learning_rate == 3e-5 and recipe.data.limit == 4 and recipe.eval.every_n_steps == 2
    assert recipe.wandb.run_name == "other" and recipe.lora.r == 4
    assert recipe.training.kl_coef == 0.125


@pytest.mark.parametrize("name", sorted(ACCELERATE))
def test_accelerate_configs_parse_with_accelerates_loader(name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ACCELERATE[name]))
    kind = str(config.distributed_type).split(".")[-1]
    expected = {"single_gpu": ("NO", 1), "cpu": ("NO", 1), "multi_gpu": ("MULTI_GPU", 8),
                "deepspeed_zero2": ("DEEPSPEED", 8), "deepspeed_zero3": ("DEEPSPEED", 8), "fsdp": ("FSDP", 8),
                "cpu_multi": ("MULTI_GPU", 2), "deepspeed_zero2_offload": ("DEEPSPEED", 8)}
    assert (kind, config.num_processes) == expected[name]
    raw = load_yaml(ACCELERATE[name])
    if name.startswith("deepspeed"):
        assert config.deepspeed_config["zero_stage"] == int(name.split("_")[1][-1])
        offload = config.deepspeed_config["offload_optimizer_device"]
        assert offload == ("cpu" if name.endswith("_offload") else "none")
    if name == "fsdp":
        assert config.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
        assert config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == "Qwen2DecoderLayer"
    assert raw["use_cpu"] is (name == "cpu")


def test_confidence_prompt_goes_to_the_configured_share_of_single_turn_prompts():
    prompts = [f"q{i}" for i in range(20)] + [[{"role": "user", "content": "a"}, {"role": "assistant",
                                                                                 "content": "b"},
                                               {"role": "user", "content": "c"}]]
    out, n = with_confidence_prompts(prompts, 0.25, "SYSTEM", seed=3)
    assert n == 5 and sum(m[0]["role"] == "system" for m in out) == 5
    assert out[-1] == prompts[-1]  # multi-turn left unchanged
    assert all(m[-1]["content"] == f"q{i}" for i, m in enumerate(out[:20]))
    again, _ = with_confidence_prompts(prompts, 0.25, "SYSTEM", seed=3)
    assert again == out
    assert with_confidence_prompts(prompts, 0.0, "S", seed=0)[1] == 0
    assert with_confidence_prompts(prompts, 1.0, "S", seed=0)[1] == 20


# ------------------------------------------------------------------------------ tiny runs end to end
def tiny(name):
    return str(REPO / "configs" / "tests" / f"{name}.yaml")


def train(command, name, *overrides):
    start = time.monotonic()
    code = main([command, "--config", tiny(name), *overrides])
    return code, time.monotonic() - start


def trainer_state(checkpoint):
    return json.loads((Path(checkpoint) / "trainer_state.json").read_text())


def check_output(out, *, epochs=2):
    out = Path(out)
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert (out / "tokenizer.json").is_file()
    card = (out / "README.md").read_text()
    assert "- method:" in card and "- base model:" in card and "## Recipe" in card
    checkpoints = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert len(checkpoints) == epochs  # one per epoch
    return card, checkpoints


def eval_history():
    from calrl.callbacks.wandb_utils import find_offline_runs, read_offline_history

    runs = find_offline_runs(Path.cwd() / "wandb") or find_offline_runs(Path.cwd())
    assert runs, "no offline W&B run"
    return read_offline_history(runs[-1])


@pytest.mark.slow
def test_tiny_ppo_c_logs_eval_ece_every_epoch_and_resumes(tmp_path):
    code, seconds = train("train-ppo", "tiny_ppo_c")
    assert code == 0
    assert seconds < 180
    card, checkpoints = check_output("runs/tiny_ppo_c")
    assert "PPO-C (threshold)" in card and "Final calibration metrics (epoch-2)" in card
    assert [trainer_state(c)["global_step"] for c in checkpoints] == [4, 8]
    assert [int(trainer_state(c)["epoch"]) for c in checkpoints] == [1, 2]
    for c in checkpoints:  # eval predictions next to the checkpoint, and the PPO-C moving average
        assert list((c / "calibration_eval").glob("epoch-*/predictions.jsonl"))
        assert json.loads((c / "calrl_ppo_state.json").read_text())["reward_pipeline"]["adjuster"]["average"] is not None
        assert (c / "value_model" / "config.json").is_file()
    history = eval_history()
    rows = [r for r in history if "eval/ece" in r]
    assert [r["eval/epoch"] for r in rows] == [0, 1, 2]  # eval.at_start: the policy before RL at step 0
    assert all(isinstance(r["eval/ece"], float) and 0 <= r["eval/ece"] <= 1 for r in rows)
    assert [r["train/global_step"] for r in rows] == [0, 4, 8]
    # train() does not wait for the last diagram; the runner does before the W&B run finishes: every row has its
    # diagram, every eval folder and its checkpoint copy are complete
    assert all(r["eval/reliability_diagram._type"] == "image-file" for r in rows)
    for label in ("epoch-0", "epoch-1", "epoch-2"):
        assert (Path("runs/tiny_ppo_c/calibration_eval") / label / "reliability.png").is_file()
    for c, label in zip(checkpoints, ("epoch-1", "epoch-2"), strict=True):
        copy = c / "calibration_eval" / label / "reliability.png"
        assert copy.read_bytes() == (Path("runs/tiny_ppo_c/calibration_eval") / label / "reliability.png").read_bytes()
    # the warmed-up tiny policy states confidences, so PPO-C really adjusts the rewards
    steps = [r for r in history if "train/reward/adjustment" in r]
    assert len(steps) == 8 and all(r["train/confidence/parsable_rate"] > 0 for r in steps)
    assert any(abs(r["train/reward/adjustment"]) > 0 for r in steps)

    # resume: drop the last checkpoint and continue from the first one
    full = trainer_state(checkpoints[1])
    from safetensors.torch import load_file

    full_weights = load_file(checkpoints[1] / "model.safetensors")
    shutil.rmtree(checkpoints[1])
    code, _ = train("train-ppo", "tiny_ppo_c", "--resume", "runs/tiny_ppo_c/checkpoint-4", "wandb.mode=disabled")
    assert code == 0
    state = trainer_state("runs/tiny_ppo_c/checkpoint-8")
    saved = json.loads((Path("runs/tiny_ppo_c/checkpoint-8") / "calrl_ppo_state.json").read_text())
    assert state["global_step"] == 8 and saved["episode"] == 32 and int(state["epoch"]) == 2
    assert [row["step"] for row in state["log_history"] if "objective/scores" in row] == list(range(1, 9))
    # the LR schedule (and so the optimizer/scheduler state) continued exactly where it stopped
    assert [row["lr"] for row in state["log_history"] if "lr" in row] == \
        [row["lr"] for row in full["log_history"] if "lr" in row]
    # the restored moving average, not a fresh one, was used after the resume
    assert saved["reward_pipeline"]["adjuster"]["num_updates"] == 8
    # and the resumed run ends with the weights of the uninterrupted one
    from safetensors.torch import load_file

    assert all(torch.equal(a, b) for a, b in zip(full_weights.values(), load_file(
        "runs/tiny_ppo_c/checkpoint-8/model.safetensors").values()))


@pytest.mark.slow
def test_tiny_ppo_and_ppo_c_abstention_run(tmp_path):
    for name, label in (("tiny_ppo", "PPO (calrl"), ("tiny_ppo_c_abstention", "PPO-C (difference)")):
        code, _ = train("train-ppo", name, "wandb.mode=disabled")
        assert code == 0
        card, _ = check_output(f"runs/{name}")
        assert label in card


@pytest.mark.slow
def test_tiny_rm_calibrated_then_ppo_m(tmp_path):
    code, _ = train("train-rm", "tiny_rm_calibrated")
    assert code == 0
    card, _ = check_output("runs/tiny_rm_calibrated")
    assert "calibrated loss" in card
    report = json.loads(Path("runs/tiny_rm_calibrated/reward_model_report.json").read_text())
    assert report["n_pairs"] == 8 and 0 <= report["preference_accuracy"] <= 1
    assert set(report["confidence_bias"]) == {"chosen", "rejected"}
    assert (Path("runs/tiny_rm_calibrated/reward_model_report.md")).is_file()
    history = eval_history()
    assert any("rm_probe/chosen_prefers_high_rate" in r for r in history)
    # PPO-M: vanilla PPO on the calibrated RM just trained (its own saved tokenizer)
    code, _ = train("train-ppo", "tiny_ppo_m", "wandb.mode=disabled")
    assert code == 0
    card, _ = check_output("runs/tiny_ppo_m")
    assert "runs/tiny_rm_calibrated" in card


@pytest.mark.slow
def test_tiny_rm_plain(tmp_path):
    code, _ = train("train-rm", "tiny_rm", "training.report_to=none")
    assert code == 0
    card, _ = check_output("runs/tiny_rm")
    assert "reward model (calrl" in card and "preference_accuracy" in card
    assert not Path("wandb").exists()  # report_to: none starts no W&B run


@pytest.mark.slow
@pytest.mark.parametrize("command, name", [("train-grpo", "tiny_grpo_brier"), ("train-rloo", "tiny_rloo_brier")])
def test_tiny_grpo_and_rloo_brier(tmp_path, command, name):
    code, _ = train(command, name)
    assert code == 0
    _, checkpoints = check_output(f"runs/{name}")
    assert [trainer_state(c)["global_step"] for c in checkpoints] == [4, 8]
    rows = eval_history()
    assert [(r["eval/epoch"], r["train/global_step"]) for r in rows if "eval/ece" in r] == [(0, 0), (1, 4), (2, 8)]
    assert any("train/rewards/brier/mean" in r for r in rows)
    if command != "train-grpo":
        return
    # resume (native Trainer resume): drop the last checkpoint and continue from the first one
    full = trainer_state(checkpoints[1])
    shutil.rmtree(checkpoints[1])
    code, _ = train(command, name, f"training.resume_from_checkpoint={checkpoints[0]}", "wandb.mode=disabled")
    assert code == 0
    state = trainer_state(checkpoints[1])
    assert state["global_step"] == 8
    assert [row["step"] for row in state["log_history"] if "loss" in row] == list(range(1, 9))
    assert [row["learning_rate"] for row in state["log_history"] if "loss" in row] == \
        [row["learning_rate"] for row in full["log_history"] if "loss" in row]


@pytest.mark.slow
def test_lora_adapters_for_the_policy_and_the_reward_model(tmp_path):
    lora = ["lora.r=4", "lora.target_modules=[q_proj, v_proj]", "wandb.mode=disabled", "training.num_train_epochs=1"]
    code, _ = train("train-grpo", "tiny_grpo_brier", *lora)
    assert code == 0
    config = json.loads(Path("runs/tiny_grpo_brier/adapter_config.json").read_text())
    assert config["r"] == 4 and set(config["target_modules"]) == {"q_proj", "v_proj"}
    assert config["task_type"] == "CAUSAL_LM"
    code, _ = train("train-rm", "tiny_rm", *lora)
    assert code == 0
    config = json.loads(Path("runs/tiny_rm/adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_CLS" and "score" in config["modules_to_save"]  # the head trains


@pytest.mark.slow
def test_lora_recipes_train_then_eval_the_adapter_folder_then_compare(tmp_path):
    """LoRA end to end: the adapter folder names its base (a tiny base is saved beside it), so
    `calrl eval --model ADAPTER_DIR` loads both; the two evals go through the release gate."""
    from calrl.cli.main import main

    eval_set = str(Path(__file__).resolve().parents[1] / "calrl" / "data" / "tiny" / "eval.jsonl")
    for command, name in (("train-ppo", "tiny_ppo_c_lora"), ("train-grpo", "tiny_grpo_brier_lora")):
        code, _ = train(command, name, "wandb.mode=disabled", "training.num_train_epochs=1")
        assert code == 0, name
        out = Path("runs") / name
        config = json.loads((out / "adapter_config.json").read_text())
        assert Path(config["base_model_name_or_path"]) == out.resolve() / "base_model"  # PEFT loads it anywhere
        assert (out / "base_model" / "config.json").is_file()
        assert not (out / "config.json").exists() and "library_name: peft" in (out / "README.md").read_text()
        assert main(["eval", "--model", str(out), "--dataset", eval_set, "--out", f"evals/{name}",
                     "--max-new-tokens", "12"]) == 0
        metrics = json.loads(Path(f"evals/{name}/metrics.json").read_text())
        assert metrics["config"]["adapter"] == str(out) and metrics["config"]["model"] == str(out / "base_model")
    code = main(["compare", "--baseline", "evals/tiny_grpo_brier_lora", "--candidate", "evals/tiny_ppo_c_lora",
                 "--out", "gate"])
    assert code in (0, 1) and json.loads(Path("gate/gate.json").read_text())["verdict"] in ("pass", "blocked")


@pytest.mark.slow
def test_resumed_run_continues_the_same_wandb_run(tmp_path, capsys):
    from calrl.callbacks.wandb_utils import find_offline_runs

    code, _ = train("train-ppo", "tiny_ppo", "training.num_train_epochs=1")
    assert code == 0
    first = find_offline_runs(tmp_path / "wandb")
    saved = json.loads(Path("runs/tiny_ppo/checkpoint-4/calrl_wandb.json").read_text())
    assert len(first) == 1 and first[0].name.endswith(saved["id"])
    capsys.readouterr()
    code, _ = train("train-ppo", "tiny_ppo", "--resume", "latest")
    assert code == 0
    out = capsys.readouterr().out
    assert f"resuming from runs/tiny_ppo/checkpoint-4 (step 4), continuing W&B run {saved['id']}" in out
    runs = find_offline_runs(tmp_path / "wandb")
    assert len(runs) == 2 and all(r.name.endswith(saved["id"]) for r in runs)  # one run id, continued
