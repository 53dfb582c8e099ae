"""The output folder of a training run.

- :func:`check_output_dir` (before any model loads): ``training.output_dir`` must be a folder that can be
  written, and must not hold an earlier run (its model or checkpoints) unless the run resumes (``--resume``)
  or replaces it (``--overwrite``; :func:`clear_previous_run` then deletes the earlier model and checkpoints
  when the new run starts training, not before its models have loaded);
- :func:`final_stage` / :func:`publish_final`: the final model, tokenizer, reports and model card are written
  into ``<output_dir>/.calrl-final-staging`` (one fixed name, so every process of a multi-process run saves
  into the same folder) and renamed into place file by file, the model card last: a failed save leaves no
  half-written model and never a card for a model that is not there;
- :func:`clean_failed_run` (after a failure or Ctrl-C, main process): removes the staging folders, the
  checkpoints whose save did not finish, the tiny model's scratch copy when no checkpoint needs it, and the
  folders the run created when nothing is left in them.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from calrl.errors import ConfigError, file_system_error
from calrl.runners.checkpoints import is_complete, list_checkpoints
from calrl.runners.recipe import Recipe
from calrl.runners.reporting import CARD_FILE

FINAL_STAGE = ".calrl-final-staging"
# what a finished run leaves in its folder, besides its checkpoints (the tokenizer files are not listed:
# a folder holding only a tokenizer holds no run)
MODEL_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "adapter_model.safetensors",
               "adapter_config.json", "config.json", CARD_FILE)
SCRATCH = ("tiny_init",)  # rebuilt by every run (calrl.runners.grpo.TINY_INIT_DIR)


def earlier_run(out: Path) -> list[str]:
    """Names of the model files and checkpoint folders of an earlier run in ``out``."""
    if not out.is_dir():
        return []
    return [n for n in MODEL_FILES if (out / n).exists()] + [Path(p).name for p in list_checkpoints(out)]


def missing_folders(out: Path) -> list[Path]:
    """``out`` and its parents that do not exist yet, outermost first (what the run will create)."""
    return [p for p in reversed((out, *out.absolute().parents)) if not p.exists() and not p.is_symlink()]


def _unwritable(folder: Path) -> OSError | None:
    if os.access(folder, os.W_OK | os.X_OK):
        try:
            if os.statvfs(folder).f_flag & os.ST_RDONLY:
                return OSError(errno.EROFS, os.strerror(errno.EROFS), str(folder))
        except OSError as exc:
            return exc
        return None
    return PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(folder))


def check_output_dir(recipe: Recipe, *, overwrite: bool, resuming: bool) -> None:
    """Refuse an output folder that is a file, cannot be written, or holds an earlier run (see module doc)."""
    out = Path(str(recipe.training.output_dir))
    line = recipe.line_of("training", "output_dir")
    if str(recipe.training.output_dir).strip() == "":
        raise ConfigError("key 'training.output_dir': empty path", path=recipe.path, line=line)
    for folder in (out, *out.absolute().parents):
        if folder.exists():
            if not folder.is_dir():
                what = "is a file, not a folder" if folder == out else f"is under {folder}, a file, not a folder"
                raise ConfigError(f"key 'training.output_dir': {out} {what}", path=recipe.path, line=line)
            problem = _unwritable(folder)
            if problem is not None:
                raise file_system_error(problem, action="training.output_dir cannot be written")
            break
    found = earlier_run(out)
    if found and not resuming and not overwrite:
        shown = ", ".join(found[:2]) + (", ..." if len(found) > 2 else "")
        raise ConfigError(f"key 'training.output_dir': {out} holds an earlier run ({shown}); --resume latest "
                          "continues it, --overwrite replaces it", path=recipe.path, line=line)


def clear_previous_run(out: Path) -> list[str]:
    """Delete the earlier run's model files and checkpoints (``--overwrite``); returns what was deleted."""
    found = earlier_run(out)
    for name in found:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return found


def final_stage(out: Path) -> Path:
    """An empty staging folder for the final model (main process; the others wait for it)."""
    stage = out / FINAL_STAGE
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    return stage


def publish_final(stage: Path, out: Path) -> None:
    """Rename every file of ``stage`` into ``out`` (replacing what is there), the model card last."""
    items = sorted(stage.iterdir(), key=lambda p: (p.name == CARD_FILE, p.name))
    for item in items:
        dest = out / item.name
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        os.replace(item, dest)
    stage.rmdir()


def clean_failed_run(out: Path, method: str, created: list[Path]) -> None:
    """After a failed or interrupted run: remove what cannot be used (see the module doc). Never raises."""
    try:
        _clean(out, method, created)
    except OSError:
        pass


def _clean(out: Path, method: str, created: list[Path]) -> None:
    if not out.is_dir():
        return
    for stage in [out / FINAL_STAGE, *out.glob(".checkpoint-*.staging")]:
        shutil.rmtree(stage, ignore_errors=True)
    complete = []
    for path in map(Path, list_checkpoints(out)):
        if is_complete(path, method):
            complete.append(path)
        else:
            shutil.rmtree(path, ignore_errors=True)
    if not complete and not earlier_run(out):
        for name in SCRATCH:
            shutil.rmtree(out / name, ignore_errors=True)
    for folder in reversed(created):  # innermost first: only folders this run created, only when empty
        _remove_empty_tree(folder)


def _remove_empty_tree(folder: Path) -> None:
    if not folder.is_dir() or folder.is_symlink():
        return
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            _remove_empty_tree(child)
    try:
        folder.rmdir()
    except OSError:
        pass  # not empty: something worth keeping is in it
