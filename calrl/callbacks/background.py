"""One background thread that runs jobs in the order they were handed over; their errors are raised on the
thread that handed them over.

The calibration eval hands everything after generation to it (scoring, the eval's files, its W&B row), so
the training thread only generates. A job that fails keeps its error until the owner asks:
:meth:`OrderedWorker.raise_errors` (at each callback event) raises it on the training thread, which stops
training there; :meth:`OrderedWorker.wait` (at the end of training) waits for every job, then raises the
first error. No error is dropped: each failed job's error is raised once, by one of these calls or by
:meth:`OrderedWorker.result`.

The thread is a daemon: a process that ends without :meth:`~OrderedWorker.wait` (a run that failed
elsewhere) does not hang on the jobs still queued; they are lost with it.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

_STOP = None


class OrderedWorker:
    """Jobs run one at a time, in submission order, on one thread (started at the first job, stopped by
    :meth:`wait`; a later :meth:`submit` starts another)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pending: deque[Future] = deque()  # submitted, and no error raised to the owner yet

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Queue ``fn(*args, **kwargs)``; its future holds the result or the error."""
        future: Future = Future()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, args=(self._jobs,), name=self.name, daemon=True)
            self._thread.start()
        self._pending.append(future)
        self._jobs.put((future, fn, args, kwargs))
        return future

    @staticmethod
    def _run(jobs: queue.SimpleQueue) -> None:
        while (job := jobs.get()) is not _STOP:
            future, fn, args, kwargs = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - kept for the owner's thread, which raises it
                future.set_exception(exc)
            else:
                future.set_result(result)

    @property
    def busy(self) -> bool:
        """Whether a job is queued or running."""
        return any(not future.done() for future in self._pending)

    def raise_errors(self) -> None:
        """Raise the error of the first failed job among those finished in order so far (without waiting)."""
        while self._pending and self._pending[0].done():
            error = self._pending.popleft().exception()
            if error is not None:
                raise error

    def result(self, future: Future) -> Any:
        """Wait for one job (and those before it) and return its result, or raise its error."""
        try:
            return future.result()
        finally:
            if future in self._pending:
                self._pending.remove(future)

    def wait(self) -> None:
        """Wait for every job, stop the thread, then raise the first error not raised yet."""
        try:
            for future in list(self._pending):
                future.exception()  # waits
        finally:
            if self._thread is not None:
                self._jobs.put(_STOP)
                self._thread.join()
                self._thread = None
        while self._pending:
            self.raise_errors()
