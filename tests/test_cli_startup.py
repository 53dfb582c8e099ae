"""Start-up: ``calrl --help`` and every ``calrl COMMAND --help`` import no heavy library (structural, not timed;
the times are ``scripts/bench_startup.py``'s)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from calrl.cli.main import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "trl", "accelerate", "peft", "datasets", "pandas", "matplotlib", "wandb")
SUB_ACTIONS = [["recalibrate", "fit"], ["recalibrate", "apply"], ["data", "filter-preferences"]]
HELPS = [[], *([command] for command in COMMANDS), *SUB_ACTIONS]  # every command, a new one included
PROBE = """
import json, sys
from calrl.cli.main import main
try:
    main(sys.argv[1:] + ["--help"])
except SystemExit as exc:
    assert exc.code == 0, exc.code
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)))
"""


def _heavy_imports(args: list[str]) -> list[str]:
    code = f"HEAVY = {HEAVY!r}\n{PROBE}"
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("args", HELPS, ids=lambda a: " ".join(a) or "calrl")
def test_help_imports_no_heavy_library(args):
    assert _heavy_imports(args) == []


def test_probe_sees_a_heavy_import():
    """The probe is able to fail: a command that imports torch to build its parser is caught."""
    code = f"HEAVY = {HEAVY!r}\nimport torch\n{PROBE}"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "torch" in json.loads(done.stdout.strip().splitlines()[-1])
