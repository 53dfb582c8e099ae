"""Checks of how a training run was launched: the processes asked for are the processes that train together.

Two silent failures of ``accelerate launch`` on CPU machines are caught here:

- ``configs/accelerate/cpu.yaml`` (accelerate's one-process CPU launcher) with ``--num_processes N``: one
  process runs; calrl warns, naming the launcher's request and the config to use instead;
- a multi-process launch (``WORLD_SIZE`` > 1) whose processes do not join one world (e.g. the GPU launcher
  on a machine without GPUs and ``use_cpu: false``): every process would train alone on all the data;
  calrl stops with a one-line error.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from accelerate.commands.launch import launch_command, launch_command_parser

from calrl.errors import ConfigError

logger = logging.getLogger(__name__)
_NUM_PROCESSES = re.compile(r"--num[_-]processes(?:=|\x00)(\d+)")


def requested_processes(pid: int | None = None) -> int | None:
    """``--num_processes N`` of the ``accelerate launch`` that started this process (Linux; else None)."""
    pid = os.getppid() if pid is None else pid
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return None
    if "accelerate" not in cmdline or "launch" not in cmdline:
        return None
    found = _NUM_PROCESSES.search(cmdline)
    return int(found.group(1)) if found else None


def check_launch(num_processes: int) -> None:
    """Warn or stop when the processes that train together differ from what the launch asked for."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1 and num_processes == 1:
        raise ConfigError(f"launched as {world} processes (WORLD_SIZE={world}) but this one trains alone: on a "
                          "machine without GPUs set training.use_cpu: true (configs/accelerate/cpu_multi.yaml)",
                          field="use_cpu")
    asked = requested_processes()
    if asked is not None and asked > num_processes:
        logger.warning("accelerate launch asked for %d processes but %d is running: configs/accelerate/cpu.yaml "
                       "starts one process; use configs/accelerate/cpu_multi.yaml for several CPU processes",
                       asked, num_processes)
        print(f"warning: asked for {asked} processes, running {num_processes} "
              "(use configs/accelerate/cpu_multi.yaml for several CPU processes)", flush=True)


# ---------------------------------------------------------------------------------- calrl as the launcher
# a calrl process that ends with one of these codes has printed its one-line error (calrl.cli.main)
REPORTED_CODES = (2, 3, 130)


def launch_processes(command: str, argv: list[str], *, accelerate_config: str | None,
                     num_processes: int | None) -> int:
    """Run ``calrl COMMAND ARGV`` under ``accelerate launch`` and return the launch's exit code.

    This is what ``calrl train-* --num_processes N [--accelerate_config FILE]`` does once the recipe passed
    every check in this process (as TRL's ``trl grpo --accelerate_config ...`` launches itself). The failed
    process printed its own one-line error (exit code 2, 3 or 130), and that code is returned: no launcher
    traceback, no per-process error lines from the launcher. A process that ended otherwise (a signal, a
    crash) gets one line here naming it.
    """
    # torch.distributed: only a multi-process launch needs it (torch builds without distributed lack it)
    import torch.distributed.run  # noqa: F401 - its loggers exist once imported: quieted below
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    launch_args = ["--config_file", accelerate_config] if accelerate_config else []
    if num_processes is not None:
        launch_args += ["--num_processes", str(num_processes)]
    args = launch_command_parser().parse_args([*launch_args, "--module", "calrl.cli.main", command, *argv])
    # the elastic agent logs each failed and each stopped process; calrl reports the failure itself
    quieted = {name: logging.getLogger(name).level for name in list(logging.root.manager.loggerDict)
               if name.startswith("torch.distributed.elastic") or name == "torch.distributed.run"}
    for name in quieted:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        launch_command(args)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        return _failed(command, rank, failure.exitcode)
    except subprocess.CalledProcessError as exc:  # accelerate's one-process launcher
        return _failed(command, 0, exc.returncode)
    finally:
        for name, level in quieted.items():
            logging.getLogger(name).setLevel(level)
    return 0


def _failed(command: str, rank: int, code: int) -> int:
    if code in REPORTED_CODES:
        return code

    if code < 0:
        try:
            how = f"was stopped by signal {signal.Signals(-code).name}"
        except ValueError:
            how = f"was stopped by signal {-code}"
        code = 128 - code
    else:
        how = f"ended with exit code {code}"
    print(f"calrl {command}: error: process {rank} {how}; its output is above", file=sys.stderr)
    return code if code > 0 else 1
