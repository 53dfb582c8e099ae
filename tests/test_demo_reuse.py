"""The demo reuses a finished stage only while its outputs exist: a deleted model makes the stage run again."""

import sys
from pathlib import Path

from calrl.demo.runner import StudyRunner, Task
from calrl.demo.study import _model_files


def _task(model_dir: Path, counter: Path) -> Task:
    script = ("import pathlib, sys; d = pathlib.Path(sys.argv[1]); d.mkdir(parents=True, exist_ok=True); "
              "(d / 'config.json').write_text('{}'); (d / 'model.safetensors').write_bytes(b'x'); "
              "c = pathlib.Path(sys.argv[2]); c.write_text(str(int(c.read_text() or 0) + 1) if c.exists() else '1')")
    return Task(name="seed0/ppo", stage="policies", outputs=_model_files(model_dir),
                command=lambda: [sys.executable, "-c", script, str(model_dir), str(counter)])


def test_a_stage_whose_model_was_deleted_runs_again(tmp_path):
    model_dir, counter = tmp_path / "seed0" / "ppo", tmp_path / "runs.txt"
    results = StudyRunner(tmp_path, jobs=1, show_progress=False).run([_task(model_dir, counter)])
    assert not results["seed0/ppo"].reused and counter.read_text() == "1"
    results = StudyRunner(tmp_path, jobs=1, show_progress=False).run([_task(model_dir, counter)])
    assert results["seed0/ppo"].reused and counter.read_text() == "1"  # finished, outputs there: reused
    (model_dir / "model.safetensors").unlink()  # the model is gone, the marker and config.json are not
    results = StudyRunner(tmp_path, jobs=1, show_progress=False).run([_task(model_dir, counter)])
    assert not results["seed0/ppo"].reused and counter.read_text() == "2"
    assert (model_dir / "model.safetensors").is_file()
