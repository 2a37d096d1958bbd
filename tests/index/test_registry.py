"""Backends register once (index.registry): every registered store builds, opens and answers
through the registry; an unknown name lists the known ones; a store declared elsewhere (an
entry point) works in `coldstart index` without touching the commands; the declarations import
no heavy package and the index package has no import cycle."""

from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from coldstart.commands import index as index_cmd
from coldstart.data.synthetic import clustered_vectors
from coldstart.index import registry
from coldstart.index.backend import Backend, Option
from coldstart.index.build import build_index
from tests.exports import write_export
from tests.index.test_backends import HAVE_MILVUS

REPO = Path(__file__).resolve().parents[2]


def _export(directory: Path, n: int = 200, dim: int = 8) -> np.ndarray:
    x, _ = clustered_vectors(n, dim, n_clusters=8, seed=0)
    ids = [f"m{i}" for i in range(n)]
    write_export(directory, ids, x)
    return x


def _registered() -> list:
    return [
        pytest.param(
            name,
            marks=pytest.mark.skipif(
                name == "milvus" and not HAVE_MILVUS, reason="pip install 'coldstart[milvus]'"
            ),
        )
        for name in registry.backend_names()
    ]


def test_the_built_in_backends_are_found_by_name() -> None:
    names = registry.backend_names()
    assert names[:2] == ("faiss", "milvus") and names[0] == registry.DEFAULT
    for name in names:
        backend = registry.get_backend(name)
        assert isinstance(backend, Backend) and backend.name == name
        assert backend.sections and backend.options and backend.summary


@pytest.mark.parametrize("name", _registered())
def test_every_backend_builds_opens_and_inspects_through_the_registry(
    name: str, tmp_path: Path
) -> None:
    x = _export(tmp_path / "emb")
    backend = registry.get_backend(name)
    location = tmp_path / backend.local_name
    report = build_index(tmp_path / "emb", location, recall_queries=50, backend=name)
    assert report["backend"] == name and report["n"] == 200 and report["dim"] == 8
    assert report["recall_at_10"] == 1.0  # the default index is exact
    store = registry.open_store(name, location)
    try:
        assert store.backend == name and store.count() == 200
        assert store.search(x[3:4], 1).ids == [["m3"]]
    finally:
        store.close()
    info = backend.info(str(location), {})
    assert info["live_items"] == 200 and info["dim"] == 8 and info["id_type"] == "str"


def test_an_unknown_backend_names_the_known_ones(tmp_path: Path, capsys) -> None:
    with pytest.raises(registry.UnknownBackend, match="known backends are faiss, milvus"):
        registry.get_backend("qdrant")
    with pytest.raises(ValueError, match="unknown index backend 'qdrant'"):
        registry.open_store("qdrant", tmp_path)
    config = tmp_path / "store.yaml"
    config.write_text("backend: qdrant\n")
    assert index_cmd.main(["info", "--config", str(config)]) == 2
    assert "known backends are faiss, milvus" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # on the command line argparse lists the choices
        index_cmd.main(["info", "--backend", "qdrant"])
    assert "invalid choice: 'qdrant'" in capsys.readouterr().err


