"""The package is layered: a module imports (at module level) only from its own layer or below.

Lazy imports inside functions are how the few upward conveniences are kept (the CLI's commands, the
compatibility names of sdekit.samplers); they are not counted here."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "src" / "sdekit"

LAYERS = [
    {"errors", "threads"},
    {"io", "noise", "ode", "metrics", "accel", "placement"},
    {"persist", "images", "sde"},
    {"data", "gmm", "denoisers"},
    {"nets", "samplers", "losses", "progress"},
    {"registry"},
    {"sampling"},
    {"model", "likelihood", "guidance"},
    {"sdedit"},
    {"pretrained", "bundle", "judge", "strokes", "toy", "train"},
    {"evaluation", "demo", "web"},
    {"commands", "cli", "__init__"},
]
LEVEL = {name: i for i, names in enumerate(LAYERS) for name in names}


def _unit(path: Path) -> str:
    """The layer unit of a source file: its top-level module or sub-package under sdekit."""
    rel = path.relative_to(ROOT).parts
    return rel[0][:-3] if len(rel) == 1 else rel[0]


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in tree.body:                                   # module level only
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            parts = path.relative_to(ROOT).parts
            depth = len(parts) - 1                           # 0 for sdekit/x.py, 1 for sdekit/pkg/x.py
            if node.level > depth:                           # reaches sdekit itself: from .x / from ..x
                target = (node.module or "").split(".")[0]
                if target:
                    yield target, node.lineno
                else:
                    for alias in node.names:
                        yield alias.name, node.lineno


FILES = sorted(p for p in ROOT.rglob("*.py") if "assets" not in p.parts)


def test_every_unit_has_a_layer():
    assert {_unit(p) for p in FILES} <= set(LEVEL), {_unit(p) for p in FILES} - set(LEVEL)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_from_a_layer_above(path):
    me = LEVEL[_unit(path)]
    bad = [(t, line) for t, line in _imports(path) if t in LEVEL and LEVEL[t] > me]
    assert not bad, f"{path.relative_to(ROOT)} imports from above its layer: {bad}"
