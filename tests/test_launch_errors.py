"""One launch, one error (issue 20, point 2): under a multi-process launch a bad recipe is reported once, by the
main process; ``calrl train-* --num_processes N`` checks the recipe before any process starts and ends with the
run's exit code without the launcher's traceback; the start-up line states processes, device, precision and
the effective batch sizes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from calrl.cli import main as cli_main
from calrl.cli.main import main

REPO = Path(__file__).resolve().parents[1]
TINY_PPO_C = REPO / "configs" / "tests" / "tiny_ppo_c.yaml"
TINY_GRPO = REPO / "configs" / "tests" / "tiny_grpo_brier.yaml"
CPU_MULTI = REPO / "configs" / "accelerate" / "cpu_multi.yaml"
ERROR = "calrl train-ppo: error: "


# ------------------------------------------------------------------------------------ the one error line
@pytest.mark.parametrize("rank, world, code, waits, prefix", [
    ("0", "2", 2, False, "calrl train-ppo: "),
    ("1", "2", 2, True, "calrl train-ppo (process 1 of 2): "),  # printed only if the launcher did not stop it
    ("1", "2", 130, True, "calrl train-ppo (process 1 of 2): "),
    ("1", "2", 3, False, "calrl train-ppo (process 1 of 2): "),  # a fault of this process: at once
    ("0", "1", 2, False, "calrl train-ppo: "),
])
def test_other_processes_leave_a_shared_error_to_the_main_process(monkeypatch, capsys, rank, world, code, waits,
                                                                    prefix):
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", world)
    slept = []
    monkeypatch.setattr(cli_main.time, "sleep", slept.append)
    assert cli_main.report("train-ppo", "error: bad key", code) == code
    assert slept == ([cli_main.REPORT_GRACE_S] if waits else [])
    assert capsys.readouterr().err == f"{prefix}error: bad key\n"


def test_a_bad_recipe_fails_before_any_process_starts(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY_PPO_C.read_text().replace("  learning_rate: 1.0e-4", "  lerning_rate: 1.0e-4"))
    code = main(["train-ppo", "--config", str(bad), "--accelerate_config", str(CPU_MULTI), "--num_processes", "2"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(ERROR) and "unknown key 'training.lerning_rate'" in err
    assert main(["train-ppo", "--config", str(TINY_PPO_C), "--accelerate_config", str(tmp_path / "none.yaml")]) == 2
    assert "accelerate config file not found" in capsys.readouterr().err


def test_no_launch_from_inside_a_launch(monkeypatch, capsys):
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert main(["train-ppo", "--config", str(TINY_PPO_C), "--num_processes", "2"]) == 2
    assert "started by a launcher already" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ the start-up line
def _trainer(processes=2, precision="no", per=4, accum=2, **args):
    accelerator = SimpleNamespace(num_processes=processes, device=torch.device("cpu"), mixed_precision=precision,
                                  distributed_type="DistributedType.MULTI_CPU")
    model = torch.nn.Linear(2, 2)
    return SimpleNamespace(accelerator=accelerator, model=model, args=SimpleNamespace(
        per_device_train_batch_size=per, gradient_accumulation_steps=accum, **args))


def _runner(method):
    from calrl.runners.recipe import load_recipe
    from calrl.runners.runner import runner_for

    config = {"ppo": TINY_PPO_C, "grpo": TINY_GRPO, "rm": REPO / "configs" / "tests" / "tiny_rm.yaml"}[method]
    return runner_for(load_recipe(config))


def test_the_start_up_line_states_processes_device_precision_and_batch_sizes():
    ppo = _runner("ppo").startup_line(_trainer(num_mini_batches=2, num_ppo_epochs=3))
    assert ppo == ("train-ppo: 2 processes (MULTI_CPU) on cpu, float32 weights; rollout: 4 prompts per device x 2 "
                   "accumulation x 2 processes = 16 prompts per PPO update; 2 mini-batches x 3 PPO epochs = "
                   "6 optimiser steps per update")
    grpo = _runner("grpo").startup_line(_trainer(precision="bf16", num_generations=2))
    assert grpo == ("train-grpo: 2 processes (MULTI_CPU) on cpu, float32 weights, bf16 mixed precision; batch: 4 "
                    "completions per device x 2 accumulation x 2 processes = 16 completions (8 prompts x 2 "
                    "generations) per optimiser step")
    rm = _runner("rm").startup_line(_trainer(processes=1, accum=1))
    assert rm == ("train-rm: 1 process on cpu, float32 weights; batch: 4 pairs per device x 1 accumulation x "
                  "1 process = 4 pairs per optimiser step")


# ------------------------------------------------------------------------------------ real launches
def _env():
    return {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "TRL_EXPERIMENTAL_SILENCE": "1",
            "PYTHONPATH": str(REPO)}


def _errors(text: str, command: str = "train-ppo") -> list[str]:
    return [line for line in text.splitlines() if line.startswith(f"calrl {command}") and ": error: " in line]


@pytest.mark.slow
def test_accelerate_launch_prints_a_bad_recipe_once(tmp_path):
    """Typed as `accelerate launch`, the error line comes once (from the main process); accelerate's launcher
    still adds its ChildFailedError traceback and exits with 1, which calrl cannot change."""
    accelerate = Path(sys.executable).with_name("accelerate")
    proc = subprocess.run([str(accelerate), "launch", "--config_file", str(CPU_MULTI), "--num_processes", "2",
                           str(REPO / "scripts" / "train_ppo.py"), "--config", str(TINY_PPO_C),
                           "training.lerning_rate=1"], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=300, check=False)
    errors = _errors(proc.stderr)
    assert len(errors) == 1 and errors[0].startswith(ERROR) and "lerning_rate" in errors[0], proc.stderr[-3000:]
    assert proc.returncode == 1 and "ChildFailedError" in proc.stderr  # the launcher's own part


@pytest.mark.slow
def test_calrl_launches_two_processes_and_reports_a_failed_one_once(tmp_path):
    """calrl as the launcher: a run that only the launched processes can find wrong (the GPU launcher on a
    machine without GPUs, use_cpu off: every process would train alone) is one error line and exit code 2,
    with no traceback; a good run prints its start-up line once and trains as one world of 2 processes."""
    calrl = [sys.executable, "-m", "calrl.cli.main"]
    proc = subprocess.run([*calrl, "train-grpo", "--config", str(TINY_GRPO), "--num_train_epochs", "1",
                           "--use_cpu", "false", "--bf16", "false", "model.tiny.warmup_steps=0", "--num_processes", "2",
                           "--accelerate_config",
                           str(REPO / "configs" / "accelerate" / "multi_gpu.yaml"), "--output_dir", "alone"],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300, check=False)
    errors = _errors(proc.stderr, "train-grpo")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(errors) == 1 and "trains alone" in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "ChildFailedError" not in proc.stderr and "exitcode" not in proc.stderr

    proc = subprocess.run([*calrl, "train-grpo", "--config", str(TINY_GRPO), "--num_train_epochs", "1",
                           "--num_processes", "2", "--accelerate_config", str(CPU_MULTI), "--output_dir", "two"],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    startup = [line for line in proc.stdout.splitlines() if line.startswith("train-grpo: 2 processes")]
    assert len(startup) == 1, proc.stdout[-3000:]
    assert "= 8 completions (4 prompts x 2 generations) per optimiser step" in startup[0]
    assert "train-grpo: 2 steps, model saved to two" in proc.stdout  # 8 prompts x 2 / 8 per step: 2 steps
