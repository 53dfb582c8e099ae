"""CalibrationEvalCallback: epoch detection per trainer, metrics, files, and logging to an offline W&B run."""

import copy
import json
import logging
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset
from transformers import TrainerControl, TrainerState

from calrl.callbacks.calibration_eval import (
    CalibrationEvalCallback,
    CalibrationEvalConfig,
    EpochBoundaryTracker,
    unwrap_policy,
)
from calrl.callbacks.wandb_utils import find_offline_runs, init_wandb_run, read_offline_history
from calrl.errors import ConfigError
from calrl.eval.loading import load_predictions
from calrl.eval.resolving import resolve_records
from calrl.eval.runner import compute_metrics
from calrl.generation.generate import generate_predictions
from calrl.tiny.models import build_tiny_reward_model

sys.path.insert(0, str(Path(__file__).parent))
from callback_helpers import EXPECTED, ITEMS, PROMPT, build_scripted_policy, eval_config, target_response

EVAL_KEYS = ("eval/ece", "eval/brier", "eval/auroc", "eval/accuracy", "eval/refusal_rate",
             "eval/mean_confidence", "eval/smece", "eval/slice/parity=even/ece", "eval/slice/parity=odd/ece")


@pytest.fixture(scope="module")
def scripted():
    model, tokenizer = build_scripted_policy()
    records = generate_predictions(model, tokenizer, ITEMS, prompt=PROMPT, batch_size=4, max_new_tokens=12,
                                   show_progress=False)
    got = [r.response.replace(" ' ", "'") for r in records]
    assert got == [target_response(k).lower() for k in range(len(ITEMS))], got
    return model, tokenizer


def _config(**kw):
    return eval_config(**kw)


def _check_expected(logged):
    for key in ("ece", "brier", "auroc", "accuracy", "refusal_rate", "mean_confidence"):
        assert logged[f"eval/{key}"] == pytest.approx(EXPECTED[key]), key
    for value, ece in EXPECTED["slice_ece"].items():
        assert logged[f"eval/slice/parity={value}/ece"] == pytest.approx(ece)
    assert 0.0 <= logged["eval/smece"] <= 1.0


# ------------------------------------------------------------------------------------- epoch detection
def _run(tracker, events):
    """Feed (event, epoch) pairs; return the epochs reported as ended."""
    out = []
    for event, epoch in events:
        if event == "train_begin":
            tracker.train_begin(epoch)
        elif event == "epoch_begin":
            tracker.epoch_begin()
        else:
            k = getattr(tracker, event)(epoch)
            if k is not None:
                out.append(k)
    return out


def test_ppo_style_events_report_each_epoch_once():
    events = [("train_begin", 0.0)] + [("step_end", e) for e in (0.5, 1.0, 1.5, 2.0)] + [("train_end", 2.0)]
    assert _run(EpochBoundaryTracker(), events) == [1, 2]


def test_ppo_style_partial_final_epoch_is_reported_at_train_end_once():
    events = ([("train_begin", 0.0)] + [("step_end", e) for e in (0.5, 1.0, 1.5)]
              + [("train_end", 1.5), ("train_end", 1.5)])
    assert _run(EpochBoundaryTracker(), events) == [1, 2]


def test_ppo_style_steps_that_overshoot_an_epoch_boundary():
    events = [("train_begin", 0.0)] + [("step_end", e) for e in (0.75, 1.5, 2.25, 3.0)] + [("train_end", 3.0)]
    assert _run(EpochBoundaryTracker(), events) == [1, 2, 3]


def test_trainer_style_events_are_read_from_epoch_end_only():
    events = [("train_begin", 0.0), ("epoch_begin", None), ("step_end", 0.5), ("step_end", 1.0),
              ("epoch_end", 0.9999999), ("epoch_begin", None), ("step_end", 1.5), ("step_end", 2.0000001),
              ("epoch_end", 2.0000001), ("train_end", 2.0000001)]
    assert _run(EpochBoundaryTracker(), events) == [1, 2]


