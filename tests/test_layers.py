"""The package's layers: each imports only the layers below it, and no module imports itself back.

Layers, lowest first: core, data, solvers, models, tasks, apps (docs/architecture.md). ``sdekit.policy``
sits beside core (it holds defaults as data) and the top-level ``sdekit`` package re-exports the public API.
"""
import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "sdekit"
LAYERS = ["core", "data", "solvers", "models", "tasks", "apps"]
RANK = {name: i for i, name in enumerate(LAYERS)} | {"policy": 0, "__main__": len(LAYERS)}   # __main__: the CLI entry


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path):
    """(imported sdekit module, line, at module level?) for every import in the file."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import; sdekit imports are absolute"
            mods = [node.module] if node.module else []
            if node.module == "sdekit":
                mods = [f"sdekit.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        else:
            continue
        for m in mods:
            if m == "sdekit" or m.startswith("sdekit."):
                yield m, node.lineno, id(node) in top


def layer(module: str) -> int | None:
    parts = module.split(".")
    return RANK.get(parts[1]) if len(parts) > 1 else None


MODULES = sorted(SRC.rglob("*.py"))


def test_every_module_is_in_a_layer():
    loose = [module_name(p) for p in MODULES if module_name(p) != "sdekit" and layer(module_name(p)) is None]
    assert loose == [], f"modules outside the layers: {loose}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_no_import_from_a_higher_layer(path):
    me = module_name(path)
    if me == "sdekit":
        return
    bad = [f"{m} (line {line})" for m, line, _ in imports(path)
           if layer(m) is not None and layer(m) > layer(me)]
    assert bad == [], f"{me} (layer {LAYERS[layer(me)]}) imports from higher layers: {bad}"


def test_no_import_cycles():
    graph = {}
    for p in MODULES:
        graph[module_name(p)] = {m for m, _, top in imports(p) if top}
    names = set(graph)

    def target(m):          # "from sdekit.x import y" may name module sdekit.x.y or an attribute of sdekit.x
        while m and m not in names:
            m = m.rpartition(".")[0]
        return m

    edges = {a: {target(b) for b in bs} - {a, "sdekit", ""} for a, bs in graph.items()}
    for a in list(edges):    # a package's __init__ importing its own submodules is not a cycle
        edges[a] = {b for b in edges[a] if not b.startswith(a + ".") and not a.startswith(b + ".")}
    state, stack, cycles = {}, [], []

    def visit(a):
        state[a] = 1
        stack.append(a)
        for b in sorted(edges.get(a, ())):
            if state.get(b) == 1:
                cycles.append(stack[stack.index(b):] + [b])
            elif b not in state:
                visit(b)
        stack.pop()
        state[a] = 2

    for a in sorted(edges):
        if a not in state:
            visit(a)
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
