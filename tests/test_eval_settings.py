"""One definition per key of the training eval (issue 22, point 2): the recipe's ``eval:`` section and the
callback's config are both ``EvalSettings``; every shared key reaches the callback as the recipe wrote it, and a
bad value is refused when the recipe is read (file, line and key), held-out set or not."""

from __future__ import annotations

import dataclasses
import sys
import typing
from pathlib import Path

import pytest

from calrl.callbacks.calibration_eval import CalibrationEvalConfig
from calrl.errors import ConfigError
from calrl.eval.settings import EvalSettings
from calrl.runners.data import calibration_eval_config
from calrl.runners.eval_section import EvalSection
from calrl.runners.recipe import load_recipe

sys.path.insert(0, str(Path(__file__).parent))
from callback_helpers import ITEMS

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "tests" / "tiny_grpo_brier.yaml"
# a value other than the default for every EvalSettings key (a new key without one here fails the test below)
OTHER = {"every_n_steps": 3, "batch_size": 5, "max_new_tokens": 7, "n_bins": 11, "slice_keys": ["domain"],
         "use_hedges": False, "confidence_parser": "reference", "confidence_retries": 2, "grader": "exact",
         "missing_policy": "error", "min_slice_size": 4, "n_boot": 9}


def test_the_section_and_the_callback_config_share_each_key_definition():
    shared = {f.name: f for f in dataclasses.fields(EvalSettings)}
    hints = typing.get_type_hints(EvalSettings)
    for cls in (EvalSection, CalibrationEvalConfig):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        cls_hints = typing.get_type_hints(cls)
        for name, f in shared.items():
            assert fields[name].default == f.default and cls_hints[name] == hints[name], (cls.__name__, name)
    own = {f.name for f in dataclasses.fields(EvalSection)} - set(shared)
    assert not own & {f.name for f in dataclasses.fields(CalibrationEvalConfig)}  # no key defined twice


def test_every_shared_key_reaches_the_callback_as_written():
    assert set(OTHER) == {f.name for f in dataclasses.fields(EvalSettings)}
    defaults = EvalSettings()
    assert all(getattr(defaults, k) != v for k, v in OTHER.items())
    overrides = [f"eval.{k}={v}".replace("'", "") for k, v in OTHER.items()]
    recipe = load_recipe(RECIPE, overrides)
    config = calibration_eval_config(recipe, ITEMS)
    assert {k: getattr(config, k) for k in OTHER} == OTHER
    assert config.eval_on_start is recipe.eval.at_start and config.seed == recipe.training.seed


@pytest.mark.parametrize("key, value, reason", [
    ("n_bins", "0", "must be an integer from 1 to 1000, got 0"),
    ("confidence_retries", "101", "must be an integer from 0 to 100, got 101"),
    ("every_n_steps", "0", "must be a positive integer or null, got 0"),
    ("n_boot", "-1", "must be an integer from 0 to 10000, got -1"),
])
def test_a_bad_shared_key_is_refused_when_the_recipe_is_read(tmp_path, key, value, reason):
    text = RECIPE.read_text().replace("  heldout: calrl:data/tiny/eval.jsonl\n",
                                      f"  heldout: null\n  {key}: {value}\n")
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    line = text.splitlines().index(f"  {key}: {value}") + 1
    with pytest.raises(ConfigError) as caught:
        load_recipe(path)  # no held-out set: the eval never runs, and the value is refused all the same
    assert str(caught.value) == f"{path}:{line}: key 'eval.{key}': {reason}"