def test_trainer_stopped_mid_epoch_reports_the_partial_epoch():
    events = [("train_begin", 0.0), ("epoch_begin", None), ("step_end", 0.5), ("epoch_end", 1.0),
              ("epoch_begin", None), ("step_end", 1.5), ("epoch_end", 1.5), ("train_end", 1.5)]
    assert _run(EpochBoundaryTracker(), events) == [1, 2]


def test_resumed_run_does_not_report_completed_epochs_again():
    events = [("train_begin", 1.0), ("step_end", 1.5), ("step_end", 2.0), ("train_end", 2.0)]
    assert _run(EpochBoundaryTracker(), events) == [2]


# ------------------------------------------------------------------------------------- fake PPO loop
class PolicyAndValueWrapper(torch.nn.Module):
    """What a PPO loop hands its callbacks as ``model``: the policy and the value model in one module (as
    TRL's ``PolicyAndValueWrapper`` did), which cannot generate itself."""

    def __init__(self, policy, value_model):
        super().__init__()
        self.policy, self.value_model = policy, value_model


def test_callback_on_ppo_event_sequence(tmp_path, scripted):
    policy = copy.deepcopy(scripted[0])
    wrapper = PolicyAndValueWrapper(policy, build_tiny_reward_model(scripted[1]))
    assert unwrap_policy(wrapper) is policy
    wrapper.train()
    callback = CalibrationEvalCallback(_config())
    args = SimpleNamespace(output_dir=str(tmp_path / "ppo"))
    state, control = TrainerState(), TrainerControl()
    kwargs = {"model": wrapper, "processing_class": scripted[1]}
    callback.on_train_begin(args, state, control, **kwargs)
    for step, episode in enumerate((2, 4, 6), start=1):  # dataset of 4, batch of 2: epochs 0.5, 1.0, 1.5
        state.global_step, state.epoch = step, episode / 4
        callback.on_step_end(args, state, control, **kwargs)
        if step == 2:  # the trainer saves after on_step_end: on_save finds the checkpoint folder
            (tmp_path / "ppo" / "checkpoint-2").mkdir(parents=True)
            callback.on_save(args, state, control, **kwargs)
    callback.on_train_end(args, state, control, **kwargs)

    assert [(r.label, r.step) for r in callback.history] == [("epoch-1", 2), ("epoch-2", 3)]
    assert policy.training  # back in train mode after each eval
    for result in callback.history:
        _check_expected(result.logged)
    first = tmp_path / "ppo" / "calibration_eval" / "epoch-1"
    assert {p.name for p in first.iterdir()} == {"predictions.jsonl", "metrics.json", "reliability.png"}
    copied = tmp_path / "ppo" / "checkpoint-2" / "calibration_eval" / "epoch-1" / "predictions.jsonl"
    assert copied.read_text() == (first / "predictions.jsonl").read_text()
    assert (tmp_path / "ppo" / "calibration_eval" / "epoch-2" / "metrics.json").exists()


def test_model_that_cannot_generate_is_skipped_with_one_warning(tmp_path, scripted, caplog):
    callback = CalibrationEvalCallback(_config())
    state = TrainerState(epoch=1.0, global_step=1)
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            assert callback.evaluate("epoch-1", SimpleNamespace(output_dir=str(tmp_path)), state,
                                     model=build_tiny_reward_model(scripted[1]),
                                     processing_class=scripted[1]) is None
    assert sum("cannot generate" in r.message for r in caplog.records) == 1


@pytest.mark.parametrize("kw, field", [({"every_n_steps": 0}, "every_n_steps"),
                                       ({"batch_size": 0}, "batch_size"),
                                       ({"missing_policy": "drop"}, "missing_policy")])
def test_invalid_eval_config_names_the_field(kw, field):
    with pytest.raises(ConfigError, match=field):
        _config(**kw)
    with pytest.raises(ConfigError, match="eval_items"):
        CalibrationEvalConfig(eval_items=[])


# ------------------------------------------------------------------------------------- real trainers
def _grpo_dataset():
    return Dataset.from_list([{"prompt": PROMPT.build_messages(it), "reference": it.reference[0]}
                              for it in ITEMS[:2]])


