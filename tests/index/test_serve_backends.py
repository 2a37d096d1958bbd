"""`coldstart serve` over either backend: the same routes, errors, auth and id rules.

The same scripted conversation runs against a real `coldstart serve --index DIR` (FAISS) and a
real `coldstart serve --backend milvus --uri items.db` (Milvus Lite), both exact indexes over
the same vectors, and the answers must be equal (scores to 5 decimals, lsn values aside).
Then: the OpenAPI documents are equal, schemathesis passes against the Milvus server, and
acknowledged writes survive `kill -9` of the process serving Milvus Lite.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import pytest

from coldstart.commands import index as index_cmd
from coldstart.commands import serve as serve_cmd
from coldstart.data.synthetic import clustered_vectors
from coldstart.index.config import IndexConfig, StoreConfig
from coldstart.index.store import FaissStore
from tests.exports import write_export
from tests.index.conftest import ServeProcess, free_port, milvus_server
from tests.index.kill_writes import AckedWrites
from tests.index.test_backends import needs_milvus

TOKEN = "backends-token"
DIM = 8


def _stores(root: Path, ids: list, vectors: np.ndarray, **schema: Any) -> tuple[Path, str]:
    """The same items in a FAISS index directory and a Milvus Lite file (exact indexes)."""
    from coldstart.index.milvus_store import MilvusConfig, MilvusStore

    faiss_dir = root / "faiss"
    config = IndexConfig(factory="Flat", **schema)
    FaissStore.build(ids, vectors, faiss_dir, config, StoreConfig(fsync=False)).close()
    uri = str(root / "milvus" / "items.db")
    MilvusStore.build(ids, vectors, MilvusConfig(uri=uri, index_type="FLAT", **schema)).close()
    return faiss_dir, uri


def _serve(backend: str, where: Any, log: Path, *args: str) -> ServeProcess:
    if backend == "faiss":
        return ServeProcess(where, *args, log=log, token=TOKEN)
    return ServeProcess(None, "--backend", "milvus", "--uri", where, *args, log=log, token=TOKEN)


def _script(ids: list, vectors: np.ndarray, id_type: str) -> list[tuple[str, str, dict]]:
    """(method, path, httpx kwargs) for one conversation; writes carry the token."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    new = "new item é" if id_type == "str" else 424242
    bad_path = quote("a\x01b", safe="") if id_type == "str" else "abc"
    bad_id = "bad\u0001id" if id_type == "str" else "1.5"
    v = [round(float(x), 6) for x in vectors[3]]
    w = [round(float(x), 6) for x in vectors[3] + 0.3 * vectors[4]]  # near item 3, no tie
    item = quote(str(ids[3]), safe="")
    unknown = "1" if id_type == "int" else f"{ids[0]}x"
    return [
        ("GET", "/ready", {}),
        ("POST", "/v1/search", {"json": {"vectors": vectors[:2].tolist(), "k": 3}}),
        ("GET", f"/v1/items/{item}", {}),
        ("GET", f"/v1/items/{item}/neighbors?k=4", {}),
        ("GET", f"/v1/items/{quote(unknown, safe='')}", {}),  # unknown: 404
        ("GET", f"/v1/items/{bad_path}", {}),  # not an id of this index: 422
        ("POST", "/v1/search", {"json": {"vectors": [[1.0, 2.0]], "k": 3}}),  # wrong dim
        ("POST", "/v1/search", {"json": {"vectors": [v], "k": 0}}),
        ("POST", "/v1/search", {"content": b'{"vectors": [[1e999]], "k": 1}'}),  # inf
        ("POST", "/v1/items", {"json": {"items": [{"id": new, "vector": w}]}}),  # no token: 401
        ("POST", "/v1/items", {"json": {"items": [{"id": new, "vector": w}]}, "headers": auth}),
        ("POST", "/v1/items", {"json": {"items": [{"id": bad_id, "vector": v}]}, "headers": auth}),
        (
            "POST",
            "/v1/items",
            {"json": {"items": [{"id": 7, "vector": [0] * DIM}]}, "headers": auth},
        ),
        ("GET", f"/v1/items/{quote(str(new), safe='')}", {}),
        ("POST", "/v1/search", {"json": {"vectors": [w], "k": 2}}),
        ("DELETE", f"/v1/items/{quote(str(new), safe='')}", {"headers": auth}),
        ("DELETE", f"/v1/items/{quote(str(new), safe='')}", {"headers": auth}),  # 404 now
        ("DELETE", f"/v1/items/{item}", {}),  # no token: 401
        (
            "POST",
            "/v1/coldstart",
            {"json": {"vector": w, "k": 3, "item_id": new, "insert": True}, "headers": auth},
        ),
        ("POST", "/v1/search", {"json": {"vectors": [w], "k": 1}}),
        ("POST", "/v1/search/media", {"data": {"text": "x"}}),  # no encoder: 501
        ("GET", f"/v1/items/{item}/meta", {}),  # issue 14's routes, no catalogue: 404
        ("POST", "/v1/snapshot", {"headers": auth}),
        ("GET", "/ready", {}),
    ]


