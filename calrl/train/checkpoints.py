"""Checkpoints seen from a runner: which one to resume from, and the list a run produced."""

from __future__ import annotations

import json
from pathlib import Path

from calrl.errors import ConfigError, InputError
from calrl.train.recipe import Recipe

COMPLETE_MARKERS = ("calrl_complete", "trainer_state.json")  # PPO's marker; Trainer writes its state last


def checkpoint_number(path: Path) -> int | None:
    suffix = path.name.split("-")[-1]
    return int(suffix) if path.name.startswith("checkpoint-") and suffix.isdigit() else None


def is_complete(folder: Path, method: str) -> bool:
    """A checkpoint whose save finished (PPO: the completion marker; the other trainers: their state file)."""
    marker = COMPLETE_MARKERS[0] if method == "ppo" else COMPLETE_MARKERS[1]
    return (folder / marker).is_file()


def list_checkpoints(output_dir: str | Path) -> list[str]:
    out = Path(output_dir)
    found = [p for p in out.glob("checkpoint-*") if p.is_dir() and checkpoint_number(p) is not None]
    return [str(p) for p in sorted(found, key=checkpoint_number)]


def resolve_resume(recipe: Recipe) -> str | None:
    """The checkpoint to resume from: a folder, ``latest`` (the newest *complete* ``checkpoint-*``) or None."""
    value = getattr(recipe.training, "resume_from_checkpoint", None)
    if value in (None, "", False):
        return None
    line = recipe.line_of("training", "resume_from_checkpoint")
    out = Path(recipe.training.output_dir)
    if str(value) == "latest" or value is True:
        complete = [Path(p) for p in list_checkpoints(out) if is_complete(Path(p), recipe.method)]
        if not complete:
            raise ConfigError(f"resume 'latest': no complete checkpoint-* folder in {out}", path=recipe.path, line=line)
        return str(complete[-1])
    folder = Path(str(value))
    if not folder.is_dir():
        raise ConfigError(f"resume: checkpoint folder '{value}' not found", path=recipe.path, line=line)
    if not is_complete(folder, recipe.method):
        raise InputError(f"not a complete {recipe.method} checkpoint (the save was interrupted, or it is "
                         "another kind of folder)", path=str(folder))
    return str(folder)


def checkpoint_step(checkpoint: str) -> int:
    state = Path(checkpoint) / "trainer_state.json"
    if not state.is_file():
        raise InputError("not a checkpoint folder (no trainer_state.json)", path=checkpoint)
    return int(json.loads(state.read_text())["global_step"])
