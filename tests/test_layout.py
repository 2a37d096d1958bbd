"""Layout guards: one import namespace, and dependencies that point one way.

Every module is `coldstart.*`: the top-level folders data/, encoders/, ranker/, index/ and
configs/ are mapped to coldstart.data, coldstart.encoders, ... (pyproject's package-dir), and no
file imports them under a top-level name. coldstart.data <- coldstart.encoders, coldstart.ranker,
coldstart.index <- the application layer (the rest of `coldstart`): coldstart.data imports none
of the others, coldstart.index never imports encoders or ranker (the server receives an `encode`
callable), and no domain package imports the application layer. Checked by an AST scan of every
import statement, including imports inside functions and `importlib.import_module` calls.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOMAIN = ("data", "encoders", "ranker", "index")
FOLDERS = {"coldstart": "coldstart", **{f"coldstart.{name}": name for name in DOMAIN}}
FOLDERS["coldstart.configs"] = "configs"
APP = "app"  # any coldstart module outside the four domain packages

# domain package -> layers it must never import
FORBIDDEN = {
    "data": {"encoders", "ranker", "index", APP},
    "encoders": {APP},
    "ranker": {APP},
    "index": {"encoders", "ranker", APP},
}


def imported_modules(path: Path) -> list[tuple[str, int]]:
    """(dotted module, line) for every absolute import in a file; `from a import b` gives a.b."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(f"{node.module}.{alias.name}", node.lineno) for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.args[0].value, node.lineno))
    return found


def layer(module: str) -> str | None:
    """The layer of a dotted module name: a domain package, APP, or None (not ours)."""
    parts = module.split(".")
    if parts[0] != "coldstart":
        return None
    if len(parts) > 1 and parts[1] in DOMAIN:
        return parts[1]
    return APP


def python_files() -> list[Path]:
    roots = [REPO / folder for folder in (*FOLDERS.values(), "tests", "benchmarks")]
    return sorted(path for root in roots for path in root.rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FOLDERS))
def test_package_resolves_to_its_folder(package):
    module = importlib.import_module(package)
    path = Path(module.__file__).resolve()
    assert path.parent == REPO / FOLDERS[package], f"{package} imported from {path}"


def test_no_top_level_domain_imports():
    """Nothing imports `data`, `index`, ... as top-level names: only coldstart.<name>."""
    violations = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for path in python_files()
        for name, line in imported_modules(path)
        if name.split(".")[0] in (*DOMAIN, "configs")
    ]
    assert not violations, "top-level imports of domain folders:\n" + "\n".join(violations)


def test_top_level_names_are_not_importable(tmp_path):
    """Outside the checkout, the environment offers `coldstart.data` but no top-level `data`."""
    code = (
        "import importlib.util, sys\n"
        "import coldstart.data, coldstart.index\n"
        f"found = [n for n in {DOMAIN!r} if importlib.util.find_spec(n) is not None]\n"
        "print(found)\n"
        "sys.exit(1 if found else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", code], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependency_direction(package):
    files = sorted((REPO / package).rglob("*.py"))
    assert files, f"no Python files under {package}/"
    violations = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for path in files
        for name, line in imported_modules(path)
        if layer(name) in FORBIDDEN[package]
    ]
    assert not violations, "dependency direction broken:\n" + "\n".join(violations)


def test_scanner_sees_nested_and_dynamic_imports(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text(
        "import os\n"
        "def f():\n"
        "    from coldstart.cli import main\n"
        "    from coldstart import index as idx\n"
        "    import importlib\n"
        "    return importlib.import_module('coldstart.ranker.model')\n"
        "from . import sibling\n"
    )
    names = {name for name, _ in imported_modules(source)}
    assert names == {
        "os",
        "coldstart.cli.main",
        "coldstart.index",
        "importlib",
        "coldstart.ranker.model",
    }
    assert {layer(name) for name in names} == {None, APP, "index", "ranker"}