def _normal(body: Any) -> Any:
    """A response body with lsn values replaced by their type and floats rounded."""
    if isinstance(body, dict):
        return {
            k: ("<int>" if k == "lsn" and isinstance(v, int) else _normal(v))
            for k, v in body.items()
        }
    if isinstance(body, list):
        return [_normal(v) for v in body]
    if isinstance(body, float):
        return round(body, 5)
    return body


@needs_milvus
@pytest.mark.parametrize("id_type", ["int", "str"])
def test_the_same_conversation_gives_the_same_answers(tmp_path: Path, id_type: str) -> None:
    vectors = clustered_vectors(200, DIM, n_clusters=6, seed=2)[0]
    ids = list(range(0, 400, 2)) if id_type == "int" else [f"item é {i}" for i in range(200)]
    faiss_dir, uri = _stores(tmp_path, ids, vectors, id_type=id_type)
    answers: dict[str, list] = {}
    documents = {}
    for backend, where in (("faiss", faiss_dir), ("milvus", uri)):
        with _serve(backend, where, tmp_path / f"{backend}.log") as srv:
            srv.wait_ready()
            health = srv.client.get("/health").json()
            assert health["items"] == 200 and health["backend"].startswith(backend)
            client = httpx.Client(base_url=srv.url, timeout=30)
            replies = []
            for method, path, kwargs in _script(ids, vectors, id_type):
                r = client.request(method, path, **kwargs)
                body = (
                    r.json()
                    if r.headers.get("content-type", "").startswith("application/json")
                    else r.text
                )
                replies.append((method, path, r.status_code, _normal(body)))
            client.close()
            documents[backend] = srv.client.get("/openapi.json").json()
            answers[backend] = replies
            assert srv.proc.poll() is None, srv.stderr()
    statuses = [status for _, _, status, _ in answers["faiss"]]
    assert statuses == [
        200, 200, 200, 200, 404, 422, 422, 422, 422, 401, 200, 422, 422,
        200, 200, 200, 404, 401, 200, 200, 501, 404, 200, 200,
    ]  # fmt: skip
    for mine, theirs in zip(answers["faiss"], answers["milvus"], strict=True):
        assert mine == theirs, f"faiss {mine}\nmilvus {theirs}"
    assert answers["faiss"][2][3]["id"] == ids[3]  # the id round-trips exactly
    assert documents["faiss"] == documents["milvus"]  # one contract, whichever store


@needs_milvus
@pytest.mark.slow
def test_schemathesis_against_a_milvus_server(tmp_path: Path) -> None:
    pytest.importorskip("schemathesis")
    from tests.index.test_contract import _schemathesis

    vectors = np.random.default_rng(0).standard_normal((64, DIM)).astype(np.float32)
    ids = [f"m{i}" for i in range(64)]
    _, uri = _stores(tmp_path, ids, vectors, id_type="str", normalize=False, metric="l2")
    with _serve("milvus", uri, tmp_path / "milvus.log", "--auth-reads") as srv:
        srv.wait_ready()
        out = _schemathesis(srv.url, tmp_path / "schemathesis-milvus.txt")
        tail = (out.stdout + out.stderr)[-4000:]
        assert out.returncode == 0, tail
        assert " passed" in out.stdout and "failure" not in out.stdout.lower(), tail
        assert srv.proc.poll() is None, srv.stderr()


