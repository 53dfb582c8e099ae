"""PPO checkpoints: what is saved, how it is written (staged, then renamed, with a completion marker),
and how it is read back for an exact resume.

A checkpoint folder ``checkpoint-<step>`` holds the policy in Hugging Face format (full weights, or the
PEFT adapter), ``value_model/`` (or ``value_head.safetensors``), the tokenizer, ``optimizer.pt``,
``scheduler.pt``, the RNG states of every process (``rng_state[_<rank>].pt``), ``trainer_state.json``
(``transformers.TrainerState``) and ``calrl_ppo_state.json`` (episode, KL coefficient, reward-pipeline
state such as the PPO-C moving average, the unlogged metrics window). The marker file
``calrl_complete`` is written last; a folder without it is an interrupted save and is never resumed from.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from calrl.errors import InputError
from calrl.jsonio import write_json

STATE_FILE = "calrl_ppo_state.json"
COMPLETE_MARKER = "calrl_complete"
VALUE_MODEL_DIR = "value_model"
VALUE_HEAD_FILE = "value_head.safetensors"
FORMAT_VERSION = 1
METHOD = "ppo"


def rng_file(rank: int, world: int) -> str:
    return "rng_state.pt" if world == 1 else f"rng_state_{rank}.pt"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def is_complete(folder: str | os.PathLike[str]) -> bool:
    return (Path(folder) / COMPLETE_MARKER).is_file()


def complete_checkpoints(output_dir: str | os.PathLike[str]) -> list[Path]:
    """The complete ``checkpoint-N`` folders of ``output_dir``, oldest (smallest N) first."""
    out = Path(output_dir)
    if not out.is_dir():
        return []
    found = (p for p in out.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit() and is_complete(p))
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def publish(staging: Path, final: Path) -> None:
    """Rename the staged checkpoint into place (replacing an older one of that step), not yet complete: the
    ``on_save`` callbacks add their files (the W&B run id, the calibration eval's copy), then
    :func:`mark_complete`."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)


def mark_complete(folder: Path) -> None:
    """Write the completion marker, the checkpoint's last file (written then renamed)."""
    partial = folder / f".{COMPLETE_MARKER}.partial"
    partial.write_text("ok\n")
    os.replace(partial, folder / COMPLETE_MARKER)


def rotate(output_dir: str | os.PathLike[str], keep: int | None, protect: Path | None = None) -> None:
    """Delete the oldest complete checkpoints beyond ``keep`` (``None``: keep all)."""
    if not keep or keep < 1:
        return
    for old in complete_checkpoints(output_dir)[:-keep]:
        if protect is None or old.resolve() != protect.resolve():
            shutil.rmtree(old, ignore_errors=True)


def read_state(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The calrl state of a checkpoint, checked: complete, a PPO checkpoint, a known format."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("checkpoint folder not found", path=str(folder))
    path = folder / STATE_FILE
    if not path.is_file():
        other = "a checkpoint of another method" if (folder / "trainer_state.json").is_file() else "not a checkpoint"
        raise InputError(f"{other}: no {STATE_FILE} (resume needs a calrl PPO checkpoint)", path=str(folder))
    if not is_complete(folder):
        raise InputError(f"incomplete checkpoint (no {COMPLETE_MARKER}: the save was interrupted)", path=str(folder))
    try:
        state = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not valid JSON ({exc})", path=str(path)) from None
    if not isinstance(state, dict) or state.get("method") != METHOD:
        raise InputError(f"a checkpoint of method {state.get('method')!r}, not '{METHOD}'", path=str(path))
    if state.get("format") != FORMAT_VERSION:
        raise InputError(f"checkpoint format {state.get('format')!r}; this calrl reads format {FORMAT_VERSION}",
                         path=str(path))
    return state


def write_state(folder: Path, state: dict[str, Any]) -> None:
    write_json(folder / STATE_FILE, {"format": FORMAT_VERSION, "method": METHOD, **state})


def load_weights(module: torch.nn.Module, folder: str | os.PathLike[str], what: str) -> None:
    """Load ``model.safetensors`` (or its shards) of ``folder`` into ``module``.

    Keys the file leaves out are accepted only where the module ties them to a loaded tensor (e.g. a
    language-model head tied to the embeddings).
    """
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (folder / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise InputError(f"no {what} weights (model.safetensors) in the checkpoint", path=str(folder))
    state: dict[str, torch.Tensor] = {}
    for name in files:
        try:
            state.update(load_file(str(folder / name)))
        except Exception as exc:  # noqa: BLE001 - safetensors raises several kinds for a damaged file
            raise InputError(f"cannot read {what} weights: {exc}", path=str(folder / name)) from None
    _load_checked(module, state, what, folder)


def _load_checked(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str, folder: Path) -> None:
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatch: a checkpoint of another model
        raise InputError(f"{what} weights do not fit this model: {str(exc).splitlines()[0]}",
                         path=str(folder)) from None
    if unexpected:
        raise InputError(f"{what} weights have keys this model lacks (e.g. {unexpected[0]})", path=str(folder))
    if missing:
        if hasattr(module, "tie_weights"):
            module.tie_weights()
        params = dict(module.named_parameters(remove_duplicate=False))
        loaded = {params[k].data_ptr() for k in state if k in params}
        untied = [k for k in missing if k not in params or params[k].data_ptr() not in loaded]
        if untied:
            raise InputError(f"{what} weights lack {len(untied)} tensors (e.g. {untied[0]})", path=str(folder))
