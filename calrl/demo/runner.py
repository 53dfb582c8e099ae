"""Run the study's stages as processes, side by side where their inputs allow, reusing finished ones.

Each :class:`Task` is one process (an SFT run, a ``calrl train-*``, ``calrl eval`` or ``calrl compare``
command) with the tasks it needs. A task that finished writes a marker (``.markers/<name>.json``) holding a
fingerprint of its command, its own environment (its thread count), its recipe and its inputs' fingerprints; the
next run reuses it while the fingerprint is unchanged, so an interrupted study resumes and a changed setting reruns
what depends on it.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calrl.jsonio import write_json
from calrl.progress import progress


@dataclass
class Task:
    """One stage process. ``prepare`` runs just before launch (it may write the recipe) and returns text that
    enters the fingerprint; ``command`` is built after it."""

    name: str
    stage: str  # the stage it belongs to, for timings: sft, reward models, policies, eval, gate
    command: Callable[[], list[str]]
    deps: list[str] = field(default_factory=list)
    prepare: Callable[[], str] | None = None
    outputs: list[Path] = field(default_factory=list)  # must exist for a marker to be trusted
    ok_codes: tuple[int, ...] = (0,)
    env: dict[str, str] = field(default_factory=dict)  # this process's own environment, over the runner's


@dataclass
class TaskResult:
    name: str
    stage: str
    seconds: float
    reused: bool
    returncode: int
    fingerprint: str
    log: str
    command: str


def display_command(cmd: list[str]) -> str:
    """The command as a user would type it (``calrl ...`` for the CLI module)."""
    if cmd[:3] == [sys.executable, "-m", "calrl.cli.main"]:
        cmd = ["calrl", *cmd[3:]]
    elif cmd[:2] == [sys.executable, "-m"]:
        cmd = ["python", "-m", *cmd[2:]]
    return shlex.join(str(c) for c in cmd)


class Zygote:
    """The parent's side of :mod:`calrl.demo.zygote`: starts ``python -m MODULE ARGS`` commands as forks of a
    process that imported ``modules`` once, started with this process's environment updated by ``env``; its own
    messages go to ``logs/zygote.log``."""

    def __init__(self, modules: tuple[str, ...], env: dict[str, str], logs: Path) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / "zygote.log"
        with open(log, "w", encoding="utf-8") as handle:
            self.proc = subprocess.Popen([sys.executable, "-m", "calrl.demo.zygote", *modules],
                                         env={**os.environ, **env},
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=handle)
        self.log = log
        self.pids: dict[str, int] = {}
        self.codes: dict[str, int] = {}
        self.logs: dict[str, Path] = {}
        self._pending = b""
        self._next = 0

    def start(self, module: str, args: list[str], env: dict[str, str], log: Path) -> ForkedProcess:
        self._next += 1
        request = {"id": str(self._next), "module": module, "args": args, "env": env, "log": str(log)}
        assert self.proc.stdin is not None
        self.logs[request["id"]] = log
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:  # the zygote has ended: this stage fails with the reason in its log
            self._ended()
        return ForkedProcess(self, request["id"])

    def pump(self) -> None:
        """Read what the zygote reported (forked pids, exit codes) without waiting."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while select.select([fd], [], [], 0)[0]:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                self._ended()
                return
            self._pending += chunk
            *lines, self._pending = self._pending.split(b"\n")
            for line in lines:
                message = json.loads(line)
                if "pid" in message:
                    self.pids[message["id"]] = message["pid"]
                else:
                    self.codes[message["id"]] = message["code"]

    def _ended(self) -> None:
        """The zygote ended (it failed to import a module, or was killed): what it had not reported fails, with
        the reason and the zygote's log in the task's log."""
        code = self.proc.wait()
        reason = log_tail(self.log)
        for ident, log in self.logs.items():
            if ident not in self.codes:
                with open(log, "a", encoding="utf-8") as handle:
                    handle.write(f"calrl demo: the process this stage was forked from ended (exit {code}); "
                                 f"its log: {self.log}\n{reason}\n")
                self.codes[ident] = code or 1

    def close(self) -> None:
        """End the zygote (it stops the stages still running) and wait for it."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:  # it had ended already; what was left unsent goes nowhere
                pass
        self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class ForkedProcess:
    """One stage forked by the :class:`Zygote`, with ``subprocess.Popen``'s ``poll`` and ``terminate``."""

    def __init__(self, zygote: Zygote, ident: str) -> None:
        self.zygote = zygote
        self.ident = ident

    def poll(self) -> int | None:
        self.zygote.pump()
        return self.zygote.codes.get(self.ident)

    def terminate(self) -> None:
        pid = self.zygote.pids.get(self.ident)
        if pid is not None and self.ident not in self.zygote.codes:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


