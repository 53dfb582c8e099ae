"""A process that imports the study's modules once and forks a stage process per request (a "zygote").

Every stage of the study is a ``python -m MODULE ARGS`` command (``calrl train-ppo``, ``calrl eval``, the SFT
run). Started as its own process, each paid 8-10 s on this 2-core machine to import torch, transformers, TRL
and calrl before doing any work: about a third of the quick study's wall clock and a quarter of the full
study's. The zygote imports them once; each stage is then a fork of it that runs the same module with the same
arguments and the same environment, in a process of its own (its own exit code, log file and memory), so a
stage's outputs are the ones the command gives when a user types it.

Why not :mod:`multiprocessing`'s ``forkserver``: it is one server per parent process, started with the parent's
environment at its first use and never stopped, while the study needs the study's environment (offline, one
thread, ``PYTHONHASHSEED``, its own datasets cache) read at import time, and a server that ends with the run.

Protocol (JSON lines): the parent writes ``{"id", "module", "args", "env", "log"}`` to the zygote's stdin; the
zygote answers ``{"id", "pid"}`` when it forked and ``{"id", "code"}`` when that process ended (``code`` as
``subprocess``'s ``returncode``: negative for a signal). End of stdin ends the zygote and its running stages.
Nothing here starts a thread or runs a parallel torch operation before forking: a fork copies only the calling
thread, and an OpenMP pool started before a fork does not work in the child.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import runpy
import select
import signal
import sys
import traceback
from typing import Any

_REPLIES = 1  # the file descriptor of the replies to the parent (main() moves it off stdout)


def _emit(message: dict[str, Any]) -> None:
    # straight to the file descriptor: nothing left in a Python buffer for a forked child to write again
    os.write(_REPLIES, (json.dumps(message) + "\n").encode())


def serve() -> dict[str, Any] | None:
    """The zygote's loop. Returns only in a forked child (its request) or, with None, when stdin ends."""
    children: dict[int, str] = {}
    pending = b""
    while True:
        readable, _, _ = select.select([0], [], [], 0.05 if children else None)
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            _emit({"id": children.pop(pid), "code": os.waitstatus_to_exitcode(status)})
        if not readable:
            continue
        chunk = os.read(0, 1 << 16)
        if not chunk:
            for pid in children:
                os.kill(pid, signal.SIGTERM)
            for pid in children:
                os.waitpid(pid, 0)
            return None
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            request = json.loads(line)
            pid = os.fork()
            if pid == 0:
                return request
            children[pid] = request["id"]
            _emit({"id": request["id"], "pid": pid})


def run_child(request: dict[str, Any]) -> int:
    """In the forked process: the request's log as stdout and stderr, its environment and thread count, then
    ``python -m MODULE ARGS``; returns the exit code the command would have had (1 after an exception, whose
    traceback goes to the log as ``python -m`` prints it)."""
    os.close(_REPLIES)
    log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.close(null)
    os.environ.clear()
    os.environ.update(request["env"])
    threads = request["env"].get("OMP_NUM_THREADS")
    if threads:
        # OpenMP read its thread count when the zygote loaded torch; this process's own count is set here
        import torch

        torch.set_num_threads(int(threads))
    sys.argv = [request["module"], *request["args"]]
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        print(stop.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BaseException:  # noqa: BLE001 - any error of the command ends its process with 1, as python -m does
        traceback.print_exc()
        return 1
    return 0


def _exit(code: int) -> None:
    """End a forked stage the way :mod:`multiprocessing` ends its forked children: what the command opened is
    closed here, then ``os._exit``. The exit handlers it inherited from the zygote must not run: they belong to
    the zygote (wandb's media folder, made when the zygote imported wandb and shared by every stage, is deleted by
    one of them)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None:
        wandb.teardown()  # what wandb's own exit handler does: finish any run, stop its service
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    global _REPLIES
    # the replies get a descriptor of their own and stdout goes where stderr goes (the zygote's log): a module
    # that prints while it is imported must not write into the replies
    sys.stdout.flush()
    _REPLIES = os.dup(1)
    os.dup2(2, 1)
    for module in argv if argv is not None else sys.argv[1:]:
        importlib.import_module(module)
    request = serve()
    if request is not None:
        _exit(run_child(request))
    return 0


if __name__ == "__main__":
    sys.exit(main())
