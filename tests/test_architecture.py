"""The package's floors, checked on the real import graph and the real source (issue 15).

Floors, bottom up (README, "Layout"): 0 the top-level modules (``threat``, ``validation``,
``utils``, ``errors``, ...); 1 ``attacks``, ``models``, ``data``; 2 ``train``, ``defend``,
``detect``; 3 ``eval`` (the one harness); 4 ``studies``; 5 ``cli``, ``demo``, ``__main__``.
A module imports only its own floor and the floors below, and the graph has no circle. grimp
reads every import statement of a module, those inside functions included, so a deferred import
that dodges a circle still counts as an edge. The same floors are the import-linter ``layers``
contract in ``pyproject.toml`` (``make lint``); this test adds the circles and the sizes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "advimage"
FLOORS = {"attacks": 1, "models": 1, "data": 1, "train": 2, "defend": 2, "detect": 2, "eval": 3,
          "studies": 4, "cli": 5, "demo": 5, "__main__": 5}
MAX_FILE_LINES, MAX_FUNCTION_LINES = 300, 60


def floor(module: str) -> int:
    """The floor of ``advimage.x.y``: its top package's, 0 for top-level modules."""
    parts = module.split(".")
    return FLOORS.get(parts[1], 0) if len(parts) > 1 else 0


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("advimage")


def test_floors_known() -> None:
    """Every subpackage is on a floor (a new package must be placed, not default to 0)."""
    packages = {p.name for p in SRC.iterdir() if (p / "__init__.py").exists()}
    assert packages <= set(FLOORS), f"packages without a floor: {sorted(packages - set(FLOORS))}"


def test_no_upward_imports(graph: grimp.ImportGraph) -> None:
    upward = sorted(
        f"{m} (floor {floor(m)}) imports {t} (floor {floor(t)})"
        for m in graph.modules for t in graph.find_modules_directly_imported_by(m)
        if floor(t) > floor(m))
    assert not upward, "\n".join(upward)


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    imported = graph.find_modules_directly_imported_by(child)
                    work.append((child, iter(sorted(imported))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_no_import_circles(graph: grimp.ImportGraph) -> None:
    cycles = _cycles(graph)
    assert not cycles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_cycle_finder_finds_a_circle() -> None:
    """The finder itself: a three-module circle and a tail are told apart."""
    g = grimp.ImportGraph()
    for a, b in (("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.d", "p.a")):
        g.add_import(importer=a, imported=b)
    assert _cycles(g) == [["p.a", "p.b", "p.c"]]


def _sources() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_files_under_limit() -> None:
    long = [f"{p.relative_to(SRC)}: {n} lines" for p in _sources()
            if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES]
    assert not long, "\n".join(long)


def test_functions_under_limit() -> None:
    long = []
    for p in _sources():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{p.relative_to(SRC)}:{node.lineno} {node.name}: {n} lines")
    assert not long, "\n".join(long)


def test_test_modules_have_unique_names() -> None:
    """tests/ has no ``__init__.py`` files, so pytest imports test modules by basename: two
    files of one name in different folders stop the whole collection."""
    tests = Path(__file__).resolve().parent
    names = [p.name for p in tests.rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []
