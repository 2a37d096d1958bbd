"""The OpenAPI document is true: schemathesis against live `coldstart serve` processes.

Two servers cover both id types, both vector rules and both auth set-ups: int ids, a
normalizing index and a real (tiny, random-init) encoder for the media routes; and string ids,
`--no-normalize` with L2, no encoder and `--auth-reads`. Each gets a bounded schemathesis run
(every check, every phase, fixed seed) that must report no failure. Settings and the image hook
are in tests/index/schemathesis.toml and tests/index/schemathesis_hooks.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from coldstart.index.config import IndexConfig, StoreConfig
from coldstart.index.store import DurableIndex
from coldstart.index.vector_index import VectorIndex
from tests.index.conftest import REPO_ROOT, ServeProcess

HERE = Path(__file__).parent
TOKEN = "contract-token"
EXAMPLES = 10  # per operation and phase: ~500 requests per server, about 10 s each here


def _index(path: Path, dim: int, ids: list, **config) -> Path:
    x = np.random.default_rng(0).standard_normal((len(ids), dim)).astype(np.float32)
    index = VectorIndex.build(ids, x, IndexConfig(factory="Flat", **config))
    DurableIndex.create(path, index, StoreConfig(fsync=False)).close(snapshot=False)
    return path


def _schemathesis(url: str, report: Path) -> subprocess.CompletedProcess:
    schemathesis = Path(sys.executable).with_name("schemathesis")
    cmd = [str(schemathesis), "--config-file", str(HERE / "schemathesis.toml"), "run"]
    cmd += [f"{url}/openapi.json", "-H", f"Authorization: Bearer {TOKEN}", "--checks", "all"]
    cmd += ["--max-examples", str(EXAMPLES), "--seed", "1", "--generation-database", "none"]
    cmd += ["--no-color", "--workers", "1", "--request-timeout", "30"]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.index.schemathesis_hooks",
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        cmd, cwd=report.parent, env=env, capture_output=True, text=True, timeout=300
    )
    report.write_text(out.stdout + out.stderr)
    return out


def _browse_data(tmp_path: Path) -> list[str]:
    """A catalogue of the int index's items and image shards for half of them (index.browse)."""
    import pandas as pd

    from coldstart.data.io import write_table
    from coldstart.data.shards import write_shards

    ids = list(range(64))
    items = pd.DataFrame({"item_id": ids, "title": [f"item {i}" for i in ids]})
    write_table(items, tmp_path / "items.parquet")
    rng = np.random.default_rng(0)
    samples = [
        {"key": f"{i:04d}", "image": rng.integers(0, 255, (24, 16, 3), dtype=np.uint8)}
        for i in ids[::2]
    ]
    write_shards(samples, str(tmp_path / "media" / "m-%02d.tar"), maxcount=16)
    return ["--catalogue", str(tmp_path / "items.parquet"), "--media", str(tmp_path / "media")]


@pytest.mark.slow
def test_schemathesis_finds_no_failure_against_live_servers(tmp_path):
    pytest.importorskip("schemathesis")
    pytest.importorskip("open_clip")
    _index(tmp_path / "int", 64, list(range(64)))  # tiny-clip's dimension
    browse = _browse_data(tmp_path)  # the item meta and image routes answer 200s too
    _index(tmp_path / "str", 8, [f"m{i}" for i in range(64)], id_type="str", normalize=False)
    with (
        ServeProcess(
            tmp_path / "int",
            "--encoder",
            "tiny-clip",
            *browse,
            log=tmp_path / "int.log",
            token=TOKEN,
        ) as with_encoder,
        ServeProcess(
            tmp_path / "str", "--auth-reads", log=tmp_path / "str.log", token=TOKEN
        ) as auth_reads,
    ):
        with_encoder.wait_ready(timeout=120)
        auth_reads.wait_ready(timeout=120)
        doc = with_encoder.client.get("/openapi.json").json()
        assert "/v1/search/media" in doc["paths"]  # the media routes are part of the run
        assert with_encoder.client.get("/v1/items/2/image").status_code == 200  # so are these
        assert with_encoder.client.get("/v1/items/3/meta").json()["has_image"] is False
        for srv, name in ((with_encoder, "int"), (auth_reads, "str")):
            out = _schemathesis(srv.url, tmp_path / f"schemathesis-{name}.txt")
            tail = (out.stdout + out.stderr)[-4000:]
            assert out.returncode == 0, tail
            assert " passed" in out.stdout and "failure" not in out.stdout.lower(), tail
            assert srv.proc.poll() is None, srv.stderr()  # still serving
