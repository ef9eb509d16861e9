"""The package's shape: an acyclic import graph (lazy imports inside functions included), modules that import.

The graph is read from the source with :mod:`ast`, so an import inside a function counts as much as
one at the top. ``from a.b import c`` is an edge to ``a.b.c`` when that is a module, else to ``a.b``.
A package's implicit import of its parent ``__init__`` is not an edge (Python runs it first, before
the child, so it cannot close a circle on its own).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "cosmodm_ops"


def _modules() -> dict[str, Path]:
    mods = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its source."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = mod if is_pkg else mod.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        pkg = pkg.rpartition(".")[0]
                    base = f"{pkg}.{base}" if base else pkg
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                if t.startswith("cosmodm_ops"):
                    r = _resolve(t, mods)
                    if r and r != mod:
                        graph[mod].add(r)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return [*stack[stack.index(m):], m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)):
            return c
    return None


@pytest.mark.unit
def test_find_cycle_sees_a_lazy_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.unit
def test_import_graph_is_acyclic():
    graph = import_graph()
    assert "cosmodm_ops.transfer.factory" in graph["cosmodm_ops.transfer"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.unit
def test_every_module_outside_the_airflow_layer_imports_without_airflow():
    """Each module imports (in a fresh interpreter), and none of them pulls in Airflow: the compute node has none."""
    names = [n for n in _modules() if not n.startswith(("cosmodm_ops.airflow", "cosmodm_ops.archive.migrations"))]
    code = ("import importlib, sys\n"
            f"for n in {names!r}:\n    importlib.import_module(n)\n"
            "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT.parent, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "[]", f"Airflow imported outside cosmodm_ops.airflow: {out.stdout[:500]}"


@pytest.mark.unit
def test_design_module_map_names_every_module():
    """DESIGN.md's module map lets a newcomer find any module's room in one hop."""
    design = (ROOT.parent / "DESIGN.md").read_text()
    section = design.split("## Module map", 1)[1].split("\n## ", 1)[0]
    missing = []
    for name, path in _modules().items():
        if ".migrations" in name or (path.name == "__init__.py" and len(path.read_text().splitlines()) < 3):
            continue
        rel = str(path.relative_to(ROOT))
        if f"`{rel}`" not in section:
            missing.append(rel)
    assert not missing, f"modules missing from DESIGN.md's module map: {missing}"


#: Functions allowed over 80 lines, with the reason (anything else over the limit fails).
LONG_FUNCTIONS = {
    "archive/migrations/versions/0001_initial_archive_schema.py:upgrade": "a migration is the schema, written once",
    "ui/bench.py:seed_bulk": "benchmark seeding: one bulk insert per table, read top to bottom",
    "ui/seed.py:seed_archive": "test fixture data: one small survey, read top to bottom",
}


@pytest.mark.unit
def test_module_and_function_sizes():
    """No module over 500 lines without a written reason; no function over 80 lines outside the list above."""
    long_mods, long_funcs = [], []
    for path in sorted(ROOT.rglob("*.py")):
        text = path.read_text()
        rel = str(path.relative_to(ROOT))
        tree = ast.parse(text)
        if len(text.splitlines()) > 500 and "Longer than 500 lines because" not in (ast.get_docstring(tree) or ""):
            long_mods.append(rel)
        for node in ast.walk(tree):
            if (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                    and node.end_lineno - node.lineno + 1 > 80 and f"{rel}:{node.name}" not in LONG_FUNCTIONS):
                long_funcs.append(f"{rel}:{node.name}")
    assert not long_mods, f"modules over 500 lines without a reason in their docstring: {long_mods}"
    assert not long_funcs, f"functions over 80 lines: {long_funcs}"