@needs_milvus
@pytest.mark.slow
def test_acknowledged_writes_survive_kill_9_of_coldstart_serve_on_milvus_lite(
    tmp_path: Path,
) -> None:
    from coldstart.index.milvus_store import MilvusConfig, MilvusStore

    base = np.random.default_rng(0).standard_normal((50, DIM)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    uri = str(tmp_path / "items.db")
    MilvusStore.build(list(range(50)), base, MilvusConfig(uri=uri, index_type="FLAT")).close()
    writes = AckedWrites(list(range(50)), base, seed=3)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for round_ in range(3):
        with _serve("milvus", uri, tmp_path / f"serve-{round_}.log") as srv:
            ready = srv.wait_ready()
            expected = {len(writes.acked) + len(b) for b in [{}, *writes.in_flight]}
            assert ready["items"] in expected
            writes.check(srv.client)
            writes.write_until_killed(srv, auth, batch=5, seconds=(0.5, 1.5))
    assert len(writes.acked) > 50 + 3 * 5, "the writer never got going"
    with _serve("milvus", uri, tmp_path / "final.log") as srv:
        srv.wait_ready()
        writes.check(srv.client)


@needs_milvus
def test_an_unreachable_milvus_server_is_a_503_not_a_500(tmp_path: Path) -> None:
    from coldstart.index.milvus_store import MilvusConfig, MilvusStore

    port = free_port()
    milvus = milvus_server(tmp_path / "srv", port)
    uri = f"http://127.0.0.1:{port}"
    try:
        vectors = clustered_vectors(50, DIM, seed=4)[0]
        MilvusStore.build(
            list(range(50)), vectors, MilvusConfig(uri=uri, index_type="FLAT")
        ).close()
        config = tmp_path / "milvus.yaml"
        config.write_text(f"backend: milvus\nmilvus:\n  uri: {uri}\n  timeout_s: 3\n")
        with ServeProcess(
            None, "--config", str(config), log=tmp_path / "s.log", token=TOKEN
        ) as srv:
            srv.wait_ready()
            body = {"vectors": vectors[:1].tolist(), "k": 1}
            assert srv.client.post("/v1/search", json=body).json()["results"][0]["ids"] == [0]
            milvus.kill()  # the Milvus server goes away under a running coldstart serve
            milvus.wait()
            r = srv.client.post("/v1/search", json=body)
            assert r.status_code == 503 and r.headers["retry-after"], r.text
            assert r.json()["detail"].startswith("store unavailable")
            item = {"items": [{"id": 99, "vector": vectors[0].tolist()}]}
            assert srv.client.post("/v1/items", json=item).status_code == 503
            assert srv.client.get("/v1/items/3").status_code == 503
            assert srv.client.get("/ready").status_code == 503
            health = srv.client.get("/health")
            assert health.status_code == 200 and health.json()["error"], health.text
            assert srv.client.get("/metrics").status_code == 200
            milvus = milvus_server(tmp_path / "srv", port)  # back: served again, nothing lost
            deadline = time.monotonic() + 60
            while srv.client.post("/v1/search", json=body).status_code != 200:
                assert time.monotonic() < deadline, "never recovered"
                time.sleep(0.5)
            assert srv.client.get("/ready").json()["items"] == 50
            assert srv.proc.poll() is None, srv.stderr()
    finally:
        milvus.kill()
        milvus.wait()


# --------------------------------------------------------------------------- start-up errors
def _serve_main(*argv: str) -> int:
    return serve_cmd.main([*argv, "--port", "1", "--log-level", "error"])


@needs_milvus
def test_serve_refuses_to_start_with_a_clear_error(tmp_path: Path, capsys, monkeypatch) -> None:
    uri = str(tmp_path / "none.db")
    cases = [
        (["--backend", "milvus", "--uri", uri], "no collection 'items'"),
        (["--backend", "milvus"], "needs --uri"),
        (
            ["--backend", "milvus", "--uri", uri, "--replica", "gpu"],
            "--replica is for --backend faiss",
        ),
        (["--index", str(tmp_path), "--uri", uri], "--uri is for --backend milvus, not faiss"),
        ([], "--backend faiss needs --index DIR"),
        (["--backend", "milvus", "--uri", uri, "--no-fsync"], "--no-fsync is for --backend faiss"),
    ]
    for argv, message in cases:
        assert _serve_main(*argv) == 2, argv
        assert message in capsys.readouterr().err, argv
    monkeypatch.setitem(__import__("sys").modules, "pymilvus", None)  # the extra is missing
    assert _serve_main("--backend", "milvus", "--uri", uri) == 2
    assert "pip install 'coldstart[milvus]'" in capsys.readouterr().err


@needs_milvus
def test_index_build_and_info_with_milvus(tmp_path: Path, capsys) -> None:
    x, _ = clustered_vectors(2000, 16, n_clusters=16, seed=0)
    write_export(tmp_path / "emb", [f"m{i}" for i in range(2000)], x)
    uri = str(tmp_path / "idx" / "items.db")
    base = ["build", "--embeddings", str(tmp_path / "emb"), "--recall-queries", "200"]
    milvus = ["--backend", "milvus", "--uri", uri]
    assert index_cmd.main([*base, *milvus, "--index-type", "HNSW", "--ef-search", "64"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["backend"] == "milvus" and report["factory"] == "HNSW"
    assert report["n"] == 2000 and report["recall_at_10"] >= 0.95
    assert index_cmd.main(["info", *milvus]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["live_items"] == 2000 and info["id_type"] == "str" and info["dim"] == 16
    assert info["source"]["count"] == 2000 and info["index_type"] == "HNSW"
    assert index_cmd.main([*base, *milvus]) == 2  # refuses to touch an existing collection
    assert "already holds a collection" in capsys.readouterr().err
    assert index_cmd.main([*base, *milvus, "--factory", "Flat"]) == 2
    assert "--factory is for --backend faiss, not milvus" in capsys.readouterr().err
    config = Path(__file__).resolve().parents[2] / "configs" / "index" / "milvus.yaml"
    other = str(tmp_path / "other" / "items.db")
    assert index_cmd.main([*base, "--config", str(config), "--uri", other]) == 0
    assert json.loads(capsys.readouterr().out)["factory"] == "HNSW"  # from the YAML
