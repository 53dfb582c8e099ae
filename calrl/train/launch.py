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
from pathlib import Path

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