def _grpo(tmp_path, scripted, **kw):
    from calrl.trainers.grpo import CalibratedGRPOConfig, CalibratedGRPOTrainer

    model, tokenizer = scripted
    options = {"output_dir": str(tmp_path / "grpo"), "use_cpu": True, "num_generations": 2,
               "max_completion_length": 8, "per_device_train_batch_size": 2, "num_train_epochs": 2,
               "logging_steps": 1, "disable_tqdm": True, "reward_funcs": ["brier", "format"],
               "save_strategy": "no", "report_to": "none", "seed": 0}
    options.update(kw.pop("args", {}))
    return CalibratedGRPOTrainer(model=copy.deepcopy(model), args=CalibratedGRPOConfig(**options),
                                 train_dataset=_grpo_dataset(), processing_class=tokenizer, **kw)


def test_grpo_run_logs_eval_once_per_epoch_into_offline_wandb(tmp_path, scripted):
    import wandb

    run = init_wandb_run("calrl-tests", "grpo-callback", {"test": True})
    assert run is not None and run.settings.mode == "offline"
    trainer = _grpo(tmp_path, scripted, calibration_eval=_config(),
                    args={"report_to": "wandb", "save_strategy": "epoch", "run_name": "grpo-callback"})
    trainer.train()
    wandb.finish()

    steps_per_epoch = len(_grpo_dataset())  # one prompt (2 generations) per step
    history = trainer.calibration_callback.history
    assert [(r.label, r.step) for r in history] == [("epoch-1", steps_per_epoch),
                                                     ("epoch-2", 2 * steps_per_epoch)]

    runs = find_offline_runs(tmp_path)
    assert len(runs) == 1
    rows = read_offline_history(runs[0])
    eval_rows = [row for row in rows if "eval/ece" in row]
    assert len(eval_rows) == 2  # exactly once per epoch
    assert [row["train/global_step"] for row in eval_rows] == [r.step for r in history]
    assert [row["eval/epoch"] for row in eval_rows] == [1, 2]
    for row in eval_rows:
        assert all(key in row for key in EVAL_KEYS)
        _check_expected(row)
        assert row["eval/reliability_diagram._type"] == "image-file"
        assert row["eval/reliability_table._type"] == "table-file"
        assert row["eval/reliability_table.nrows"] == 15
        assert (runs[0] / "files" / row["eval/reliability_diagram.path"]).exists()
    assert any("train/rewards/brier/mean" in row for row in rows)  # the training metrics beside them

    for result in history:
        folder = tmp_path / "grpo" / "calibration_eval" / result.label
        saved = json.loads((folder / "metrics.json").read_text())
        assert saved.pop("training") == {"label": result.label, "global_step": result.step,
                                         "epoch": result.epoch}
        # `calrl eval --predictions` reads the saved file back to the same metrics
        reread = compute_metrics(resolve_records(load_predictions(folder / "predictions.jsonl")),
                                 **{k: saved["settings"][k] for k in ("n_bins", "n_boot", "missing_policy")})
        assert reread == saved
        in_checkpoint = tmp_path / "grpo" / f"checkpoint-{result.step}" / "calibration_eval" / result.label
        assert (in_checkpoint / "predictions.jsonl").read_text() == (folder / "predictions.jsonl").read_text()


def test_without_wandb_the_scalars_go_through_trainer_log(tmp_path, scripted):
    trainer = _grpo(tmp_path, scripted,
                    calibration_eval=_config(every_n_steps=1, eval_on_start=True, save_predictions=False))
    trainer.train()
    history = trainer.calibration_callback.history
    # a step eval and an epoch end at the same step share one generation and are logged once
    assert [(r.label, r.step) for r in history] == [("epoch-0", 0),
        ("step-1", 1), ("step-2", 2), ("epoch-1", 2), ("step-3", 3), ("step-4", 4), ("epoch-2", 4)]
    logged = [row for row in trainer.state.log_history if "eval/ece" in row]
    assert [row["step"] for row in logged] == [0, 1, 2, 3, 4]
    _check_expected(logged[-1])
    assert not (tmp_path / "grpo" / "calibration_eval").exists()


