"""What a run reports: its W&B run (continued on resume), the model card, the final metrics, the result."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from calrl.callbacks.wandb_utils import WANDB_ID_FILE, prepare_reporting
from calrl.config import build
from calrl.errors import InputError
from calrl.formatting import fmt
from calrl.io import write_text
from calrl.rewards.terms import find_term
from calrl.runners.data import portable_spec
from calrl.runners.eval_section import EvalSection
from calrl.runners.recipe import TINY, Recipe

CARD_FILE = "README.md"
RECIPE_FILE = "calrl_recipe.yaml"  # beside the final model: the recipe of the run (calrl eval --model reads it)
FINAL_METRIC_KEYS = ("ece", "brier", "auroc", "accuracy", "refusal_rate", "mean_confidence", "smece", "n")
TINY_NAME = "tiny (calrl.tiny.models)"


# ---------------------------------------------------------------------------------------------- W&B
def saved_wandb_id(checkpoint: str | None) -> str | None:
    """The W&B run id a checkpoint was written by (None when it has none)."""
    if not checkpoint:
        return None
    path = Path(checkpoint) / WANDB_ID_FILE
    try:
        return json.loads(path.read_text()).get("id") if path.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None


def start_wandb(recipe: Recipe, *, resume_id: str | None = None) -> Any:
    """Start the recipe's W&B run when ``report_to`` includes wandb (offline without an API key).

    ``resume_id``: continue that run (``resume="allow"``), so a resumed training keeps one history.
    """
    w = recipe.wandb
    config = {"method": recipe.method, "recipe": recipe.raw, "recipe_path": recipe.path}
    return prepare_reporting(recipe.training.report_to, w.project, w.run_name, config, w.mode, dir=w.dir,
                             tags=[*w.tags, f"method:{recipe.method}"], run_id=resume_id)


def finish_wandb(run: Any, *, failed: bool) -> None:
    if run is not None:
        run.finish(exit_code=1 if failed else 0)


# -------------------------------------------------------------------------------------- model card
def final_calibration_metrics(callback: Any) -> dict[str, Any]:
    """The scalars of the last calibration eval (``{}`` without one)."""
    history = [] if callback is None else callback.scored_history()  # the last eval may still be scoring
    if not history:
        return {}
    last = history[-1]
    out: dict[str, Any] = {"label": last.label, "global_step": last.step}
    for key in FINAL_METRIC_KEYS:
        value = last.logged.get(f"eval/{key}")
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            out[key] = value
    return out


def method_name(recipe: Recipe) -> str:
    if recipe.method == "rm":
        return "reward model (PPO-M calibrated loss)" if getattr(recipe.training, "calibration_lambda", 0) \
            else "reward model"
    if recipe.method == "ppo":
        ppo_c = find_term(recipe.training.terms(), "ppo_c")
        return "PPO" if ppo_c is None else f"PPO-C ({ppo_c.variant})"
    return {"grpo": "GRPO", "rloo": "RLOO"}[recipe.method]


def model_card(recipe: Recipe, *, base_model: str, metrics: dict[str, Any], extra: dict[str, Any] | None = None,
               global_step: int | None = None) -> str:
    """A README.md for the output folder: method, base model, recipe, final calibration metrics.

    A LoRA run gets PEFT's card header (``library_name: peft``), since the folder holds an adapter.
    """
    library = "peft" if recipe.lora is not None else "transformers"
    lines = [
        "---", f"library_name: {library}", f"base_model: {base_model}",
        "tags: [calrl, " + recipe.method + (", lora" if recipe.lora is not None else "") + "]", "---", "",
        f"# {Path(recipe.training.output_dir).name}", "",
        f"- method: {method_name(recipe)} (calrl `train-{recipe.method}`)",
        f"- base model: `{base_model}`" + (" (this folder holds a LoRA adapter for it)" if recipe.lora else ""),
        f"- recipe: `{recipe.path}`",
    ]
    if global_step is not None:
        lines.append(f"- optimiser steps: {global_step}")
    sections = dict(extra or {})
    if metrics:
        sections = {f"Final calibration metrics ({metrics.get('label', 'last eval')})":
                    {k: v for k, v in metrics.items() if k not in ("label", "global_step")}, **sections}
    for title, values in sections.items():
        lines += ["", f"## {title}", "", "| metric | value |", "|---|---:|"]
        lines += [f"| {k} | {fmt(v)} |" for k, v in values.items()]
    lines += ["", "## Recipe", "", "```yaml", yaml.safe_dump(recipe.raw, sort_keys=False).rstrip(), "```", ""]
    return "\n".join(lines)


def write_model_card(output_dir: str | Path, text: str) -> Path:
    path = Path(output_dir) / CARD_FILE
    write_text(path, text)
    return path


def base_model_name(source: str | None) -> str:
    return TINY_NAME if source == TINY else str(source)


# ----------------------------------------------------------------------------------- saved recipe
def run_recipe_text(recipe: Recipe) -> str:
    """The recipe saved with the final model (``calrl_recipe.yaml``): the YAML as run (overrides applied), with
    the ``eval`` section in full, its held-out set spelt to read from any folder, and the seed the run used.
    ``calrl eval --model RUN`` takes its defaults from it (:func:`read_run_eval`)."""
    raw = copy.deepcopy(recipe.raw)
    raw["method"] = recipe.method
    ev = dataclasses.asdict(recipe.eval)
    ev["heldout"] = portable_spec(ev["heldout"], recipe.base_dir)
    raw["eval"] = ev
    raw["training"] = {**(raw.get("training") or {}), "seed": int(getattr(recipe.training, "seed", 0))}
    header = (f"# The recipe of this run (calrl train-{recipe.method} --config {recipe.path}, overrides applied),\n"
              "# with the eval settings in full: `calrl eval --model <this folder>` uses them by default.\n")
    return header + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)


@dataclass
class RunEval:
    """The calibration-eval settings of a trained run, from its saved recipe."""

    settings: Any  # calrl.runners.eval_section.EvalSection
    seed: int
    path: Path


def read_run_eval(model: str) -> RunEval | None:
    """The eval settings saved with a run (``RUN/calrl_recipe.yaml``, or the run's for ``RUN/checkpoint-N``);
    None for a model that is not a calrl run."""
    folder = Path(model)
    candidates = [folder / RECIPE_FILE]
    if folder.name.startswith("checkpoint-"):
        candidates.append(folder.parent / RECIPE_FILE)
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(f"not a readable recipe ({str(exc).splitlines()[0]})", path=str(path)) from None
    if not isinstance(data, dict) or not isinstance(data.get("eval") or {}, dict):
        raise InputError("not a recipe (expected a mapping with an 'eval' section)", path=str(path))
    settings = build(EvalSection, data.get("eval") or {}, path=str(path), section="eval", ignore_unknown=True)
    seed = (data.get("training") or {}).get("seed", 0)
    return RunEval(settings=settings, seed=seed if isinstance(seed, int) else 0, path=path)


# ------------------------------------------------------------------------------------------ result
@dataclass
class RunResult:
    """What a finished run produced."""

    method: str
    output_dir: str
    global_step: int
    metrics: dict[str, Any] = field(default_factory=dict)
    checkpoints: list[str] = field(default_factory=list)
    wandb_dir: str | None = None
    resumed_from: str | None = None

    def summary(self) -> str:
        shown = ", ".join(f"{k}={v:.4f}" for k, v in self.metrics.items() if isinstance(v, float))
        return (f"train-{self.method}: {self.global_step} steps, model saved to {self.output_dir}"
                + (f"; final {shown}" if shown else ""))
