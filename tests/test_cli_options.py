"""The command line's conventions: a clean top-level help, defaults in every help, one option name per
concept, and TRL-style ``--key value`` recipe flags on ``calrl train-*``."""

from __future__ import annotations

import argparse
import json
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
    from calrl.train import recipe as recipe_module

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
    assert main(["train-ppo", "--config", str(TINY_PPO), "--dry-run", "--run_name", "x"]) == 2
    assert "did you mean --wandb.run_name or --training.run_name" in capsys.readouterr().err
