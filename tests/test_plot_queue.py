"""The reliability diagrams of the training evals are drawn by a worker process (calrl.callbacks.plot_queue)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from calrl.callbacks.plot_queue import PLOT_NAME, PlotQueue
from calrl.data.records import PredictionRecord
from calrl.eval.plots import render_reliability
from calrl.eval.resolving import resolve_records
from calrl.eval.runner import compute_metrics

ROOT = Path(__file__).resolve().parents[1]


def _metrics() -> dict:
    answers = [("a", 0.9, True), ("b", 0.9, False), ("c", 0.3, False), ("a", 0.7, True)]
    records = [PredictionRecord(id=f"q{i}", response=r, confidence=c, correct=ok, reference=["a"])
               for i, (r, c, ok) in enumerate(answers)]
    return compute_metrics(resolve_records(records), n_bins=5, n_boot=0)


def _eval_folder(tmp_path: Path, label: str) -> tuple[Path, dict]:
    folder = tmp_path / label
    folder.mkdir()
    metrics = _metrics()
    (folder / "metrics.json").write_text(json.dumps({**metrics, "training": {"label": label}}))
    return folder, metrics


def test_worker_draws_the_same_diagram_as_the_training_process_would(tmp_path):
    folder, metrics = _eval_folder(tmp_path, "epoch-1")
    plots = PlotQueue()
    plots.submit("epoch-1", metrics, folder)
    plots.submit("bytes-only", metrics, None)
    assert plots.wait_all() == {"epoch-1", "bytes-only"}
    expected = render_reliability(metrics, labels=["epoch-1"], title="Reliability, epoch-1")
    assert (folder / PLOT_NAME).read_bytes() == expected
    assert plots.path("epoch-1") == (folder / PLOT_NAME).resolve()
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []  # written, then renamed


def test_work_on_a_finished_diagram_runs_off_the_calling_thread(tmp_path):
    import threading

    folder, metrics = _eval_folder(tmp_path, "epoch-1")
    plots = PlotQueue()
    plots.submit("epoch-1", metrics, folder)
    plots.submit("bytes-only", metrics, None)
    seen = {}

    def read(diagram):
        seen[threading.current_thread().name] = True
        return diagram if isinstance(diagram, bytes) else diagram.read_bytes()

    on_path, on_bytes = plots.then("epoch-1", read), plots.then("bytes-only", read)
    expected = render_reliability(metrics, labels=["epoch-1"], title="Reliability, epoch-1")
    assert on_path.result(timeout=120) == expected
    assert on_bytes.result(timeout=120) == render_reliability(metrics, labels=["bytes-only"],
                                                              title="Reliability, bytes-only")
    plots.wait_all()
    assert threading.current_thread().name not in seen  # the answers' reader ran it
    assert plots.then("epoch-1", read).result(timeout=0) == expected  # a finished diagram: run at once


def test_work_on_a_failed_diagram_fails_with_its_error(tmp_path):
    folder = tmp_path / "epoch-1"
    folder.mkdir()
    (folder / "metrics.json").write_text("{not json")
    plots = PlotQueue()
    plots.submit("epoch-1", {}, folder)
    future = plots.then("epoch-1", lambda diagram: pytest.fail("called for a failed diagram"))
    with pytest.raises(RuntimeError, match="reliability diagram of epoch-1"):
        future.result(timeout=120)
    with pytest.raises(RuntimeError, match="reliability diagram of epoch-1"):
        plots.wait_all()


def test_diagram_without_folder_is_read_before_its_temporary_file_goes(tmp_path):
    metrics = _metrics()
    plots = PlotQueue()
    plots.submit("step-3", metrics, None)
    assert plots.ready(wait=True) == {"step-3"}
    assert plots.png("step-3") == render_reliability(metrics, labels=["step-3"], title="Reliability, step-3")
    assert plots.path("step-3") is None
    temporary = plots._jobs["step-3"].out
    plots.wait_all()
    assert not temporary.exists()


def test_copies_into_checkpoints_wait_for_the_diagram_and_skip_deleted_ones(tmp_path):
    folder, metrics = _eval_folder(tmp_path, "epoch-1")
    kept, deleted = tmp_path / "checkpoint-2" / "epoch-1", tmp_path / "checkpoint-1" / "epoch-1"
    kept.mkdir(parents=True)
    deleted.mkdir(parents=True)
    plots = PlotQueue()
    plots.submit("epoch-1", metrics, folder)
    plots.copy_to("epoch-1", kept)
    plots.copy_to("epoch-1", deleted)
    deleted.rmdir()  # the trainer rotated that checkpoint away before the diagram was ready
    plots.wait_all()
    assert (kept / PLOT_NAME).read_bytes() == (folder / PLOT_NAME).read_bytes()
    assert not deleted.exists()
    later = tmp_path / "checkpoint-3" / "epoch-1"
    later.mkdir(parents=True)
    plots.copy_to("epoch-1", later)  # asked after the diagram is ready: copied at once
    assert (later / PLOT_NAME).read_bytes() == (folder / PLOT_NAME).read_bytes()


def test_a_failed_diagram_raises_in_the_training_process_naming_the_eval(tmp_path):
    folder = tmp_path / "epoch-2"
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({"reliability": [{"lower": 0.0}]}))  # no upper bound
    plots = PlotQueue()
    plots.submit("epoch-2", {}, folder)
    with pytest.raises(RuntimeError, match="reliability diagram of epoch-2: KeyError"):
        plots.wait_all()
    assert not (folder / PLOT_NAME).exists()


@pytest.mark.parametrize("reader_done", [False, True], ids=["submit-while-reading", "submit-after-reader-ended"])
def test_a_worker_that_dies_fails_its_waiting_diagrams(tmp_path, reader_done):
    folder, metrics = _eval_folder(tmp_path, "epoch-1")
    plots = PlotQueue()
    plots.warm_up()
    os.kill(plots._worker.proc.pid, signal.SIGKILL)
    plots._worker.proc.wait()
    if reader_done:  # the answer reader has seen the worker stop before the diagram is asked for (this hung CI)
        plots._worker.reader.join(timeout=30)
        assert not plots._worker.reader.is_alive()
    plots.submit("epoch-1", metrics, folder)
    with pytest.raises(RuntimeError, match="plot worker stopped .*before the reliability diagram of epoch-1"):
        plots.wait_all()


def test_the_training_process_never_imports_matplotlib(tmp_path):
    folder, _ = _eval_folder(tmp_path, "epoch-1")
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from calrl.callbacks.plot_queue import PlotQueue\n"
        f"folder = Path({str(folder)!r})\n"
        "plots = PlotQueue()\n"
        "plots.submit('epoch-1', json.loads((folder / 'metrics.json').read_text()), folder)\n"
        "plots.wait_all()\n"
        "print(json.dumps([(folder / 'reliability.png').exists(), 'matplotlib' in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [True, False]