def test_ppo_trainer_run_evaluates_each_epoch_into_offline_wandb(tmp_path, scripted):
    import wandb

    from calrl.trainers.ppo import CalibratedPPOConfig, CalibratedPPOTrainer

    model, tokenizer = scripted
    prompts = [tokenizer.apply_chat_template(PROMPT.build_messages(it), add_generation_prompt=True,
                                             tokenize=True, return_dict=False) for it in ITEMS[:4]]
    args = CalibratedPPOConfig(output_dir=str(tmp_path / "ppo"), use_cpu=True, report_to="wandb",
                     run_name="ppo-callback", per_device_train_batch_size=2, num_mini_batches=1,
                               total_episodes=6, response_length=8, num_ppo_epochs=1, save_strategy="no",
                               logging_steps=1, disable_tqdm=True, stop_token="eos", num_sample_generations=0)
    init_wandb_run("calrl-tests", "ppo-callback", {"test": True})
    trainer = CalibratedPPOTrainer(args=args, processing_class=tokenizer, model=copy.deepcopy(model),
                                   ref_model=copy.deepcopy(model), reward_model=build_tiny_reward_model(tokenizer),
                                   value_model=build_tiny_reward_model(tokenizer, seed=1),
                                   train_dataset=Dataset.from_list([{"input_ids": p} for p in prompts]))
    # as calrl's runner uses it: train() does not wait for the last diagram, finish() does (before the run ends)
    callback = CalibrationEvalCallback(_config(), wait_at_train_end=False).attach(trainer)
    trainer.train()
    callback.finish()
    wandb.finish()
    # 3 steps of 2 episodes over 4 prompts: on_epoch_end fires at step 2, and at step 3 for the partial epoch 2
    assert [(r.label, r.step) for r in callback.history] == [("epoch-1", 2), ("epoch-2", 3)]
    _check_expected(callback.history[0].logged)
    runs = find_offline_runs(tmp_path)
    rows = read_offline_history(runs[0])
    eval_rows = [row for row in rows if "eval/ece" in row]
    assert [row["train/global_step"] for row in eval_rows] == [2, 3]
    for row, result in zip(eval_rows, callback.history, strict=True):
        assert math.isfinite(row["eval/ece"]) and all(key in row for key in EVAL_KEYS)
        assert row["eval/reliability_diagram._type"] == "image-file"  # the last one too, logged by finish()
        assert row["eval/reliability_diagram.caption"] == result.label
        assert (runs[0] / "files" / row["eval/reliability_diagram.path"]).exists()
        folder = tmp_path / "ppo" / "calibration_eval" / result.label
        assert {p.name for p in folder.iterdir()} == {"predictions.jsonl", "metrics.json", "reliability.png"}
    assert any("train/objective/scores" in row for row in rows)  # PPO's own metrics in the same run
    assert not [row for row in trainer.state.log_history if "eval/ece" in row]  # not logged twice


# ------------------------------------------------------------------------------------- W&B helpers
def test_wandb_mode_is_offline_without_credentials(tmp_path, monkeypatch):
    from calrl.callbacks.wandb_utils import has_wandb_credentials, resolve_wandb_mode

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert not has_wandb_credentials() and resolve_wandb_mode() == "offline"
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password abc123\n")
    assert has_wandb_credentials() and resolve_wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode() == "disabled" and resolve_wandb_mode("offline") == "offline"
    with pytest.raises(ConfigError, match="wandb_mode"):
        resolve_wandb_mode("cloud")


def test_report_to_normalisation():
    from calrl.callbacks.wandb_utils import normalize_report_to, prepare_reporting, reports_to_wandb

    assert normalize_report_to(None) == normalize_report_to("none") == normalize_report_to([]) == []
    assert normalize_report_to("WandB") == ["wandb"]
    assert normalize_report_to(["wandb", "tensorboard", "wandb"]) == ["wandb", "tensorboard"]
    assert reports_to_wandb("all") and not reports_to_wandb(["tensorboard"])
    assert prepare_reporting("none", "calrl-tests") is None
