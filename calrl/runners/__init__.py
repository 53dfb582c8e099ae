"""Launching: YAML recipes -> validated configs -> models, datasets, trainer, callbacks -> a trained model.

``load_recipe(path, overrides, method=...)`` validates every section before any model loads;
``run_recipe(recipe)`` runs the method's runner (``calrl.runners.rm`` / ``ppo`` / ``grpo`` / ``rloo``).
"""

from calrl.runners.recipe import METHODS, Recipe, load_recipe
from calrl.runners.reporting import RunResult
from calrl.runners.runner import run_recipe

__all__ = ["METHODS", "Recipe", "RunResult", "load_recipe", "run_recipe"]
