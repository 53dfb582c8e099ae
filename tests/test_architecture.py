"""The package's floors (docs/architecture.md): no import runs up a floor, no two packages of one floor import
each other round a loop, and every path the architecture page names exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import calrl

PACKAGE = Path(calrl.__file__).parent
REPO = PACKAGE.parent
FLOORS = {
    **dict.fromkeys(["metrics", "io", "jsonio", "config", "errors", "limits", "formatting", "progress", "trl_flags"], 1),
    **dict.fromkeys(["confidence", "grading", "data", "tiny"], 2),
    **dict.fromkeys(["generation", "eval", "gate", "recalibration", "rewards", "reward_modeling"], 3),
    "callbacks": 4,
    "trainers": 5,
    "runners": 6,
    **dict.fromkeys(["cli", "demo", "__main__"], 7),
}


def _unit(path: Path) -> str:
    """The floor unit of a module: its top package under calrl (``rewards``) or its own name (``io``)."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0] if parts[0] != "__init__" else "calrl"


def _imports(path: Path) -> set[str]:
    """The calrl units a module imports, anywhere in it (inside functions and under TYPE_CHECKING too)."""
    units = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] if node.module != "calrl" else [f"calrl.{a.name}" for a in node.names]
        units.update(name.split(".")[1] for name in names if name.startswith("calrl.") and name.count(".") >= 1)
    return units


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if _unit(p) != "calrl")
GRAPH = {}
for _path in MODULES:
    GRAPH.setdefault(_unit(_path), set()).update(u for u in _imports(_path) if u != _unit(_path))


def test_every_unit_has_a_floor():
    assert set(GRAPH) <= set(FLOORS), f"no floor for {sorted(set(GRAPH) - set(FLOORS))}: add it to FLOORS"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_runs_up_a_floor(path):
    unit = _unit(path)
    up = sorted(u for u in _imports(path) if FLOORS.get(u, 0) > FLOORS[unit])
    assert not up, f"{path.relative_to(REPO)} (floor {FLOORS[unit]}) imports {up} from a higher floor"


def test_no_loop_between_packages():
    def visit(unit: str, trail: tuple[str, ...]) -> None:
        for nxt in sorted(GRAPH.get(unit, ())):
            assert nxt not in trail, f"packages import each other round a loop: {' -> '.join((*trail, nxt))}"
            visit(nxt, (*trail, nxt))

    for unit in GRAPH:
        visit(unit, (unit,))


def test_the_architecture_page_names_real_files():
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    paths = set(re.findall(r"`((?:calrl|configs|tests|docs|evals|scripts)/[^`*<>]*?)`", text))
    assert len(paths) > 40
    missing = sorted(p for p in paths if not (REPO / p).exists())
    assert not missing, f"docs/architecture.md names paths that do not exist: {missing}"
    where = text[text.index("## Where to change X"):]
    for topic in ("a reward of PPO", "a metric", "a held-out set", "a grader", "a CLI option", "a recipe key"):
        assert f"| {topic}" in where, f"'where to change' has no row for {topic}"


def test_the_readme_shows_the_layout_near_the_top():
    readme = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    layout = next(i for i, line in enumerate(readme) if line.strip() == "## Layout")
    assert layout < 80, f"the README's layout starts at line {layout + 1}"
    block = "\n".join(readme[layout:layout + 40])
    for unit in FLOORS:
        if (PACKAGE / unit).is_dir() and unit != "__main__":
            assert f"calrl/{unit}/" in block, f"the README's layout does not name calrl/{unit}/"
