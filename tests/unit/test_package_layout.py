"""The layer package's folders form layers: each imports only the folders below it, so the graph
has no cycle and a newcomer reads it bottom up (docs/architecture.md, "Where to change what")."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "layers/klingflow/klingflow"
# Bottom to top: a folder may import those before it, never one after it.
LAYERS = ["core", "infra", "providers", "money", "jobs", "flows", "settings", "runtime", "services"]


def _layer(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else path.stem


def _imported_layers(path: Path) -> set[str]:
    """The package's folders (or top modules) one module imports, lazily imported ones included."""
    found: set[str] = set()
    here = path.relative_to(PACKAGE.parent).with_suffix("").parts
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom) or (node.module is None and node.level == 0):
            continue
        if node.level:
            base = list(here[: len(here) - node.level])
            target = [*base, *(node.module.split(".") if node.module else [])]
        else:
            target = (node.module or "").split(".")
        if target[:1] == ["klingflow"] and len(target) > 1:
            found.add(target[1])
    return found - {"__init__"}


def test_each_folder_imports_only_the_folders_below_it() -> None:
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "aws_models" in path.parts or (path.stem == "__init__" and path.parent == PACKAGE):
            continue
        layer = _layer(path)
        assert layer in LAYERS, f"{path.relative_to(REPO)}: a folder docs/architecture.md does not name"
        for imported in _imported_layers(path) - {layer}:
            if LAYERS.index(imported) > LAYERS.index(layer):
                upward.append(f"{path.relative_to(REPO)} imports klingflow.{imported}")
    assert upward == []


def test_the_package_init_files_import_nothing() -> None:
    # A handler imports only what its function uses: an __init__ that imported its folder's
    # modules would load them all in every cold start.
    for init in PACKAGE.rglob("__init__.py"):
        body = ast.parse(init.read_text()).body
        assert not [n for n in body if isinstance(n, ast.Import | ast.ImportFrom)], init


def test_no_module_over_400_lines_and_no_function_over_60() -> None:
    # A newcomer reads a module in one sitting and a function on one screen.
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "aws_models" in path.parts:
            continue
        source = path.read_text()
        name = path.relative_to(REPO)
        if (lines := len(source.splitlines())) > 400:
            too_long.append(f"{name}: {lines} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                if (length := node.end_lineno - node.lineno + 1) > 60:
                    too_long.append(f"{name}: {node.name} is {length} lines")
    assert too_long == []
