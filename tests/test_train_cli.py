"""The train-* commands: flags, one-line errors with exit code 2 before any model loads, faults, launchers."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from calrl.cli.main import build_parser, main

REPO = Path(__file__).resolve().parents[1]
TINY_PPO_C = REPO / "configs" / "tests" / "tiny_ppo_c.yaml"
TINY_GRPO = REPO / "configs" / "tests" / "tiny_grpo_brier.yaml"


def run_cli(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def write_recipe(tmp_path, text, name="recipe.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_subcommands_share_the_flags():
    parser = build_parser()
    for command in ("train-rm", "train-ppo", "train-grpo", "train-rloo"):
        args = parser.parse_args([command, "--config", "x.yaml", "training.learning_rate=1e-5", "data.limit=3",
                                  "--resume", "latest"])
        assert args.config == "x.yaml" and args.resume == "latest"
        assert args.overrides == ["training.learning_rate=1e-5", "data.limit=3"]
        assert args.method == command.removeprefix("train-")


BASE = TINY_PPO_C.read_text()


@pytest.mark.parametrize("edit, pattern", [
    (lambda t: t.replace("  learning_rate: 1.0e-4", "  lerning_rate: 1.0e-4"),
     r"recipe\.yaml:\d+: unknown key 'training\.lerning_rate' \(did you mean learning_rate"),
    (lambda t: t.replace("  num_train_epochs: 2", "  num_train_epochs: two"),
     r"recipe\.yaml:\d+: key 'training\.num_train_epochs' must be"),
    (lambda t: t.replace("  limit: 16", "  limit: many"), r"recipe\.yaml:\d+: key 'data\.limit' must be"),
    (lambda t: t.replace("  batch_size: 8", "  batchsize: 8"), r"recipe\.yaml:\d+: unknown key 'eval\.batchsize'"),
    (lambda t: t.replace("variant: threshold", "variant: thresh"),
     r"recipe\.yaml:\d+: key 'training\.rewards\.ppo_c\.variant': .*thresh.*did you mean 'threshold'"),
    (lambda t: t.replace("{name: ppo_c,", "{name: ppo_cc,"),
     r"recipe\.yaml:\d+: key 'training\.rewards\[\d\]\.name': unknown reward term 'ppo_cc'.*did you mean 'ppo_c'"),
    (lambda t: t.replace("wandb:", "wandbb:"), r"recipe\.yaml:\d+: unknown section 'wandbb'"),
    (lambda t: t.replace("method: ppo", "method: grpo"), r"recipe\.yaml:\d+: this recipe is for 'train-grpo'"),
    (lambda t: t.replace("  policy: tiny\n", ""), r"missing key 'model\.policy'"),
    (lambda t: t.replace("  confidence_prompt_fraction: 0.25", "  confidence_prompt_fraction: 1.5"),
     r"recipe\.yaml:\d+: key 'data\.confidence_prompt_fraction': must be in \[0, 1\]"),
    (lambda t: t + "lora:\n  r: 0\n", r"recipe\.yaml:\d+: key 'lora\.r': must be a positive integer"),
])
def test_bad_recipes_are_one_line_errors_with_exit_code_2(tmp_path, capsys, no_models, edit, pattern):
    path = write_recipe(tmp_path, edit(BASE))
    code, err = run_cli(["train-ppo", "--config", str(path)], capsys)
    assert code == 2
    assert len(err) == 1 and re.search(pattern, err[0]), err
    assert err[0].startswith("calrl train-ppo: error: ")


def test_missing_dataset_column_is_named_before_any_model_loads(tmp_path, capsys, no_models):
    data = tmp_path / "data.jsonl"
    data.write_text('{"question": "what is 1 + 1 ?", "reference": "2"}\n')
    text = BASE.replace("  train: calrl:data/tiny/qa.jsonl", f"  train: {data}")
    code, err = run_cli(["train-ppo", "--config", str(write_recipe(tmp_path, text))], capsys)
    assert code == 2 and len(err) == 1
    assert re.search(r"recipe\.yaml:\d+: missing dataset column 'prompt' \(data\.columns\.prompt\)", err[0]), err
    # mapping the column fixes it; a missing reference column (needed by correctness_mode: add) is named too
    data.write_text('{"question": "what is 1 + 1 ?", "answer": "2"}\n')
    fixed = text.replace("  limit: 16", "  limit: 16\n  columns:\n    prompt: question")
    code, err = run_cli(["train-ppo", "--config", str(write_recipe(tmp_path, fixed))], capsys)
    assert code == 2 and re.search(r"missing dataset column 'reference' \(data\.columns\.reference\)", err[0])
    code, err = run_cli(["train-ppo", "--config", str(write_recipe(tmp_path, fixed)), "data.columns.reference=answer",
                         "--dry-run"], capsys)
    assert code == 0


def test_missing_preference_column_for_rm(tmp_path, capsys, no_models):
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"prompt": "p", "chosen": "a", "worse": "b"}\n')
    text = (REPO / "configs" / "tests" / "tiny_rm.yaml").read_text().replace(
        "  train: calrl:data/tiny/pairs.jsonl", f"  train: {data}")
    code, err = run_cli(["train-rm", "--config", str(write_recipe(tmp_path, text))], capsys)
    assert code == 2 and len(err) == 1 and "missing dataset column 'rejected'" in err[0]


def test_bad_override_and_missing_files(tmp_path, capsys, no_models):
    code, err = run_cli(["train-ppo", "--config", str(TINY_PPO_C), "training.no_such_key=1"], capsys)
    assert code == 2 and "unknown key 'training.no_such_key'" in err[0] and len(err) == 1
    code, err = run_cli(["train-ppo", "--config", str(tmp_path / "nope.yaml")], capsys)
    assert code == 2 and "config file not found" in err[0]
    code, err = run_cli(["train-ppo", "--config", str(TINY_PPO_C), "data.train=./missing.jsonl"], capsys)
    assert code == 2 and "missing.jsonl" in err[0] and len(err) == 1
    code, err = run_cli(["train-ppo", "--config", str(TINY_PPO_C), "--resume", "latest"], capsys)
    assert code == 2 and "no complete checkpoint-* folder" in err[0]


def test_dry_run_validates_data_and_eval_without_models(capsys, no_models):
    assert main(["train-grpo", "--config", str(TINY_GRPO), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "ok (grpo, 8 training rows, 8 eval items)" in out


def test_nan_reward_stops_with_the_step_and_the_sample(capsys, monkeypatch):
    from calrl.trainers import grpo

    class NaNReward:
        __name__ = "format"

        def __call__(self, prompts, completions, **kwargs):
            return [float("nan")] * len(completions)

    build = grpo.build_reward_funcs

    def build_with_nan(config):
        funcs, weights = build(config)
        return [*funcs[:-1], NaNReward()], weights

    monkeypatch.setattr(grpo, "build_reward_funcs", build_with_nan)
    code, err = run_cli(["train-grpo", "--config", str(TINY_GRPO), "data.limit=4", "training.num_train_epochs=1",
                         "wandb.mode=disabled"], capsys)
    assert code == 3 and not any("Traceback" in line for line in err)  # training may print warnings before
    errors = [line for line in err if line.startswith("calrl train-grpo: error:")]
    assert len(errors) == 1 and err[-1] == errors[0]
    assert re.search(r"step 1: non-finite reward 'format' \(nan\) for completion 0 \(prompt: '.*what is", errors[0]), err


@pytest.mark.slow
def test_script_runs_under_accelerate_launch(tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled", "TRL_EXPERIMENTAL_SILENCE": "1", "OMP_NUM_THREADS": "1"}
    accelerate = Path(sys.executable).with_name("accelerate")
    proc = subprocess.run(
        [str(accelerate), "launch", "--config_file", str(REPO / "configs" / "accelerate" / "cpu.yaml"),
         str(REPO / "scripts" / "train_grpo.py"), "--config", str(TINY_GRPO), "data.limit=4",
         "training.num_train_epochs=1"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "train-grpo: 2 steps, model saved to runs/tiny_grpo_brier" in proc.stdout
    assert (tmp_path / "runs" / "tiny_grpo_brier" / "README.md").is_file()


def _accelerate(tmp_path, config: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    accelerate = Path(sys.executable).with_name("accelerate")
    proc = subprocess.run([str(accelerate), "launch", "--config_file", str(REPO / "configs" / "accelerate" / config),
                           *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_accelerate_launch_runs_n_cpu_processes_with_cpu_multi(tmp_path):
    """cpu_multi.yaml: two CPU processes that train as one world; cpu.yaml with --num_processes 2 warns."""
    proc = _accelerate(tmp_path, "cpu_multi.yaml", "--num_processes", "2", str(REPO / "scripts" / "train_ppo.py"),
                       "--config", str(TINY_PPO_C), "training.output_dir=multi", "training.num_train_epochs=1")
    state = json.loads((tmp_path / "multi" / "checkpoint-2" / "calrl_ppo_state.json").read_text())
    assert state["world_size"] == 2 and state["episode"] == 16  # 16 prompts: 2 updates of 2 x 4
    assert "warning: asked for" not in proc.stdout
    proc = _accelerate(tmp_path, "cpu.yaml", "--num_processes", "2", str(REPO / "scripts" / "train_ppo.py"),
                       "--config", str(TINY_PPO_C), "training.output_dir=single", "training.num_train_epochs=1")
    assert "warning: asked for 2 processes, running 1" in proc.stdout
    assert json.loads((tmp_path / "single" / "checkpoint-4" / "calrl_ppo_state.json").read_text())["world_size"] == 1


def test_processes_that_would_train_alone_are_refused(monkeypatch):
    from calrl.errors import ConfigError
    from calrl.runners.launch import check_launch

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="trains alone"):
        check_launch(1)
    check_launch(2)


def _torchrun(tmp_path, script: str, config: Path, *overrides: str) -> subprocess.CompletedProcess:
    """Two gloo processes (torchrun; accelerate launch needs MPI for several CPU processes)."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    env = {**os.environ, "WANDB_MODE": "offline", "TRL_EXPERIMENTAL_SILENCE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", str(REPO / "scripts" / script), "--config", str(config),
         *overrides], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _offline_eval_rows(tmp_path) -> list[dict]:
    from calrl.callbacks.wandb_utils import find_offline_runs, read_offline_history

    runs = find_offline_runs(tmp_path / "wandb")
    assert len(runs) == 1  # only rank 0 starts a W&B run
    return [r for r in read_offline_history(runs[0]) if "eval/ece" in r]


