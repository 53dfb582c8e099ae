"""No import cycle among calrl's modules, counting every import the source names.

The graph is read from the source with ``ast``: every ``import``/``from ... import`` anywhere in a module counts,
under ``if TYPE_CHECKING:`` and inside functions included (a lazy or type-only import back up is still a cycle).
``from calrl.a import b`` is an edge to ``calrl.a.b`` when ``b`` is a submodule, else to ``calrl.a``. A module's
import of a package it lies inside (``calrl.trainers.ppo`` importing ``calrl.trainers`` or ``calrl``) is not an
edge: Python runs that package's ``__init__`` first whatever the module does.

Imports sit at the top of their module; one left inside a function says why in a comment (on its line, on
the line above, or above its run of imports): a measured start-up cost, an optional dependency, a process that
must not import it.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import calrl

PACKAGE = Path(calrl.__file__).parent


def module_files(package: Path = PACKAGE) -> dict[str, Path]:
    """Dotted name -> file of every module under ``package`` (a package is named by its ``__init__.py``)."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module name of a ``from`` import (relative imports resolved against ``module``)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base[:len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def import_targets(module: str, path: Path, known: set[str]) -> set[str]:
    """The calrl modules that ``module`` imports anywhere in its source."""
    targets = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, is_package, node)
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                targets.add(sub if sub in known else source)
    return {t for t in targets if t in known and t != module and not module.startswith(t + ".")}


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    files = module_files(package)
    known = set(files)
    return {name: import_targets(name, path, known) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for root in sorted(graph):
        if root in state:
            continue
        path, stack = [root], [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_calrl_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_graph_counts_type_checking_lazy_and_submodule_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub import b\n")  # a package importing its child: an edge
    (pkg / "sub" / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.sub.b import X\n")
    (pkg / "sub" / "b.py").write_text("import pkg\ndef f():\n    from . import c\n")  # its own package: no edge
    (pkg / "sub" / "c.py").write_text("from pkg.sub import a\nfrom pkg.sub import missing_name\n")
    graph = import_graph(pkg)
    assert graph == {"pkg": set(), "pkg.sub": {"pkg.sub.b"}, "pkg.sub.a": {"pkg.sub.b"},
                     "pkg.sub.b": {"pkg.sub.c"}, "pkg.sub.c": {"pkg.sub.a"}}
    cycle = find_cycle(graph)
    assert cycle[0] == cycle[-1] and sorted(cycle[1:]) == ["pkg.sub.a", "pkg.sub.b", "pkg.sub.c"]
    assert all(nxt in graph[mod] for mod, nxt in itertools.pairwise(cycle))
    (pkg / "sub" / "c.py").write_text("import pkg.sub\n")
    assert find_cycle(import_graph(pkg)) is None


def unexplained_function_imports(package: Path = PACKAGE) -> list[str]:
    """``file:line`` of each import inside a function with no comment on its lines or on the line above it (a
    comment above a run of imports, one statement after the other in a block, explains the whole run)."""
    found = []
    for path in sorted(package.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        tree = ast.parse("\n".join(lines), filename=str(path))
        functions = [f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)]
        inside = {id(node) for func in functions for node in ast.walk(func) if node is not func}
        for node in ast.walk(tree):
            for block in (getattr(node, name, None) for name in ("body", "orelse", "finalbody")):
                explained = False  # the statement before, in this block, is an import whose reason is given
                for stmt in block if isinstance(block, list) else []:
                    if not isinstance(stmt, ast.Import | ast.ImportFrom) or id(stmt) not in inside:
                        explained = False
                        continue
                    above = lines[stmt.lineno - 2].strip() if stmt.lineno > 1 else ""
                    explained = (explained or above.startswith("#")
                                 or any("#" in line for line in lines[stmt.lineno - 1:stmt.end_lineno]))
                    if not explained:
                        found.append(f"{path.relative_to(package).as_posix()}:{stmt.lineno}")
    return sorted(found, key=lambda where: (where.split(":")[0], int(where.split(":")[1])))


def test_every_import_inside_a_function_says_why():
    missing = unexplained_function_imports()
    assert not missing, ("imports inside functions with no comment saying why they are not at the top of the "
                         f"module (move them up, or name the measured reason): {missing}")


def test_the_import_rule_finds_an_unexplained_import(tmp_path):
    (tmp_path / "m.py").write_text("import os\n\n\ndef f():\n    import json\n\n\ndef g():\n    # why\n"
                                   "    import json\n\n    from os import (\n        path,\n    )\n\n\n"
                                   "def h():\n    import json  # why\n    x = 1\n"
                                   "    if x:\n        import re\n")
    assert unexplained_function_imports(tmp_path) == ["m.py:5", "m.py:21"]
