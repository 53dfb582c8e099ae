"""PEFT adapter folders given where a model is expected (``calrl eval --model runs/my_lora_run``)."""

from __future__ import annotations

import json
from pathlib import Path

from calrl.errors import InputError

# where a LoRA run keeps a base model that exists nowhere else (calrl's tiny models): <run>/base_model, named
# by its absolute path in adapter_config.json so PEFT loads it from any working directory
BASE_MODEL_DIR = "base_model"


def split_adapter_folder(model: str) -> tuple[str, str | None]:
    """``(base model, adapter folder)`` when ``model`` is a PEFT adapter folder, else ``(model, None)``.

    The base is the adapter's ``base_model_name_or_path`` (a hub id, or a path). A base saved with the run
    (``<run>/base_model``) is read beside the adapter folder, wherever the run was moved or copied to; another
    relative path is read beside the adapter folder first. A ``checkpoint-N`` adapter of such a run (PEFT saves
    it naming no base) takes the run's ``base_model``.
    """
    folder = Path(model)
    config_file = folder / "adapter_config.json"
    if not folder.is_dir() or (folder / "config.json").is_file() or not config_file.is_file():
        return model, None
    try:
        base = json.loads(config_file.read_text()).get("base_model_name_or_path")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise InputError(f"not a valid adapter config ({exc})", path=str(config_file)) from None
    run_base = folder.parent / BASE_MODEL_DIR
    if not base and folder.name.startswith("checkpoint-") and (run_base / "config.json").is_file():
        return str(run_base), model
    if not base:
        raise InputError("a LoRA adapter folder without base_model_name_or_path: pass the base model with "
                         f"--model BASE --adapter {model}", path=str(config_file))
    travelled = folder / BASE_MODEL_DIR
    if Path(base).name == BASE_MODEL_DIR and (travelled / "config.json").is_file():
        return str(travelled), model
    beside = folder / base
    return (str(beside) if not Path(base).is_absolute() and beside.is_dir() else str(base)), model
