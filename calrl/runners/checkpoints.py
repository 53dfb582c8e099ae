"""Checkpoints seen from a runner: which one to resume from (checked before any model loads), the completion
marker of the Trainer-based methods, and the list a run produced.

PPO's checkpoints are written through a staging folder and marked ``calrl_complete`` by calrl's PPO trainer
(:mod:`calrl.trainers.ppo_checkpoint`). ``transformers.Trainer`` (GRPO, RLOO, reward model) writes
``checkpoint-<step>`` in place, ``trainer_state.json`` last, then fires ``on_save``:
:class:`CheckpointMarkerCallback` then writes ``calrl_checkpoint.json`` (the method and the step), so a folder
without it is an interrupted save, and a checkpoint of another method is recognised.

A checkpoint is resumed from only when it is complete, of this method, its state files parse and its weight
and tensor files are whole (a safetensors file's size matches its header; a ``.pt`` file is a readable zip).
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from calrl.errors import ConfigError, InputError
from calrl.jsonio import write_json
from calrl.runners.recipe import Recipe
from calrl.trainers.ppo_checkpoint import COMPLETE_MARKER as PPO_MARKER
from calrl.trainers.ppo_checkpoint import STATE_FILE as PPO_STATE
from calrl.trainers.ppo_checkpoint import read_state

MARKER = "calrl_checkpoint.json"  # written last into a Trainer checkpoint (GRPO, RLOO, reward model)
TRAINER_STATE = "trainer_state.json"


def checkpoint_number(path: Path) -> int | None:
    suffix = path.name.split("-")[-1]
    return int(suffix) if path.name.startswith("checkpoint-") and suffix.isdigit() else None


def list_checkpoints(output_dir: str | Path) -> list[str]:
    out = Path(output_dir)
    found = [p for p in out.glob("checkpoint-*") if p.is_dir() and checkpoint_number(p) is not None]
    return [str(p) for p in sorted(found, key=checkpoint_number)]


def is_complete(folder: Path, method: str) -> bool:
    """The save of this checkpoint finished (its completion marker exists); see :func:`checkpoint_problem`."""
    return (Path(folder) / (PPO_MARKER if method == "ppo" else MARKER)).is_file()


class CheckpointMarkerCallback(TrainerCallback):
    """Write ``calrl_checkpoint.json`` into each Trainer checkpoint once everything else is in it.

    Added last to the trainer (``trainer.add_callback``), so the other callbacks' ``on_save`` files (the W&B
    run id, the calibration eval's predictions) are written before it. Trainer saves into an existing
    ``checkpoint-<step>`` (a resumed run reaching a step saved before): the old marker is removed before the
    save starts (``on_step_end`` / ``on_epoch_end`` run after the save was decided, before it is made), so an
    interrupted re-save is never taken for complete.
    """

    def __init__(self, method: str) -> None:
        self.method = method

    def _unmark_before_save(self, args, state, control) -> None:
        if control.should_save and state.is_world_process_zero:
            (Path(args.output_dir) / f"checkpoint-{state.global_step}" / MARKER).unlink(missing_ok=True)

    def on_step_end(self, args, state, control, **kwargs):
        self._unmark_before_save(args, state, control)

    def on_epoch_end(self, args, state, control, **kwargs):
        self._unmark_before_save(args, state, control)

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            write_json(folder / MARKER, {"method": self.method, "global_step": state.global_step})


# ------------------------------------------------------------------------------------------ checks
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not valid JSON ({exc}): the checkpoint is damaged", path=str(path)) from None


def _check_safetensors(path: Path) -> None:
    """A safetensors file holds an 8-byte header length, the JSON header, then the data its offsets name."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if not 0 < n <= size - 8:
            raise InputError("truncated or not a safetensors file", path=str(path))
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InputError("damaged safetensors header", path=str(path)) from None
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)
            and "data_offsets" in v] if isinstance(header, dict) else None
    if ends is None or 8 + n + max(ends, default=0) != size:
        raise InputError("truncated safetensors file (its size does not match its header)", path=str(path))