@pytest.mark.slow
def test_two_process_cpu_launch_with_torchrun(tmp_path):
    """GRPO with the Brier reward on 2 processes: every rank logs the same reward-metric keys (else TRL's
    per-key gather deadlocks), and each epoch's calibration eval counts all items once."""
    proc = _torchrun(tmp_path, "train_grpo.py", TINY_GRPO)
    # 8 prompts x 2 generations, 4 per process: a global batch of 8 -> 2 steps per epoch with 2 processes
    assert "train-grpo: 4 steps, model saved to runs/tiny_grpo_brier" in proc.stdout
    rows = _offline_eval_rows(tmp_path)
    assert [r["eval/epoch"] for r in rows] == [0, 1, 2] and all(r["eval/n"] == 8 for r in rows)


@pytest.mark.slow
def test_two_process_ppo_saves_epoch_checkpoints(tmp_path):
    """PPO under DDP: complete checkpoints with each process's RNG state, each epoch is evaluated once."""
    _torchrun(tmp_path, "train_ppo.py", TINY_PPO_C, "training.output_dir=out")
    out = tmp_path / "out"
    checkpoints = sorted(p.name for p in out.glob("checkpoint-*"))
    assert len(checkpoints) == 2 and (out / "model.safetensors").is_file() and (out / "README.md").is_file()
    for name in checkpoints:
        files = {p.name for p in (out / name).iterdir()}
        assert {"model.safetensors", "calrl_ppo_state.json", "calrl_complete", "rng_state_0.pt", "rng_state_1.pt",
                "optimizer.pt", "value_model"} <= files, files
        state = json.loads((out / name / "calrl_ppo_state.json").read_text())
        assert state["world_size"] == 2 and state["episode"] == 8 * int(name.split("-")[1])
    assert sorted(p.name for p in (out / "calibration_eval").iterdir()) == ["epoch-0", "epoch-1", "epoch-2"]
    assert [r["eval/epoch"] for r in _offline_eval_rows(tmp_path)] == [0, 1, 2]


