"""The reliability diagrams of the calibration evals, drawn outside the training process.

Drawing a reliability diagram on the training thread cost most of the per-epoch eval: matplotlib's first
import takes seconds and each ``savefig`` most of a second. A thread would not help a training loop that is
busy in Python (it holds the same interpreter lock): :class:`PlotQueue` sends each diagram to one worker
process (:mod:`calrl.eval.plot_worker`, started with training, in its own session so that Ctrl-C reaches
only the trainer), which reads the eval's ``metrics.json`` and writes ``reliability.png`` beside it (write,
then rename). The training thread only asks, at its next callback event, which diagrams are ready
(:meth:`PlotQueue.ready`), and waits for the rest before anything reads them (:meth:`PlotQueue.wait_all`,
at the end of training). Work on a finished diagram that need not hold up training (decoding it into a
``wandb.Image``: most of it in C, outside the interpreter lock) is done by the thread that reads the worker's
answers (:meth:`PlotQueue.then`).

Copies into checkpoint folders are made by the training thread when it asks, never by the worker: the
trainer deletes old checkpoints on that thread, so a copy never races a deletion. Diagrams may be asked for
(:meth:`PlotQueue.submit`, :meth:`PlotQueue.then`) from another thread than the one that asks which are
ready and copies them (the calibration eval's background thread and the training thread): a lock keeps
the queue's books.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import calrl

PLOT_NAME = "reliability.png"


@dataclass
class _Job:
    future: Future
    folder: Path | None  # the eval's folder, or None when the diagram is only logged (written to a temp file)
    out: Path
    copies: list[Path] = field(default_factory=list)  # checkpoint folders still waiting for the diagram


class _Worker:
    """The worker process, and a thread that reads its answers into the futures of the jobs."""

    def __init__(self) -> None:
        root = str(Path(calrl.__file__).resolve().parents[1])  # the child imports this very calrl
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        self.stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the reader thread
        self.proc = subprocess.Popen(
            [sys.executable, "-P", "-m", "calrl.eval.plot_worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.stderr, text=True, encoding="utf-8", env={**os.environ, "PYTHONPATH": path},
            start_new_session=True)
        self.waiting: dict[int, tuple[str, Future]] = {}
        self.stopped: str | None = None  # why the worker stopped, once the reader has seen it stop
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, name="calrl-plot-answers", daemon=True)
        self.reader.start()
        self.finalizer = weakref.finalize(self, _close, self.proc)

    def send(self, job_id: int, label: str, metrics: Path, out: Path, future: Future) -> None:
        with self.lock:  # atomic with the reader's end: a job is failed by the reader or here, never by no one
            stopped = self.stopped
            if stopped is None:
                self.waiting[job_id] = (label, future)
        if stopped is not None:
            future.set_exception(RuntimeError(stopped.format(label=label)))
            return
        line = json.dumps({"id": job_id, "label": label, "metrics": str(metrics), "out": str(out)})
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except OSError:  # the worker is gone: the reader fails every waiting job with its exit code
            pass

    def _read(self) -> None:
        try:
            for line in self.proc.stdout:
                try:
                    answer = json.loads(line)
                    with self.lock:
                        label, future = self.waiting.pop(answer["id"])
                except (ValueError, KeyError, TypeError):  # not an answer (something printed to stdout)
                    continue
                if answer.get("error") is None:
                    future.set_result(None)
                else:
                    future.set_exception(RuntimeError(f"the reliability diagram of {label}: {answer['error']}"))
        finally:
            code = self.proc.wait()
            self.stderr.seek(0)
            tail = self.stderr.read().decode("utf-8", "replace").strip().splitlines()[-1:]
            self.stderr.close()
            stopped = (f"the plot worker stopped (exit code {code}) before the reliability diagram of {{label}}"
                       + (f": {tail[0]}".replace("{", "{{").replace("}", "}}") if tail else ""))
            with self.lock:
                self.stopped = stopped
                left, self.waiting = list(self.waiting.values()), {}
            for label, future in left:
                future.set_exception(RuntimeError(stopped.format(label=label)))

    def close(self) -> None:
        """End of input: the worker finishes the jobs it was sent and exits (the reader thread reaps it)."""
        self.finalizer()


def _close(proc: subprocess.Popen) -> None:
    try:
        proc.stdin.close()
    except OSError:
        pass


class PlotQueue:
    """Reliability diagrams drawn by one worker process, in the order they were asked for."""

    def __init__(self) -> None:
        self._worker: _Worker | None = None
        self._jobs: dict[str, _Job] = {}  # label -> job, in submission order
        self._open: list[str] = []  # labels whose diagram was not seen finished yet
        self._sent = 0
        self._tmp: Path | None = None  # metrics and diagrams of evals without a folder
        self._lock = threading.Lock()  # the books above, between the thread that submits and the one that copies

    def _started(self) -> _Worker:
        if self._worker is None:
            self._worker = _Worker()
        return self._worker

    def warm_up(self) -> None:
        """Start the worker now (it imports matplotlib while training starts)."""
        with self._lock:
            self._started()

    def submit(self, label: str, metrics: Mapping[str, Any], folder: Path | None) -> None:
        """Draw ``label``'s diagram: from ``folder/metrics.json`` into ``folder`` (already written), or, without
        a folder, from ``metrics`` into a temporary file (:meth:`png` reads it)."""
        with self._lock:
            self._sent += 1
            sent = self._sent
            if folder is None and self._tmp is None:
                self._tmp = Path(tempfile.mkdtemp(prefix="calrl-plots-"))
            tmp = self._tmp
        if folder is not None:
            source, out = folder / "metrics.json", folder / PLOT_NAME
        else:
            source, out = tmp / f"{sent}.json", tmp / f"{sent}.png"
            source.write_text(json.dumps(metrics), encoding="utf-8")
        job = _Job(Future(), folder, out.resolve())
        with self._lock:
            self._jobs[label] = job
            self._open.append(label)
            worker = self._started()
        worker.send(sent, label, source.resolve(), job.out, job.future)

    def copy_to(self, label: str, folder: Path) -> None:
        """Copy ``label``'s diagram (one written into its eval folder) into ``folder`` too: now if it is ready,
        else when :meth:`ready` sees it finished."""
        with self._lock:
            job = self._jobs.get(label)
            if job is None or job.folder is None:
                return
            job.copies.append(folder)
            finished = label not in self._open
        if finished:
            self._copy(job)

    def then(self, label: str, fn: Callable[[Path | bytes], Any]) -> Future:
        """The future of ``fn(diagram)``, called as soon as ``label``'s diagram is finished, by the thread that
        reads the worker's answers (or now, if it is finished already); ``diagram`` is its path in the eval's
        folder, or its bytes for an eval without a folder. A diagram that failed fails the future with its error."""
        with self._lock:
            job = self._jobs[label]
        out = Future()

        def call(done: Future) -> None:
            try:
                done.result()
                out.set_result(fn(job.out if job.folder is not None else job.out.read_bytes()))
            except BaseException as exc:  # noqa: BLE001 - handed to whoever reads the future
                out.set_exception(exc)

        job.future.add_done_callback(call)
        return out

    def ready(self, *, wait: bool = False) -> set[str]:
        """The labels whose diagram is finished (all of them with ``wait``); writes the copies of those that
        finished since the last call. A diagram that failed raises its error here."""
        with self._lock:
            waiting = [(label, self._jobs[label]) for label in self._open]
        for label, job in waiting:
            if not (wait or job.future.done()):
                continue
            with self._lock:
                self._open.remove(label)
            job.future.result()
            self._copy(job)
        with self._lock:
            return {label for label in self._jobs if label not in self._open}

    @staticmethod
    def _copy(job: _Job) -> None:
        for dest in job.copies:
            if dest.is_dir():  # a checkpoint deleted since (save_total_limit) gets no copy
                shutil.copyfile(job.out, dest / PLOT_NAME)
        job.copies.clear()

    def path(self, label: str) -> Path | None:
        """Where ``label``'s diagram is written in its eval folder (None when it has none)."""
        with self._lock:
            job = self._jobs.get(label)
        return None if job is None or job.folder is None else job.out

    def png(self, label: str) -> bytes:
        """The finished diagram's bytes."""
        with self._lock:
            job = self._jobs[label]
        return job.out.read_bytes()

    def wait_all(self) -> set[str]:
        """Every diagram, finished (see :meth:`ready`); the worker ends (a later :meth:`submit` starts another)
        and the temporary diagrams of evals without a folder are deleted."""
        try:
            return self.ready(wait=True)
        finally:
            with self._lock:
                worker, self._worker, tmp, self._tmp = self._worker, None, self._tmp, None
            if worker is not None:
                worker.close()
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
