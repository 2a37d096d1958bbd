"""The package a user installs: one `coldstart.*` namespace and every file a command reads.

The slow test builds the real wheel, installs it (not editable) into a fresh virtual environment
in a temporary folder, and runs the commands from a working directory outside the checkout:
`coldstart --help`, the `tiny-clip` and `small-clip` presets, a small synthetic experiment from
the config shipped in the wheel, and `coldstart serve` on its index until `/ready` answers.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOMAIN = ("data", "encoders", "ranker", "index")


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def test_every_subpackage_is_listed():
    """pyproject lists packages by hand (package-dir): a new subfolder must not be left out."""
    setuptools = _pyproject()["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    folders = setuptools["package-dir"]
    found = {
        ".".join([name, *init.parent.relative_to(REPO / folder).parts])
        for name, folder in folders.items()
        for init in (REPO / folder).rglob("__init__.py")
    }
    assert found == listed, f"unlisted: {sorted(found - listed)}, stale: {sorted(listed - found)}"
    assert all(name == "coldstart" or name.startswith("coldstart.") for name in listed)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (
        f"{cmd} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(REPO)],
        cwd=out, env=dict(os.environ),
    )  # fmt: skip
    (path,) = out.glob("coldstart-*.whl")
    return path


@pytest.mark.slow
def test_wheel_holds_one_namespace_and_every_asset(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top_levels = {name.split("/")[0] for name in names if not name.split("/")[0].endswith("-info")}
    assert top_levels == {"coldstart"}, top_levels
    for asset in (
        "coldstart/encoders/model_configs/coldstart-tiny.json",
        "coldstart/encoders/model_configs/coldstart-small-384.json",
        "coldstart/data/movielens/ml-latest-small/ratings.csv",
        "coldstart/data/movielens/ml-latest-small/movies.csv",
        "coldstart/index/static/index.html",
        "coldstart/index/static/app.js",
        "coldstart/configs/experiments/movielens.yaml",
        "coldstart/configs/experiments/synthetic_sparse.yaml",
        "coldstart/configs/ranker/movielens.yaml",
    ):
        assert asset in names, f"{asset} missing from {wheel.name}"
    assert not any(name.startswith("tests/") or "/tests/" in name for name in names)


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A fresh venv holding the wheel (not editable). Its dependencies (torch alone is GBs) are
    borrowed from the project's environment through a .pth line: a directory added that way
    contributes importable distributions but none of its own .pth hooks, so the editable
    install of the checkout stays invisible and `coldstart` can only come from the wheel."""
    root = tmp_path_factory.mktemp("fresh")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    (Path(site) / "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
         str(wheel)],
        cwd=root, env=dict(os.environ),
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    work = root / "work"
    work.mkdir()
    return work, env


@pytest.mark.slow
def test_installed_wheel_runs_outside_the_checkout(installed):
    work, env = installed
    bin_dir = Path(env["PATH"].split(os.pathsep)[0])
    python, coldstart = str(bin_dir / "python"), str(bin_dir / "coldstart")

    assert "usage: coldstart <command>" in _run([coldstart, "--help"], work, env)

    probe = _run(
        [python, "-c", (
            "import importlib.util, json, coldstart, coldstart.data.movielens as ml\n"
            "from coldstart.commands.experiment import DEMO_CONFIG\n"
            "from coldstart.encoders.registry import create_encoder\n"
            "dims = {n: create_encoder(n).dim for n in ('tiny-clip', 'small-clip')}\n"
            "print(json.dumps({'file': coldstart.__file__, 'dims': dims,\n"
            "  'demo': str(DEMO_CONFIG), 'movielens': str(ml.EMBEDDED_ROOT),\n"
            "  'top': [n for n in ('data', 'encoders', 'ranker', 'index')\n"
            "          if importlib.util.find_spec(n)]}))\n"
        )],
        work, env,
    )  # fmt: skip
    facts = json.loads(probe.strip().splitlines()[-1])
    package_dir = Path(facts["file"]).parent
    assert not package_dir.is_relative_to(REPO), facts
    assert facts["top"] == [], "top-level domain names importable from the wheel"
    assert facts["dims"]["tiny-clip"] > 0 and facts["dims"]["small-clip"] == 384
    for key in ("demo", "movielens"):
        assert Path(facts[key]).is_relative_to(package_dir) and Path(facts[key]).exists(), facts

    config = package_dir / "configs" / "experiments" / "synthetic_sparse.yaml"
    overrides = {
        "data.synthetic.n_items": 200,
        "data.synthetic.n_users": 120,
        "data.synthetic.n_classes": 8,
        "ranker.methods": "[popularity, content_knn, warmstart]",
        "ranker.params": "{dim: 16, epochs: 1}",
        "index.eval_queries": 20,
    }
    sets = [arg for key, value in overrides.items() for arg in ("--set", f"{key}={value}")]
    out = _run(
        [coldstart, "experiment", "--config", str(config), "--output-dir", str(work / "runs"),
         "--no-analysis", *sets],
        work, env,
    )  # fmt: skip
    run_dir = Path(out.strip().splitlines()[-1])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["methods"]) == {"popularity", "content_knn", "warmstart"}
    assert metrics["methods"]["content_knn"]["cold"]["users"] > 0

    # The experiment's index stage keeps its FAISS store in artifacts/index/<key>/index/.
    (index_dir,) = [
        p.parent for p in (work / "runs" / "artifacts" / "index").glob("*/index/manifest.json")
    ]
    port = _free_port()
    server = subprocess.Popen(
        [coldstart, "serve", "--index", str(index_dir), "--port", str(port)],
        cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        ready = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as reply:
                    ready = reply.status, json.loads(reply.read())
                    break
            except OSError:
                time.sleep(0.5)
        assert server.poll() is None, server.stderr.read() if server.stderr else ""
        assert ready is not None and ready[0] == 200, ready
    finally:
        server.terminate()
        server.wait(timeout=30)
