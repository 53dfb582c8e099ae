"""Weights & Biases helpers: start a run (offline without credentials) and read an offline run back.

``wandb leet inspect --json PATH`` prints the records of a run's ``.wandb`` transaction log, one JSON object
a line; :func:`read_offline_history` keeps the history rows, so tests and the demo can check what a
training run logged without a W&B server.
"""

from __future__ import annotations

import json
import math
import netrc
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from calrl.errors import ConfigError, InputError

WANDB_MODES = ("online", "offline", "disabled", "shared")
REPORT_TO_NONE = ("none", "")


def has_wandb_credentials() -> bool:
    """True when ``WANDB_API_KEY`` is set or the netrc file holds a key for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    path = os.environ.get("NETRC") or str(Path.home() / ".netrc")
    try:
        auth = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(auth and auth[2])


def resolve_wandb_mode(mode: str | None = None) -> str:
    """The W&B mode: ``mode`` if given, else ``WANDB_MODE``, else online with credentials, offline without."""
    chosen = mode or os.environ.get("WANDB_MODE") or ("online" if has_wandb_credentials() else "offline")
    if chosen == "dryrun":
        chosen = "offline"
    if chosen not in WANDB_MODES:
        raise ConfigError(f"unknown W&B mode {chosen!r}; choose from {', '.join(WANDB_MODES)}",
                          field="wandb_mode")
    return chosen


def normalize_report_to(report_to: str | Sequence[str] | None) -> list[str]:
    """``report_to`` as a list of integration names; ``None``, ``"none"`` and ``[]`` give ``[]``."""
    if report_to is None:
        return []
    items = [report_to] if isinstance(report_to, str) else list(report_to)
    out = [str(x).strip().lower() for x in items if str(x).strip().lower() not in REPORT_TO_NONE]
    return list(dict.fromkeys(out))


def reports_to_wandb(report_to: str | Sequence[str] | None) -> bool:
    names = normalize_report_to(report_to)
    return "wandb" in names or "all" in names


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def init_wandb_run(project: str, name: str | None = None, config: Mapping[str, Any] | None = None,
                   mode: str | None = None, *, dir: str | os.PathLike[str] | None = None,
                   tags: Sequence[str] | None = None) -> Any:
    """Start (or return the active) W&B run; offline when no API key is available.

    Only the main process (``RANK`` 0) starts a run; other ranks get ``None``. ``WANDB_PROJECT`` is set
    too, so a ``transformers`` ``WandbCallback`` that starts its own run uses the same project. The run
    folder goes under ``dir``, else under ``WANDB_DIR`` as it is at this call.
    """
    import wandb

    if wandb.run is not None:
        return wandb.run
    if not _is_main_process():
        return None
    os.environ["WANDB_PROJECT"] = project
    resolved = resolve_wandb_mode(mode)
    kwargs: dict[str, Any] = {"project": project, "name": name, "config": dict(config or {}),
                              "mode": resolved}
    dir = dir if dir is not None else os.environ.get("WANDB_DIR")  # read now: wandb caches its settings
    if dir is not None:
        Path(dir).mkdir(parents=True, exist_ok=True)
        kwargs["dir"] = str(dir)
    if tags:
        kwargs["tags"] = list(tags)
    return wandb.init(**kwargs)


def prepare_reporting(report_to: str | Sequence[str] | None, project: str, name: str | None = None,
                      config: Mapping[str, Any] | None = None, mode: str | None = None, **kwargs: Any) -> Any:
    """Start a W&B run when ``report_to`` includes wandb (see :func:`init_wandb_run`); else return None."""
    if not reports_to_wandb(report_to):
        return None
    return init_wandb_run(project, name, config, mode, **kwargs)


def _wandb_command() -> list[str]:
    beside = Path(sys.executable).with_name("wandb")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("wandb")
    return [found] if found else [sys.executable, "-m", "wandb"]


def find_offline_runs(wandb_dir: str | os.PathLike[str]) -> list[Path]:
    """The ``offline-run-*`` folders under a ``wandb`` folder (or its parent), oldest first."""
    root = Path(wandb_dir)
    if (root / "wandb").is_dir():
        root = root / "wandb"
    return sorted(p for p in root.glob("offline-run-*") if p.is_dir())


def read_offline_records(run_path: str | os.PathLike[str], *, timeout: float = 120.0) -> list[dict[str, Any]]:
    """Every record of a run's ``.wandb`` log (``wandb leet inspect --json``), in order."""
    path = Path(run_path)
    if not path.exists():
        raise InputError("W&B run not found", path=str(path))
    proc = subprocess.run([*_wandb_command(), "leet", "inspect", "--json", str(path)], check=False,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise InputError(f"wandb leet inspect failed: {proc.stderr.strip()[-500:]}", path=str(path))
    records = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            records.append(json.loads(line))
    return records


def read_offline_history(run_dir: str | os.PathLike[str], *, timeout: float = 120.0) -> list[dict[str, Any]]:
    """The history rows (one dict per ``wandb.log`` call) of an offline run, read with ``wandb leet inspect``.

    ``run_dir`` is an ``offline-run-*`` folder, its ``.wandb`` file, or a ``wandb`` folder (latest run).
    """
    rows = []
    for record in read_offline_records(run_dir, timeout=timeout):
        if record.get("type") == "history":
            item = record.get("history", {}).get("item", {})
            if isinstance(item, list):  # older layout: [{"key": ..., "value_json": ...}]
                item = {"/".join(e.get("nested_key") or [e["key"]]): json.loads(e["value_json"])
                        for e in item}
            rows.append({key: _decode_nonfinite(value) for key, value in item.items()})
    return rows


_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _decode_nonfinite(value: Any) -> Any:
    """W&B stores a logged NaN or infinity as the string "NaN" / "Infinity": give back the float."""
    return _NONFINITE.get(value, value) if isinstance(value, str) else value
