"""Data shipped in the calrl package, named ``calrl:PATH`` (``calrl:data/tiny/eval.jsonl``) by recipes and
commands alike: the one spelling of such a file, read here for ``calrl eval --dataset``, ``eval.heldout`` and
``data.train``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from calrl.errors import InputError

PACKAGE_PREFIX = "calrl:"


def package_path(spec: str) -> str:
    """The local path of ``calrl:PATH``; any other spec is returned unchanged. A ``calrl:`` name of a file the
    package does not hold is an InputError."""
    if not spec.startswith(PACKAGE_PREFIX):
        return spec
    root = Path(str(resources.files("calrl")))
    path = root / spec[len(PACKAGE_PREFIX):]
    if not path.exists():
        raise InputError(f"'{spec}': the calrl package has no such file (looked for {path})")
    return str(path)
