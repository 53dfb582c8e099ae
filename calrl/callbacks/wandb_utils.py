"""Weights & Biases helpers: start a run (offline without credentials) and read an offline run back.

``wandb leet inspect --json PATH`` prints the records of a run's ``.wandb`` transaction log, one JSON object
a line (wandb 0.31 ships no Python reader of that log); :func:`read_offline_run` turns them into the run's
history rows, summary and config, and :func:`read_offline_table` reads a logged ``wandb.Table`` back from
the run's files, so tests can check what a training run logged without a W&B server.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from calrl.errors import ConfigError, InputError
from calrl.progress import is_main_process

WANDB_ID_FILE = "calrl_wandb.json"  # in each checkpoint: the W&B run to continue on resume

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
    return is_main_process()


def init_wandb_run(project: str, name: str | None = None, config: Mapping[str, Any] | None = None,
                   mode: str | None = None, *, dir: str | os.PathLike[str] | None = None,
                   tags: Sequence[str] | None = None, run_id: str | None = None) -> Any:
    """Start (or return the active) W&B run; offline when no API key is available.

    Only the main process (``RANK`` 0) starts a run; other ranks get ``None``. ``WANDB_PROJECT`` is set
    too, so a ``transformers`` ``WandbCallback`` that starts its own run uses the same project. The run
    folder goes under ``dir``, else under ``WANDB_DIR`` as it is at this call. ``run_id`` continues that run
    (``resume="allow"``: a resumed training keeps one history).
    """
    import wandb  # 0.5 s: only a run reporting to W&B calls this (prepare_reporting)

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
    if run_id:
        kwargs.update(id=run_id, resume="allow")
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


@dataclass
class OfflineRun:
    """What an offline run logged: ``history`` (one dict per ``wandb.log`` call), the final ``summary`` and
    ``config`` (every update applied in order; W&B's own panel settings are under ``_wandb.*`` keys)."""

    path: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        """The ``offline-run-*`` folder (its ``files/`` hold the logged media and tables)."""
        return self.path if self.path.is_dir() else self.path.parent


def _items(update: Any) -> dict[str, Any]:
    """A record's ``item`` / ``update`` as a flat dict; the older layout is a list of ``value_json`` entries."""
    if isinstance(update, list):
        return {"/".join(e.get("nested_key") or [e["key"]]): json.loads(e["value_json"]) for e in update}
    return dict(update or {})


def _apply(target: dict[str, Any], change: dict[str, Any]) -> None:
    target.update({k: _decode_nonfinite(v) for k, v in _items(change.get("update")).items()})
    for removed in change.get("remove") or []:
        key = "/".join(removed.get("nested_key") or [removed.get("key", "")]) if isinstance(removed, dict) else removed
        target.pop(key, None)


def read_offline_run(run_dir: str | os.PathLike[str], *, timeout: float = 120.0) -> OfflineRun:
    """History, summary and config of an offline run, read with ``wandb leet inspect``.

    ``run_dir`` is an ``offline-run-*`` folder, its ``.wandb`` file, or a ``wandb`` folder (latest run).
    """
    path = Path(run_dir)
    if path.is_dir() and not path.name.startswith("offline-run-"):  # a wandb folder or its parent: latest run
        runs = find_offline_runs(path)
        path = runs[-1] if runs else path
    run = OfflineRun(path=path)
    for record in read_offline_records(path, timeout=timeout):
        kind = record.get("type")
        if kind == "history":
            item = _items(record.get("history", {}).get("item"))
            run.history.append({key: _decode_nonfinite(value) for key, value in item.items()})
        elif kind == "summary":
            _apply(run.summary, record.get("summary") or {})
        elif kind == "config":
            _apply(run.config, record.get("config") or {})
        elif kind == "run":  # the config given to wandb.init
            _apply(run.config, (record.get("run") or {}).get("config") or {})
    return run


def read_offline_history(run_dir: str | os.PathLike[str], *, timeout: float = 120.0) -> list[dict[str, Any]]:
    """The history rows (one dict per ``wandb.log`` call) of an offline run; see :func:`read_offline_run`."""
    return read_offline_run(run_dir, timeout=timeout).history


def read_offline_table(run: OfflineRun, row: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    """The rows (column name -> value) of the ``wandb.Table`` logged under ``key`` in history ``row``.

    A chart made with ``wandb.plot.*`` and logged under ``K`` stores its table under ``K_table``.
    """
    if row.get(f"{key}._type") != "table-file":
        raise InputError(f"no table logged under {key!r} in this history row", path=str(run.path))
    path = run.folder / "files" / row[f"{key}.path"]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read the logged table: {exc}", path=str(path)) from exc
    columns = data["columns"]
    return [{c: _decode_nonfinite(v) for c, v in zip(columns, values)} for values in data["data"]]


_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _decode_nonfinite(value: Any) -> Any:
    """W&B stores a logged NaN or infinity as the string "NaN" / "Infinity": give back the float."""
    return _NONFINITE.get(value, value) if isinstance(value, str) else value
