"""The command line's conventions: a clean top-level help, defaults in every help, one option name per
concept, and TRL-style ``--key value`` recipe flags on ``calrl train-*``."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from calrl.cli import train_cmd
from calrl.cli.main import build_parser, main
from calrl.config import flag_overrides
from calrl.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
TINY_PPO = REPO / "configs" / "tests" / "tiny_ppo.yaml"


def _subparsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield name, child
                yield from _subparsers(child)


def test_top_level_help_is_for_users(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "``" not in text and "sub-command per module" not in text
    assert "Calibration-aware post-training" in text and "calrl COMMAND --help" in text
    for command in ("eval", "compare", "recalibrate", "train-ppo", "demo"):
        assert command in text


def test_every_option_has_help_and_shows_its_default():
    parser = build_parser()
    checked = 0
    for name, sub in _subparsers(parser):
        text = sub.format_help()
        assert "``" not in text, name
        for action in sub._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS or action.dest == "help":
                continue
            assert action.help, f"{name} {action.option_strings[0]} has no help"
            default = action.default
            if default is not None and default is not False and default != argparse.SUPPRESS and default != []:
                shown = sub._get_formatter()._get_help_string(action)
                assert "default" in shown, f"{name} {action.option_strings[0]}: default {default!r} not shown"
                checked += 1
            elif "(default: " in action.help:  # a default that depends (calrl eval: a run's own setting)
                checked += 1
    assert checked > 20


def test_missing_confidence_is_one_name_everywhere(tmp_path):
    parser = build_parser()
    subs = dict(_subparsers(parser))
    for name in ("eval", "compare"):
        options = {s for a in subs[name]._actions for s in a.option_strings}
        assert "--missing-confidence" in options, name
        assert "--missing-policy" not in subs[name].format_help()
    rows = [{"id": f"q{i}", "response": f"{i % 2}. Confidence: {5 + i % 4}", "reference": "1"} for i in range(20)]
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["eval", "--predictions", str(preds), "--out", str(tmp_path / "a"), "--bootstrap", "0"]) == 0
    for flag in ("--missing-confidence", "--missing-policy"):  # the old name still works, hidden
        out = tmp_path / f"gate{flag}"
        assert main(["compare", "--baseline", str(tmp_path / "a"), "--candidate", str(tmp_path / "a"),
                     "--out", str(out), flag, "half", "--bootstrap", "10"]) in (0, 1)
        assert json.loads((out / "gate.json").read_text())


@pytest.mark.parametrize("argv, own, flags", [
    (["--config", "r.yaml", "--learning_rate", "1e-6"], ["--config", "r.yaml"], [("learning_rate", "1e-6")]),
    (["--config=r.yaml", "--seed=3", "--bf16"], ["--config=r.yaml"], [("seed", "3"), ("bf16", "true")]),
    (["--bf16", "training.seed=1", "--dry-run"], ["training.seed=1", "--dry-run"], [("bf16", "true")]),
    (["--warmup_ratio", "-0.5", "--resume", "latest"], ["--resume", "latest"], [("warmup_ratio", "-0.5")]),
    (["--wandb.run_name", "try 2", "x.y=1"], ["x.y=1"], [("wandb.run_name", "try 2")]),
])
def test_split_flags(argv, own, flags):
    assert train_cmd.split_flags(argv) == (own, flags)


def test_flag_overrides_find_the_section():
    from dataclasses import dataclass

    @dataclass
    class Training:
        learning_rate: float = 1e-5
        seed: int = 0

    @dataclass
    class Data:
        seed: int = 0
        train: str = ""

    sections = {"training": Training, "data": Data}
    assert flag_overrides([("learning_rate", "1e-6"), ("learning-rate", "2e-6"), ("data.seed", "4")], sections) \
        == ["training.learning_rate=1e-6", "training.learning_rate=2e-6", "data.seed=4"]
    with pytest.raises(ConfigError, match=r"--seed is ambiguous.*did you mean --training.seed or --data.seed"):
        flag_overrides([("seed", "1")], sections)
    with pytest.raises(ConfigError, match=r"unknown option --learnig_rate.*did you mean --learning_rate "
                                          r"\(training.learning_rate\)"):
        flag_overrides([("learnig_rate", "1")], sections)


def test_trl_style_flags_reach_the_recipe(monkeypatch, capsys):
    from calrl.runners import recipe as recipe_module

    seen = {}
    real = recipe_module.load_recipe

    def spy(path, overrides=(), **kwargs):
        recipe = real(path, overrides, **kwargs)
        seen["recipe"] = recipe
        raise SystemExit(0)  # stop before the data is read: the recipe is what this test checks

    monkeypatch.setattr(recipe_module, "load_recipe", spy)
    with pytest.raises(SystemExit):
        main(["train-ppo", "--config", str(TINY_PPO), "--dry-run", "--learning_rate", "1e-6",
              "--wandb.run_name=flag-run", "training.num_train_epochs=2"])
    recipe = seen["recipe"]
    assert recipe.training.learning_rate == pytest.approx(1e-6)
    assert recipe.wandb.run_name == "flag-run" and recipe.training.num_train_epochs == 2
    monkeypatch.setattr(recipe_module, "load_recipe", real)
    assert main(["train-ppo", "--config", str(TINY_PPO), "--dry-run", "--learnig_rate", "1e-6"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean --learning_rate (training.learning_rate)" in err
    assert main(["train-ppo", "--config", str(TINY_PPO), "--dry-run", "--limit", "3"]) == 2
    assert "did you mean --data.limit or --eval.limit" in capsys.readouterr().err


# TRL's common flags as TRL users type them (issue 20, point 1): each sets one recipe key
TRL_ARGV = ["--run_name", "my-run", "--output_dir", "out/x", "--seed", "3", "--report_to", "none",
            "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "2", "--learning_rate", "1e-6",
            "--num_train_epochs", "3", "--logging_steps", "5", "--project", "proj", "--save_strategy", "no",
            "--lr_scheduler_type", "constant", "--warmup_steps", "2", "--gradient_checkpointing",
            "--model_name_or_path", "tiny", "--dtype", "float32", "--trust_remote_code", "false",
            "--dataset_name", "calrl:data/tiny/qa.jsonl", "--dataset_train_split", "train",
            "--use_peft", "--lora_r", "4", "--lora_alpha", "8", "--lora_target_modules", "q_proj", "v_proj"]


def _recipe_from_flags(argv, method="ppo", path=TINY_PPO):
    from calrl.runners.recipe import load_recipe, trl_flag_overrides

    own, flags = train_cmd.split_flags(argv)
    assert own == []
    return load_recipe(path, trl_flag_overrides(flags, method), method=method)


def test_trl_flags_each_set_one_recipe_key():
    recipe = _recipe_from_flags(TRL_ARGV)
    t = recipe.training
    assert t.run_name == recipe.wandb.run_name == "my-run"  # one name: W&B uses TRL's run_name
    assert t.project == recipe.wandb.project == "proj"
    assert t.output_dir == "out/x" and t.seed == 3 and recipe.data.seed == 0
    assert t.report_to in ([], "none", ["none"])
    assert (t.per_device_train_batch_size, t.gradient_accumulation_steps, t.num_train_epochs) == (2, 2, 3)
    assert t.learning_rate == pytest.approx(1e-6) and t.logging_steps == 5 and t.gradient_checkpointing
    assert t.warmup_steps == 2 and t.save_strategy == "no"  # a word on the command line, as in TRL (YAML: false)
    assert recipe.model.policy == "tiny" and recipe.model.dtype == "float32" and not recipe.model.trust_remote_code
    assert recipe.data.train == "calrl:data/tiny/qa.jsonl" and recipe.data.split == "train"
    assert recipe.lora is not None and (recipe.lora.r, recipe.lora.alpha) == (4, 8)
    assert recipe.lora.target_modules == ["q_proj", "v_proj"]
    # --model_name_or_path is the trained model: the reward model for train-rm
    rm = _recipe_from_flags(["--model_name_or_path", "some/rm", "--run_name", "rm-run"], method="rm",
                            path=REPO / "configs" / "tests" / "tiny_rm.yaml")
    assert rm.model.reward_model == "some/rm" and rm.training.run_name == rm.wandb.run_name == "rm-run"


def test_run_name_is_one_value_everywhere(tmp_path):
    from calrl.runners.recipe import load_recipe

    recipe = load_recipe(TINY_PPO)  # wandb.run_name alone is the default of training.run_name
    assert recipe.training.run_name == recipe.wandb.run_name == "tiny-ppo"
    recipe = load_recipe(TINY_PPO, ["training.run_name=from-cli"])
    assert recipe.training.run_name == recipe.wandb.run_name == "from-cli"
    both = tmp_path / "both.yaml"
    both.write_text(TINY_PPO.read_text().replace("  use_cpu: true\n", "  use_cpu: true\n  run_name: other\n"))
    with pytest.raises(ConfigError, match=r"both\.yaml:\d+: key 'training\.run_name' \('other', line \d+\) and "
                                          r"'wandb\.run_name' \('tiny-ppo'\)"):
        load_recipe(both)
    assert load_recipe(both, ["wandb.run_name=other"]).wandb.run_name == "other"


def test_use_peft_keeps_the_recipes_lora_section():
    from calrl.runners.recipe import load_recipe, trl_flag_overrides

    lora_recipe = REPO / "configs" / "tests" / "tiny_ppo_c_lora.yaml"
    kept = load_recipe(lora_recipe, trl_flag_overrides([("use_peft", "true")], "ppo"))
    assert kept.lora == load_recipe(lora_recipe).lora
    assert load_recipe(lora_recipe, trl_flag_overrides([("use_peft", "false")], "ppo")).lora is None
    with pytest.raises(ConfigError, match="--use_peft takes true or false"):
        trl_flag_overrides([("use_peft", "maybe")], "ppo")


def test_trl_flags_run_through_the_command(capsys):
    assert main(["train-ppo", "--config", str(TINY_PPO), "--dry-run", "--run_name", "my-run", "--seed", "3",
                 "--per_device_train_batch_size", "2", "--report_to", "none"]) == 0
    assert "ok (ppo" in capsys.readouterr().out


def test_help_shows_each_trl_flag_and_its_key():
    from calrl.trl_flags import TRL_FLAGS

    subs = dict(_subparsers(build_parser()))
    for command, trained in (("train-ppo", "model.policy"), ("train-rm", "model.reward_model")):
        text = subs[command].format_help()
        for flag, needle in (("run_name", "training.run_name"), ("seed", "training.seed"),
                             ("per_device_train_batch_size", "training.per_device_train_batch_size"),
                             ("model_name_or_path", trained), ("report_to", "training.report_to")):
            assert re.search(rf"--{flag}\s+{re.escape(needle)}", text), (command, flag)
        assert all(f"--{flag} " in text for flag in TRL_FLAGS)
