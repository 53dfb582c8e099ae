"""Same command, same seed, same machine -> the same numbers: the demo's reward-model stage run twice.

The reward-model stage was where the demo's runs diverged: ``calrl train-rm`` loads the SFT policy as a
sequence classifier and the new score head was drawn from torch's default generator, whose seed differs in
every process. The study now saves that classifier once, with a head drawn from the seed
(``calrl.demo.sft.save_reward_init``), and runs every stage single-threaded. This test runs the stage's two
processes (the seeded classifier, then ``calrl train-rm`` on the demo's fact-check pairs) twice each, in fresh
processes, from a small world and a tiny untrained policy, and requires byte-identical weights and reports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from calrl.demo.preferences import build_factcheck_rows
from calrl.demo.processes import SFT_THREADS, study_env
from calrl.demo.recipes import RewardModelSettings, reward_model_recipe, write_recipe
from calrl.demo.sft import build_demo_tokenizer
from calrl.demo.study import Layout, StudyConfig, build_tasks
from calrl.demo.world import WorldConfig, build_world
from calrl.jsonio import write_jsonl


def _run(cmd: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.mark.slow
def test_reward_model_stage_is_reproducible(tmp_path):
    from calrl.tiny.models import build_tiny_causal_lm

    world = build_world(WorldConfig(seed=0, people_per_frequency=6, n_rl_prompts=8, n_preference_prompts=16))
    tokenizer = build_demo_tokenizer(world)
    policy = build_tiny_causal_lm(tokenizer, seed=0, hidden_size=32, num_layers=1, num_heads=2)
    policy.save_pretrained(tmp_path / "sft")
    tokenizer.save_pretrained(tmp_path / "sft")
    data = tmp_path / "factchecks"
    write_jsonl(data / "train.jsonl", build_factcheck_rows(world, 48, seed=1))
    write_jsonl(data / "test.jsonl", build_factcheck_rows(world, 16, seed=2))
    env = {**os.environ, **study_env(tmp_path)}

    outputs = []
    for run in ("a", "b"):
        init = tmp_path / run / "rm_init"
        code = "import sys; from calrl.demo.sft import save_reward_init; save_reward_init(*sys.argv[1:], seed=0)"
        _run([sys.executable, "-c", code, str(tmp_path / "sft"), str(init)], env)
        out = tmp_path / run / "rm_base"
        recipe = reward_model_recipe("rm_base", init_dir=init, preferences_dir=data, out_dir=out, seed=0,
                                     settings=RewardModelSettings(base_epochs=1.0, batch_size=8))
        recipe["training"]["report_to"] = "none"
        recipe["wandb"]["mode"] = "disabled"
        write_recipe(recipe, tmp_path / run / "rm_base.yaml")
        _run([sys.executable, "-m", "calrl.cli.main", "train-rm", "--config", str(tmp_path / run / "rm_base.yaml")],
             env)
        outputs.append((init, out))

    (init_a, out_a), (init_b, out_b) = outputs
    assert (init_a / "model.safetensors").read_bytes() == (init_b / "model.safetensors").read_bytes()
    assert (out_a / "model.safetensors").read_bytes() == (out_b / "model.safetensors").read_bytes()
    report_a = json.loads((out_a / "reward_model_report.json").read_text())
    report_b = json.loads((out_b / "reward_model_report.json").read_text())
    for key in ("preference_accuracy", "mean_reward_margin", "confidence_bias"):
        assert report_a[key] == report_b[key], key


def test_study_environment_is_single_threaded_whatever_jobs(tmp_path):
    for jobs in (1, 2, 4):
        config = StudyConfig(out=Path(tmp_path), seeds=[0, 1], jobs=jobs)
        env = study_env(config.out)
        assert env["OMP_NUM_THREADS"] == "1" and env["MKL_NUM_THREADS"] == "1" and env["PYTHONHASHSEED"] == "0"
        # every stage single-threaded but the SFT, which runs alone: a fixed two threads, not one per core or job
        threads = {t.name: {**env, **t.env}["OMP_NUM_THREADS"] for t in build_tasks(config, Layout(config.out))}
        assert threads.pop("shared/sft") == str(SFT_THREADS) == "2"
        assert set(threads.values()) == {"1"}
