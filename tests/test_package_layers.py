"""The release gate and recalibration sit below the CLI: they import only the layers under them (every import,
lazy ones included), and the CLI imports them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import calrl

PACKAGE = Path(calrl.__file__).parent
# what calrl.gate and calrl.recalibration may import from calrl, besides their own package
BELOW = ("metrics", "data", "eval", "io", "errors", "formatting", "limits", "confidence", "grading")


def calrl_imports(path: Path) -> set[str]:
    """Every calrl module ``path`` imports (absolute imports, at any depth of the module)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {n for n in names if n == "calrl" or n.startswith("calrl.")}


def layer_violations(package: str, root: Path = PACKAGE) -> list[str]:
    allowed = (package, *BELOW)
    return [f"{path.relative_to(root)} imports {name}"
            for path in sorted((root / package).rglob("*.py")) for name in sorted(calrl_imports(path))
            if name.split(".")[1:2] == [] or name.split(".")[1] not in allowed]


@pytest.mark.parametrize("package", ["gate", "recalibration"])
def test_imports_only_the_layers_below(package):
    assert layer_violations(package) == []


def test_the_check_sees_an_import_from_above(tmp_path):
    (tmp_path / "gate").mkdir()
    (tmp_path / "gate" / "x.py").write_text("import calrl\n\ndef f():\n    from calrl.cli.options import seed\n")
    assert layer_violations("gate", tmp_path) == ["gate/x.py imports calrl", "gate/x.py imports calrl.cli.options"]
