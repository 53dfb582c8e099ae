"""Is the Hugging Face hub usable right now? Offline mode and a fast reachability check.

``datasets.load_dataset`` on a machine without network retries for about 25 seconds before it fails.
Before loading a standard set from the hub, calrl checks (1) the offline switches (``HF_HUB_OFFLINE``,
``HF_DATASETS_OFFLINE``, ``huggingface_hub``'s constant) and (2) whether the hub's host accepts a TCP
connection within ``PROBE_TIMEOUT_S`` seconds. When either says no, the set is loaded in offline mode: from
the local ``datasets`` cache when it is there, else a one-line error at once. Behind an HTTP(S) proxy the
direct probe says nothing about the hub, so it is skipped.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from urllib.parse import urlparse

import datasets.config
from huggingface_hub import constants

PROBE_TIMEOUT_S = 3.0
_TRUE = {"1", "ON", "YES", "TRUE"}
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def offline_switch() -> str | None:
    """The name of the offline switch that is on (an environment variable or the hub's constant), else None."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in _TRUE:
            return f"{var}=1"

    return "huggingface_hub offline mode" if constants.HF_HUB_OFFLINE else None


def hub_endpoint() -> tuple[str, int]:
    """Host and port of the hub endpoint (``HF_ENDPOINT``, default huggingface.co)."""
    url = urlparse(constants.ENDPOINT)
    return url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)


@cache
def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """:func:`probe_hub`, asked once per process."""
    return probe_hub(timeout)


def probe_hub(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True when the hub's host accepts a TCP connection within ``timeout`` seconds, or when a proxy is
    configured (the probe cannot tell then)."""
    if any(os.environ.get(var) for var in _PROXY_VARS):
        return True
    host, port = hub_endpoint()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def hub_unavailable() -> str | None:
    """Why the hub cannot be used now (the offline switch, or the endpoint unreachable), else None."""
    switch = offline_switch()
    if switch is not None:
        return f"offline mode is on ({switch})"
    if not hub_reachable():
        host, port = hub_endpoint()
        return f"the hub ({host}:{port}) is unreachable"
    return None


@contextmanager
def offline_mode() -> Iterator[None]:
    """Run ``datasets`` and ``huggingface_hub`` in offline mode (local cache only) inside the block."""
    saved = (datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE)
    datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = saved
