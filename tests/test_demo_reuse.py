"""The demo reuses a finished stage only while its outputs exist and its settings are the same: a deleted model, or
another thread count, makes the stage run again."""

import sys
from dataclasses import replace
from pathlib import Path

from calrl.demo.layout import Layout
from calrl.demo.processes import threads_env
from calrl.demo.runner import StudyRunner, Task
from calrl.demo.study import _model_files, build_tasks, full_config, quick_config


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


def test_a_stage_given_another_thread_count_runs_again(tmp_path):
    """A stage's thread count can change its numbers (a float sum split over threads), so it is part of what a
    finished stage is reused for."""
    model_dir, counter = tmp_path / "seed0" / "ppo", tmp_path / "runs.txt"
    StudyRunner(tmp_path, jobs=1, show_progress=False).run([_task(model_dir, counter)])
    results = StudyRunner(tmp_path, jobs=1, show_progress=False).run([replace(_task(model_dir, counter),
                                                                              env=threads_env(2))])
    assert not results["seed0/ppo"].reused and counter.read_text() == "2"


def test_the_quick_study_runs_its_lone_reward_models_on_two_threads(tmp_path):
    """rm_base and rm_plain run alone in the quick study (every later stage needs them): two threads there; in the
    full study GRPO + Brier runs beside them, and everything but the SFT stage keeps one thread."""
    def threads(config):
        return {t.name.split("/")[-1]: t.env.get("OMP_NUM_THREADS") for t in build_tasks(config, Layout(tmp_path))
                if t.stage in ("sft", "reward models") and t.env}

    assert threads(quick_config(tmp_path)) == {"sft": "2", "rm_base": "2", "rm_plain": "2", "rm_calibrated": "1"}
    assert threads(full_config(tmp_path)) == {"sft": "2", "rm_base": "1", "rm_plain": "1", "rm_calibrated": "1"}