def _check_files(folder: Path) -> None:
    """Weight and tensor files of ``folder`` (and its sub-folders, e.g. PPO's value model) are whole."""
    for path in sorted(folder.rglob("*.safetensors")):
        _check_safetensors(path)
    for path in sorted(p for ext in ("*.pt", "*.pth", "*.bin") for p in folder.rglob(ext)):
        if not zipfile.is_zipfile(path):
            raise InputError("truncated or damaged tensor file (torch saves a zip archive)", path=str(path))


def checkpoint_problem(folder: Path, method: str) -> str | None:
    """Why ``folder`` cannot be resumed by ``method`` (None when it can); raises nothing."""
    try:
        check_checkpoint(folder, method)
    except InputError as exc:
        return str(exc)
    return None


def check_checkpoint(folder: Path, method: str) -> None:
    """Raise :class:`InputError` naming the file when ``folder`` is not a complete checkpoint of ``method``."""
    folder = Path(folder)
    if method == "ppo":
        read_state(folder)  # complete, a PPO checkpoint, a known format, valid JSON
    else:
        marker = folder / MARKER
        if (folder / PPO_STATE).is_file():
            raise InputError(f"a checkpoint of train-ppo, not train-{method}", path=str(folder))
        if not marker.is_file():
            raise InputError(f"not a complete train-{method} checkpoint (no {MARKER}: the save was interrupted, "
                             "or calrl did not write it)", path=str(folder))
        written = _read_json(marker)
        if not isinstance(written, dict) or written.get("method") != method:
            got = written.get("method") if isinstance(written, dict) else None
            raise InputError(f"a checkpoint of train-{got}, not train-{method}", path=str(folder))
    state = folder / TRAINER_STATE
    if not state.is_file():
        raise InputError(f"no {TRAINER_STATE}: not a checkpoint, or the save was interrupted", path=str(folder))
    parsed = _read_json(state)
    if not isinstance(parsed, dict) or not isinstance(parsed.get("global_step"), int):
        raise InputError("has no integer 'global_step': the checkpoint is damaged", path=str(state))
    _check_files(folder)


def latest_checkpoint(output_dir: str | Path, method: str) -> tuple[str | None, list[str]]:
    """The newest checkpoint of ``output_dir`` that can be resumed, and the reasons newer ones were skipped."""
    skipped: list[str] = []
    for path in reversed(list_checkpoints(output_dir)):
        problem = checkpoint_problem(Path(path), method)
        if problem is None:
            return path, skipped
        skipped.append(problem)
    return None, skipped


def resolve_resume(recipe: Recipe) -> tuple[str | None, list[str]]:
    """The checkpoint to resume from: a folder, ``latest`` (the newest *complete* ``checkpoint-*``) or None;
    with the reasons newer checkpoints were skipped (``latest`` only)."""
    value = getattr(recipe.training, "resume_from_checkpoint", None)
    if value in (None, "", False):
        return None, []
    line = recipe.line_of("training", "resume_from_checkpoint")
    out = Path(recipe.training.output_dir)
    if str(value) == "latest" or value is True:
        found, skipped = latest_checkpoint(out, recipe.method)
        if found is None:
            count = f" ({len(skipped)} incomplete or damaged)" if skipped else ""
            first = f"; the first: {skipped[0]}" if skipped else ""
            raise ConfigError(f"resume 'latest': no complete checkpoint-* folder{count} in {out}{first}",
                              path=recipe.path, line=line)
        return found, skipped
    folder = Path(str(value))
    if not folder.is_dir():
        what = "is a file, not a checkpoint folder" if folder.exists() else "not found"
        raise ConfigError(f"resume: checkpoint folder '{value}' {what}", path=recipe.path, line=line)
    check_checkpoint(folder, recipe.method)
    return str(folder), []


def checkpoint_step(checkpoint: str) -> int:
    state = Path(checkpoint) / TRAINER_STATE
    if not state.is_file():
        raise InputError(f"not a checkpoint folder (no {TRAINER_STATE})", path=checkpoint)
    return int(_read_json(state)["global_step"])
