"""bolus.learn is layered: networks (bolus.models) ← data layouts (datasets, tof) ← specs ←
the engine (train, lr_search) and prediction ← stages and pretraining. No module imports,
even inside a function, one that imports it back: a cycle is where a second copy of the
training loop grew before."""

from __future__ import annotations

import ast
from pathlib import Path

import bolus

PACKAGES = ("bolus.learn", "bolus.models")


def _imports(path: Path) -> set[str]:
    """Every bolus.learn / bolus.models module ``path`` imports, at any depth of the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        found |= {n for n in names if n.startswith(PACKAGES)}
    return found


def test_the_learning_modules_import_one_another_without_a_cycle():
    root = Path(bolus.__file__).parent
    modules = {}
    for package in PACKAGES:
        folder = root / package.split(".")[1]
        for path in folder.glob("*.py"):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            modules[name] = path
    graph = {m: {n for n in _imports(p) if n in modules and n != m} for m, p in modules.items()}
    assert "bolus.learn.train" in graph and "bolus.learn.specs" in graph["bolus.learn.train"]

    def cycle_from(start, node, seen):
        for nxt in graph[node]:
            if nxt == start:
                return [node, nxt]
            if nxt not in seen:
                seen.add(nxt)
                path = cycle_from(start, nxt, seen)
                if path:
                    return [node, *path]
        return None

    for module in sorted(graph):
        cycle = cycle_from(module, module, {module})
        assert cycle is None, "import cycle: " + " → ".join(cycle)
