"""Layout guards: the domain packages are this repository's, and dependencies point one way.

data <- encoders, ranker, index <- coldstart. `data` imports none of the others, `index` never
imports `encoders` or `ranker` (the server receives an `encode` callable), and no domain package
imports `coldstart` (the application layer). Checked by an AST scan of every import statement,
including imports inside functions.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOMAIN = ("data", "encoders", "ranker", "index")
PACKAGES = (*DOMAIN, "coldstart")

# package -> top-level packages it must never import
FORBIDDEN = {
    "data": {"encoders", "ranker", "index", "coldstart"},
    "encoders": {"coldstart"},
    "ranker": {"coldstart"},
    "index": {"encoders", "ranker", "coldstart"},
}


def imported_top_levels(path: Path) -> list[tuple[str, int]]:
    """(top-level module, line) for every absolute import in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name.split(".")[0], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module.split(".")[0], node.lineno))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.args[0].value.split(".")[0], node.lineno))
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_package_resolves_inside_repository(package):
    module = importlib.import_module(package)
    path = Path(module.__file__).resolve()
    assert path.is_relative_to(REPO), f"{package} imported from {path}, not from {REPO}"
    assert path.parent == REPO / package


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependency_direction(package):
    files = sorted((REPO / package).rglob("*.py"))
    assert files, f"no Python files under {package}/"
    violations = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for path in files
        for name, line in imported_top_levels(path)
        if name in FORBIDDEN[package]
    ]
    assert not violations, "dependency direction broken:\n" + "\n".join(violations)


def test_scanner_sees_nested_and_dynamic_imports(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text(
        "import os\n"
        "def f():\n"
        "    from coldstart.cli import main\n"
        "    import importlib\n"
        "    return importlib.import_module('ranker.model')\n"
        "from . import sibling\n"
    )
    names = {name for name, _ in imported_top_levels(source)}
    assert names == {"os", "coldstart", "importlib", "ranker"}
