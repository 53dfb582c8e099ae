"""One eval truth (issue 20, point 4): held-out sets are named the same in recipes and ``calrl eval``;
``calrl eval --model RUN`` takes the run's own eval settings from the recipe saved with it and says so; the
training callback's last eval and ``calrl eval`` on the final model agree to the last digit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from calrl.cli.main import main
from calrl.data.heldout import load_eval_items
from calrl.errors import InputError

REPO = Path(__file__).resolve().parents[1]
TINY_PPO_C = REPO / "configs" / "tests" / "tiny_ppo_c.yaml"
PACKAGED = "calrl:data/tiny/eval.jsonl"  # as the tiny recipes name their held-out set


def test_recipes_and_calrl_eval_name_held_out_sets_alike():
    items = load_eval_items(PACKAGED, limit=3)
    assert [it.id for it in items] == [it.id for it in load_eval_items(str(REPO / "calrl/data/tiny/eval.jsonl"),
                                                                         limit=3)]
    with pytest.raises(InputError, match="calrl:data/tiny/nope.jsonl': the calrl package has no such file"):
        load_eval_items("calrl:data/tiny/nope.jsonl")


def _fake_run(tmp_path, *overrides):
    """A model folder with the recipe a run saves beside its final model (no training: a tiny model)."""
    from calrl.runners.recipe import load_recipe
    from calrl.runners.reporting import RECIPE_FILE, run_recipe_text
    from calrl.tiny.models import build_tiny_causal_lm, build_word_tokenizer, save_pretrained

    recipe = load_recipe(TINY_PPO_C, list(overrides))
    items = load_eval_items(PACKAGED)
    tokenizer = build_word_tokenizer([it.question for it in items] + ["confidence"])
    run = save_pretrained(build_tiny_causal_lm(tokenizer), tokenizer, tmp_path / "run")
    (run / RECIPE_FILE).write_text(run_recipe_text(recipe))
    return run


def test_eval_on_a_run_uses_the_runs_eval_settings_and_says_so(tmp_path, capsys):
    run = _fake_run(tmp_path, "eval.limit=6", "eval.max_new_tokens=5", "eval.n_boot=7", "training.seed=4")
    assert main(["eval", "--model", str(run), "--out", str(tmp_path / "e")]) == 0  # no --dataset needed
    said = [line for line in capsys.readouterr().out.splitlines() if "the run's eval settings" in line]
    assert len(said) == 1 and str(run / "calrl_recipe.yaml") in said[0]
    for option in (f"--dataset {PACKAGED}", "--limit 6", "--missing-confidence half", "--batch-size 8",
                   "--max-new-tokens 5", "--bootstrap 7", "--seed 4", "--min-slice-size 2"):
        assert option in said[0], option
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    config = metrics["config"]
    assert (config["dataset"], config["limit"], config["missing_confidence"]) == (PACKAGED, 6, "half")
    assert config["generation"]["batch_size"] == 8 and config["generation"]["max_new_tokens"] == 5
    assert metrics["n"] == 6 and metrics["settings"]["n_boot"] == 7 and metrics["settings"]["min_slice_size"] == 2


def test_options_given_win_over_the_runs_settings(tmp_path, capsys):
    run = _fake_run(tmp_path)
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps({"id": f"o{k}", "question": f"what is {k} + 1 ?", "reference": str(k + 1)})
                             + "\n" for k in range(5)))
    assert main(["eval", "--model", str(run), "--out", str(tmp_path / "e"), "--dataset", str(other),
                 "--missing-confidence", "exclude", "--max-new-tokens", "3"]) == 0
    said = capsys.readouterr().out
    assert "--dataset" not in said.split("the run's eval settings")[1].splitlines()[0]  # given: not the run's
    config = json.loads((tmp_path / "e" / "metrics.json").read_text())["config"]
    assert config["dataset"] == str(other) and config["limit"] is None  # the run's limit is for its own set
    assert config["missing_confidence"] == "exclude" and config["generation"]["max_new_tokens"] == 3
    assert config["generation"]["batch_size"] == 8  # not given: the run's


def test_a_model_without_a_recipe_keeps_calrl_evals_defaults(tmp_path, capsys):
    run = _fake_run(tmp_path)
    (run / "calrl_recipe.yaml").unlink()
    assert main(["eval", "--model", str(run), "--out", str(tmp_path / "e")]) == 2
    assert "--model needs --dataset SPEC" in capsys.readouterr().err
    assert main(["eval", "--model", str(run), "--out", str(tmp_path / "e"), "--dataset", PACKAGED,
                 "--limit", "2"]) == 0
    config = json.loads((tmp_path / "e" / "metrics.json").read_text())["config"]
    assert config["missing_confidence"] == "exclude" and config["generation"]["batch_size"] == 16
    assert "the run's eval settings" not in capsys.readouterr().out


@pytest.mark.slow
def test_the_callbacks_last_epoch_and_calrl_eval_on_the_final_model_agree(tmp_path):
    """Train the tiny PPO-C recipe, then `calrl eval --model RUN` with no other option: every metric of its
    metrics.json equals the callback's last-epoch metrics.json, and the generated answers are the same."""
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    calrl = [sys.executable, "-m", "calrl.cli.main"]
    for argv in (["train-ppo", "--config", str(TINY_PPO_C), "--output_dir", "run"],
                 ["eval", "--model", "run", "--out", "eval"]):
        proc = subprocess.run(calrl + argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
                              check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
    last = tmp_path / "run" / "calibration_eval" / "epoch-2"
    trained = json.loads((last / "metrics.json").read_text())
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    provenance = {"training", "config", "versions", "source", "schema_version"}
    metric_keys = set(trained) - provenance
    assert metric_keys <= set(evaluated) and {"ece", "brier", "auroc", "smece", "reliability", "slices"} <= metric_keys
    assert {k: evaluated[k] for k in metric_keys} == {k: trained[k] for k in metric_keys}
    responses = [json.loads(line)["response"] for line in (last / "predictions.jsonl").read_text().splitlines()]
    assert responses == [json.loads(line)["response"]
                         for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert len(set(responses)) > 1  # a policy that says different things, not one constant answer