class StudyRunner:
    """Schedules tasks on ``jobs`` worker processes, with a progress bar and a log file per task.

    With ``preload`` (module names), every ``python -m MODULE ARGS`` task is a fork of one :class:`Zygote` that
    imported those modules once, instead of a new interpreter that imports them again; other commands are
    started as processes of their own. A ``zygote`` started beforehand (while the caller imports what it needs)
    is used instead of starting one; the runner ends it when the run ends."""

    def __init__(self, out: Path, *, jobs: int = 2, env: dict[str, str] | None = None,
                 show_progress: bool = True, preload: tuple[str, ...] = (), zygote: Zygote | None = None) -> None:
        self.out = out
        self.jobs = max(1, jobs)
        self.env = env or {}
        self.show_progress = show_progress
        self.preload = preload
        self.zygote = zygote
        self.markers = out / ".markers"
        self.logs = out / "logs"
        self.results: dict[str, TaskResult] = {}

    def _marker(self, name: str) -> Path:
        return self.markers / (name.replace("/", "__") + ".json")

    def _fingerprint(self, task: Task, prepared: str) -> str:
        h = hashlib.sha256()
        h.update(json.dumps(task.command(), default=str).encode())
        h.update(json.dumps(task.env, sort_keys=True).encode())  # a stage's thread count changes its numbers
        h.update(prepared.encode())
        for dep in task.deps:
            h.update(self.results[dep].fingerprint.encode())
        return h.hexdigest()[:16]

    def _reusable(self, task: Task, fingerprint: str) -> dict[str, Any] | None:
        marker = self._marker(task.name)
        if not marker.is_file():
            return None
        try:
            saved = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if saved.get("fingerprint") != fingerprint or not all(p.exists() for p in task.outputs):
            return None
        return saved

    def run(self, tasks: list[Task]) -> dict[str, TaskResult]:
        """Run every task (dependencies first); raises ``StageFailed`` on the first failure."""
        by_name = {t.name: t for t in tasks}
        for t in tasks:
            missing = [d for d in t.deps if d not in by_name]
            if missing:
                raise ValueError(f"task {t.name} needs unknown tasks {missing}")
        self.markers.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        pending = list(tasks)
        running: dict[str, tuple[Any, float, str, Any]] = {}
        failed: TaskResult | None = None
        bar = progress(total=len(tasks), desc="calrl demo", unit="stage", disable=not self.show_progress)
        try:
            while pending or running:
                # launch what is ready
                for task in list(pending):
                    if failed is not None or len(running) >= self.jobs:
                        break
                    if not all(d in self.results for d in task.deps):
                        continue
                    pending.remove(task)
                    prepared = task.prepare() if task.prepare else ""
                    fingerprint = self._fingerprint(task, prepared)
                    saved = self._reusable(task, fingerprint)
                    log = self.logs / (task.name.replace("/", "__") + ".log")
                    cmd = task.command()
                    if saved is not None:
                        self.results[task.name] = TaskResult(task.name, task.stage, float(saved.get("seconds", 0.0)),
                                                             True, 0, fingerprint, str(log), display_command(cmd))
                        bar.update(1)
                        bar.write(f"  reused   {task.name}")
                        continue
                    handle = open(log, "w", encoding="utf-8")  # noqa: SIM115 - closed when the process ends
                    handle.write(f"$ {display_command(cmd)}\n")
                    handle.flush()
                    running[task.name] = (self._launch(cmd, task, handle, log), time.time(), fingerprint, handle)
                    bar.set_postfix_str(", ".join(running), refresh=True)
                # collect what finished
                for name, (proc, start, fingerprint, handle) in list(running.items()):
                    code = proc.poll()
                    if code is None:
                        continue
                    handle.close()
                    del running[name]
                    task = by_name[name]
                    seconds = time.time() - start
                    result = TaskResult(name, task.stage, seconds, False, code, fingerprint,
                                        str(self.logs / (name.replace("/", "__") + ".log")),
                                        display_command(task.command()))
                    bar.update(1)
                    if code in task.ok_codes:
                        self.results[name] = result
                        write_json(self._marker(name), {"fingerprint": fingerprint, "seconds": seconds,
                                                        "returncode": code, "command": result.command,
                                                        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                  time.gmtime())})
                        bar.write(f"  done     {name} ({seconds:.0f} s)")
                    else:
                        failed = failed or result
                        bar.write(f"  FAILED   {name} (exit {code}); log: {result.log}")
                    bar.set_postfix_str(", ".join(running), refresh=True)
                if failed is not None and not running:
                    break
                if running:
                    time.sleep(0.2)
        except BaseException:
            for proc, *_ in running.values():
                proc.terminate()
            raise
        finally:
            bar.close()
            if self.zygote is not None:
                self.zygote.close()
                self.zygote = None
        if failed is not None:
            raise StageFailed(failed)
        return self.results

    def _launch(self, cmd: list[str], task: Task, handle: Any, log: Path) -> Any:
        """Start one task's process: a fork of the zygote for ``python -m`` commands when modules are preloaded,
        else a new process; either has ``poll`` and ``terminate``."""
        env = {**os.environ, **self.env, **task.env}
        if (self.preload or self.zygote is not None) and cmd[:2] == [sys.executable, "-m"]:
            if self.zygote is None:
                self.zygote = Zygote(self.preload, self.env, self.logs)
            handle.flush()
            return self.zygote.start(cmd[2], [str(c) for c in cmd[3:]], env, log)
        return subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)


class StageFailed(Exception):
    def __init__(self, result: TaskResult) -> None:
        super().__init__(f"stage {result.name} failed (exit code {result.returncode}); its log: {result.log}")
        self.result = result


def log_tail(path: str | Path, lines: int = 15) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])