def test_a_store_from_an_entry_point_needs_no_change_to_the_commands(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    """A third store: one declaration, found through the entry-point group; the commands take
    its name and its own option (here FAISS behind another name and location flag)."""
    toy = dataclasses.replace(
        registry.get_backend("faiss"),
        name="toy",
        summary="a toy store",
        options=(Option("--toy-dir", "where the toy lives", metavar="DIR"),),
    )

    class EntryPoint:
        name = "toy"

        @staticmethod
        def load() -> Backend:
            return toy

    monkeypatch.setattr(registry, "_entry_points", lambda: {"toy": EntryPoint})
    registry.get_backend.cache_clear()
    try:
        assert registry.backend_names() == ("faiss", "milvus", "toy")
        _export(tmp_path / "emb")
        where = ["--backend", "toy", "--toy-dir", str(tmp_path / "toy")]
        build = ["build", "--embeddings", str(tmp_path / "emb"), "--recall-queries", "20"]
        assert index_cmd.main([*build, *where]) == 0
        assert json.loads(capsys.readouterr().out)["n"] == 200
        assert index_cmd.main(["info", *where]) == 0
        assert json.loads(capsys.readouterr().out)["live_items"] == 200
        assert index_cmd.main(["info", *where, "--index", str(tmp_path)]) == 2
        assert "--index is for --backend faiss, not toy" in capsys.readouterr().err
        with pytest.raises(SystemExit):
            index_cmd.main(["build", "--help"])
        out = capsys.readouterr().out
        assert "toy: where the toy lives" in out and "toy: a toy store" in out
    finally:
        registry.get_backend.cache_clear()


def test_options_are_checked_against_the_chosen_backend() -> None:
    raw = {"backend": "milvus", "milvus": {"uri": "a.db", "index_type": "HNSW"}}
    chosen = registry.choose(raw, {"--nprobe": 4, "--collection": "c"}, "serve")
    assert chosen.backend.name == "milvus" and chosen.location == "a.db"
    assert chosen.settings == {"milvus": {"index_type": "HNSW", "nprobe": 4, "collection": "c"}}
    chosen = registry.choose(raw, {"--uri": "b.db"}, "info")  # the command line wins
    assert chosen.location == "b.db"
    with pytest.raises(ValueError, match="--factory, --out are for --backend faiss, not milvus"):
        registry.choose(raw, {"--factory": "Flat", "--out": "x"}, "build")
    chosen = registry.choose({}, {"--index": "d", "--no-fsync": False}, "serve")
    assert chosen.backend.name == "faiss" and chosen.settings["store"] == {"fsync": False}
    with pytest.raises(ValueError, match="unknown IndexConfig keys"):
        registry.choose({"index": {"nlist": 3}}, {"--index": "d"}, "serve")


@pytest.mark.parametrize("argv", [["index", "build", "--help"], ["serve", "--help"]])
def test_help_explains_the_backends_and_stays_light(argv: list[str]) -> None:
    probe = (
        "import sys\nfrom coldstart.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('faiss', 'pymilvus', 'torch', 'fastapi') if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60
    ).stdout
    assert "HEAVY=\n" in out, out
    assert "--backend {faiss,milvus}" in out and "milvus: a Milvus collection" in out
    assert "faiss: FAISS in this process" in out


def _index_imports() -> dict[str, set[str]]:
    """coldstart.index module -> the coldstart.index modules it imports (any import statement,
    at module level or inside a function)."""
    folder = REPO / "index"
    modules = {f"coldstart.index.{p.stem}": p for p in folder.glob("*.py")}
    modules["coldstart.index"] = modules.pop("coldstart.index.__init__")
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            found |= {n for n in names if n in modules and n != module}
        graph[module] = found
    return graph


def test_the_index_package_has_no_import_cycle() -> None:
    graph = _index_imports()
    assert not graph["coldstart.index.backend"] - {"coldstart.index"}, (
        "the protocol imports no implementation"
    )
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        if module in path:
            raise AssertionError("import cycle: " + " -> ".join((*path, module)))
        if module in done:
            return
        for other in graph[module] - {"coldstart.index"}:  # the package itself: its parent
            visit(other, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())


def test_serving_opens_faiss_in_the_loader_and_checks_it_first(tmp_path: Path) -> None:
    x = _export(tmp_path / "emb")
    build_index(tmp_path / "emb", tmp_path / "idx", recall_queries=10)
    faiss = registry.get_backend("faiss")
    load, schema = faiss.serving(str(tmp_path / "idx"), {"index": {"factory": "Flat"}})
    assert callable(load) and schema.dim == 8 and schema.id_type == "str"
    store = load()  # what the server's loader thread does
    try:
        assert store.search(x[:1], 1).ids == [["m0"]]
    finally:
        store.close()
    with pytest.raises(FileNotFoundError, match="not an index directory"):
        faiss.serving(str(tmp_path / "none"), {})  # refused before the port is bound
