"""The step-0 calibration eval (issue 20, point 6): recipes evaluate the policy before training by default
(``eval.at_start``), logged at step 0 for PPO, GRPO and RLOO, so every W&B chart starts at the policy
before RL; a resumed run does not repeat it and it is never the run's "best" eval."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from datasets import Dataset

from calrl.callbacks.calibration_eval import CalibrationEvalCallback
from calrl.callbacks.wandb_panels import summary_panel
from calrl.callbacks.wandb_utils import find_offline_runs, init_wandb_run, read_offline_history
from calrl.tiny.models import build_tiny_reward_model

sys.path.insert(0, str(Path(__file__).parent))
from callback_helpers import EXPECTED, ITEMS, PROMPT, build_scripted_policy, eval_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scripted():
    return build_scripted_policy()


def _config(**kw):
    return eval_config(**{"eval_on_start": True, **kw})


def _eval_rows(tmp_path):
    import wandb

    wandb.finish()
    return [row for row in read_offline_history(find_offline_runs(tmp_path)[0]) if "eval/ece" in row]


def test_recipes_evaluate_before_training_unless_turned_off():
    from calrl.runners.data import calibration_eval_config
    from calrl.runners.recipe import load_recipe

    for name in ("tiny_ppo_c", "tiny_grpo_brier", "tiny_rloo_brier"):
        recipe = load_recipe(REPO / "configs" / "tests" / f"{name}.yaml")
        assert recipe.eval.at_start is True
        assert calibration_eval_config(recipe, ITEMS).eval_on_start is True
    off = load_recipe(REPO / "configs" / "tests" / "tiny_ppo_c.yaml", ["eval.at_start=false"])
    assert calibration_eval_config(off, ITEMS).eval_on_start is False


def _policy_gradient(kind, tmp_path, scripted, **kw):
    if kind == "grpo":
        from calrl.trainers.grpo import CalibratedGRPOConfig as Config
        from calrl.trainers.grpo import CalibratedGRPOTrainer as Trainer
    else:
        from calrl.trainers.rloo import CalibratedRLOOConfig as Config
        from calrl.trainers.rloo import CalibratedRLOOTrainer as Trainer
    from calrl.tiny.models import save_pretrained

    model, tokenizer = copy.deepcopy(scripted[0]), scripted[1]
    # RLOO loads its reference copy by the policy's name: save it, as calrl's runner does with a tiny policy
    model.config.name_or_path = str(save_pretrained(model, tokenizer, tmp_path / "init"))
    data = Dataset.from_list([{"prompt": PROMPT.build_messages(it), "reference": it.reference[0]} for it in ITEMS[:2]])
    args = Config(output_dir=str(tmp_path / kind), use_cpu=True, num_generations=2, max_completion_length=8,
                  per_device_train_batch_size=2, num_train_epochs=2, logging_steps=1, disable_tqdm=True,
                  reward_funcs=["brier", "format"], save_strategy="no", report_to="wandb", run_name=kind, seed=0)
    return Trainer(model=model, args=args, train_dataset=data, processing_class=tokenizer, **kw)


@pytest.mark.parametrize("kind", ["grpo", "rloo"])
def test_grpo_and_rloo_log_an_eval_at_step_0(tmp_path, scripted, kind):
    init_wandb_run("calrl-tests", kind, {"test": True})
    trainer = _policy_gradient(kind, tmp_path, scripted, calibration_eval=_config())
    trainer.train()
    history = trainer.calibration_callback.history
    assert [(r.label, r.step) for r in history] == [("epoch-0", 0), ("epoch-1", 2), ("epoch-2", 4)]
    rows = _eval_rows(tmp_path)
    assert [(row["train/global_step"], row["eval/epoch"]) for row in rows] == [(0, 0), (2, 1), (4, 2)]
    assert rows[0]["eval/ece"] == pytest.approx(EXPECTED["ece"])  # the scripted policy before any update


def test_ppo_logs_an_eval_at_step_0(tmp_path, scripted):
    from calrl.trainers.ppo import CalibratedPPOConfig, CalibratedPPOTrainer

    model, tokenizer = scripted
    prompts = [tokenizer.apply_chat_template(PROMPT.build_messages(it), add_generation_prompt=True,
                                             tokenize=True, return_dict=False) for it in ITEMS[:4]]
    args = CalibratedPPOConfig(output_dir=str(tmp_path / "ppo"), use_cpu=True, report_to="wandb", run_name="ppo",
                               per_device_train_batch_size=2, num_mini_batches=1, total_episodes=6,
                               response_length=8, num_ppo_epochs=1, save_strategy="no", logging_steps=1,
                               disable_tqdm=True, stop_token="eos", num_sample_generations=0)
    init_wandb_run("calrl-tests", "ppo", {"test": True})
    trainer = CalibratedPPOTrainer(args=args, processing_class=tokenizer, model=copy.deepcopy(model),
                                   ref_model=copy.deepcopy(model), reward_model=build_tiny_reward_model(tokenizer),
                                   value_model=build_tiny_reward_model(tokenizer, seed=1),
                                   train_dataset=Dataset.from_list([{"input_ids": p} for p in prompts]))
    callback = CalibrationEvalCallback(_config()).attach(trainer)
    trainer.train()
    assert [(r.label, r.step) for r in callback.history] == [("epoch-0", 0), ("epoch-1", 2), ("epoch-2", 3)]
    rows = _eval_rows(tmp_path)
    assert [row["train/global_step"] for row in rows] == [0, 2, 3] and rows[0]["eval/epoch"] == 0
    assert rows[0]["eval/ece"] == pytest.approx(EXPECTED["ece"])


def test_a_resumed_run_does_not_evaluate_its_start_again(scripted):
    callback = CalibrationEvalCallback(_config())
    seen = []
    callback.evaluate = lambda label, *a, **k: seen.append(label)
    state = SimpleNamespace(epoch=1.0, global_step=4, is_world_process_zero=False)  # no plot worker for a fake
    callback.on_train_begin(SimpleNamespace(output_dir="x"), state, None)
    assert seen == []
    callback.on_train_begin(SimpleNamespace(output_dir="x"),
                            SimpleNamespace(epoch=0.0, global_step=0, is_world_process_zero=False), None)
    assert seen == ["epoch-0"]


def test_the_start_eval_is_never_the_best():
    def ev(label, step, ece, accuracy):
        return SimpleNamespace(label=label, epoch=float(step), step=step,
                               metrics={"ece": ece, "accuracy": accuracy, "refusal_rate": 0.0})

    s = summary_panel([ev("epoch-0", 0, 0.01, 0.99), ev("epoch-1", 4, 0.3, 0.5), ev("epoch-2", 8, 0.2, 0.6)])
    assert s["calibration/best_ece"] == 0.2 and s["calibration/best_ece_label"] == "epoch-2"
    assert s["calibration/best_accuracy"] == 0.6 and s["calibration/n_evals"] == 3
    assert "calibration/best_ece" not in summary_panel([ev("epoch-0", 0, 0.01, 0.99)])