def test_question_sets_as_training_data(capsys, no_models):
    """``items:NAME:PATH`` reads a held-out-style set (here the GSM8K fixture) as prompts with references."""
    gsm8k = REPO / "tests" / "fixtures" / "heldout" / "gsm8k"
    argv = ["train-grpo", "--config", str(REPO / "configs" / "grpo_brier.yaml"), "--dry-run",
            f"data.train=items:gsm8k:{gsm8k}", "data.split=test", f"eval.heldout=gsm8k:{gsm8k}", "eval.split=test",
            "model.policy=tiny"]  # the recipe's hub model is not in this machine's cache: a dry-run problem
    assert main(argv) == 0
    assert re.search(r"ok \(grpo, \d+ training rows, \d+ eval items\)", capsys.readouterr().out)
    from calrl.runners.data import load_training_data
    from calrl.runners.recipe import load_recipe

    recipe = load_recipe(REPO / "configs" / "grpo_brier.yaml", argv[4:], check_hardware=False)
    rows = load_training_data(recipe).train
    assert rows.column_names == ["prompt", "reference"]
    assert rows[0]["prompt"].startswith("Question: ") and rows[0]["reference"][0].strip().lstrip("-").isdigit()


def test_nan_reward_model_score_stops_ppo_with_the_step_and_the_sample(capsys, monkeypatch):
    import torch

    from calrl.runners import models as common

    build = common.ModelFactory.sequence_classifier

    def nan_reward_model(self, source, *, seed_offset=0, **kwargs):
        model = build(self, source, seed_offset=seed_offset, **kwargs)
        if seed_offset == 2:  # the reward model (the value model is offset 1)
            with torch.no_grad():
                model.score.weight.fill_(float("nan"))
        return model

    monkeypatch.setattr(common.ModelFactory, "sequence_classifier", nan_reward_model)
    code, err = run_cli(["train-ppo", "--config", str(TINY_PPO_C), "wandb.mode=disabled"], capsys)
    assert code == 3 and not any("Traceback" in line for line in err)
    assert re.search(r"^calrl train-ppo: error: step 1: non-finite reward model reward \(nan\) for rollout 0 "
                     r"\(prompt: '.+'; response: '.*'\)$", err[-1]), err[-1]
    assert not Path("runs/tiny_ppo_c/README.md").exists()  # no model card for a failed run
