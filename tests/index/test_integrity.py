"""Issue 9's reproducers, each on a real `coldstart serve` process (kill -9 where it applies):
overflowing vectors, unbounded scores, string ids through log and snapshot, a corrupt log,
a failed append."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest

from coldstart.index.config import IndexConfig, StoreConfig
from coldstart.index.store import DurableIndex
from coldstart.index.vector_index import VectorIndex
from coldstart.index.wal import OP_UPSERT, WalRecord, WriteAheadLog, scan
from tests.index.conftest import ServeProcess, run_coldstart

TOKEN = "integrity-token"
DIM = 8


def _index(tmp_path: Path, n: int = 20, **config) -> Path:
    x = np.random.default_rng(0).standard_normal((n, DIM)).astype(np.float32)
    ids = [f"warm{i}" for i in range(n)] if config.get("id_type") == "str" else range(n)
    index = VectorIndex.build(list(ids), x, IndexConfig(factory="Flat", **config))
    DurableIndex.create(tmp_path / "idx", index, StoreConfig()).close(snapshot=False)
    return tmp_path / "idx"


def _serve(tmp_path: Path, *args: str, **kwargs) -> ServeProcess:
    return ServeProcess(tmp_path / "idx", *args, log=tmp_path / "serve.log", token=TOKEN, **kwargs)


def _unit(i: int) -> list[float]:
    return [1.0 if j == i else 0.0 for j in range(DIM)]


@pytest.mark.slow
def test_overflowing_vectors_are_stored_normalized_and_replay_after_kill(tmp_path):
    """Item 1: a component of 1e20 overflowed the float32 norm: stored as zeros, and after
    kill -9 the replay refused the record (/ready 503 for ever)."""
    _index(tmp_path)
    big = [0.0] * DIM
    big[3] = 1e20
    tiny = [0.0] * DIM
    tiny[5] = -1e-30  # its square underflows even in float64 without scaling
    with _serve(tmp_path) as srv:
        srv.wait_ready()
        items = [{"id": 100, "vector": big}, {"id": 101, "vector": tiny}]
        assert srv.client.post("/v1/items", json={"items": items}).status_code == 200
        np.testing.assert_allclose(srv.client.get("/v1/items/100").json()["vector"], _unit(3))
        srv.kill()
    with _serve(tmp_path) as srv:
        assert srv.wait_ready(timeout=30)["items"] == 22
        np.testing.assert_allclose(srv.client.get("/v1/items/100").json()["vector"], _unit(3))
        np.testing.assert_allclose(
            srv.client.get("/v1/items/101").json()["vector"], -np.asarray(_unit(5))
        )
        r = srv.client.post("/v1/search", json={"vectors": [big], "k": 1})
        assert r.json()["results"][0]["ids"] == [100]
        srv.kill()
    info = run_coldstart("index", "info", "--index", str(tmp_path / "idx"))
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["live_items"] == 22


@pytest.mark.slow
def test_unnormalized_index_keeps_scores_finite(tmp_path):
    """Item 2: with --no-normalize, a 3e38 query (or one stored 3e38 vector) made every score
    inf: `Out of range float values are not JSON compliant`, a 500 without any token."""
    _index(tmp_path, normalize=False, metric="ip")
    # A vector that an older server acknowledged before the bounds existed: replay keeps it.
    wal = WriteAheadLog(tmp_path / "idx" / "wal.log")
    wal.append(WalRecord(0, OP_UPSERT, [999], np.full((1, DIM), 3e38, dtype=np.float32)))
    wal.close()
    query = np.random.default_rng(1).standard_normal((2, DIM)).tolist()
    with _serve(tmp_path) as srv:
        assert srv.wait_ready()["items"] == 21
        for huge in (3e38, -3e38):
            r = srv.client.post("/v1/search", json={"vectors": [[huge] * DIM], "k": 3})
            assert r.status_code == 422 and "1000000000000000" in r.json()["detail"], r.text
            item = {"id": 500, "vector": [huge] * DIM}
            assert srv.client.post("/v1/items", json={"items": [item]}).status_code == 422
        r = srv.client.post("/v1/search", json={"vectors": query, "k": 5})
        assert r.status_code == 200, r.text
        scores = [s for res in r.json()["results"] for s in res["scores"]]
        assert len(scores) == 10 and all(math.isfinite(s) for s in scores)
        ok = {"id": 501, "vector": [1e15] + [0.0] * (DIM - 1)}  # the bound itself is accepted
        assert srv.client.post("/v1/items", json={"items": [ok]}).status_code == 200
        r = srv.client.get("/v1/items/501/neighbors", params={"k": 3})
        assert r.status_code == 200 and all(math.isfinite(s) for s in r.json()["scores"])


REFUSED_IDS = ["b\x00", "a/b", "\ud800", "x\x1fy", "\x85", ".", "..", "", "x" * 513]
TRICKY_IDS = [
    "b", "b ", " b", "c", "C", "ß", "ss", "\U0001f600", "a?b#c", "%2F", "100%", "a\u200db",
    "e\u0301", "\u00e9", "...", "a.b", "x" * 512, "\u2028", "tab-free\u00a0nbsp",
]  # fmt: skip


@pytest.mark.slow
def test_string_ids_round_trip_exactly_through_log_and_snapshot(tmp_path):
    """Item 3: "b\\0" overwrote "b" after a snapshot (numpy's str dtype drops trailing NULs);
    "a/b" was accepted but could never be read or deleted."""
    _index(tmp_path, id_type="str")
    rng = np.random.default_rng(2)
    vecs = {i: rng.standard_normal(DIM) for i in TRICKY_IDS}
    with _serve(tmp_path) as srv:
        srv.wait_ready()
        for bad in REFUSED_IDS:
            body = json.dumps({"items": [{"id": bad, "vector": _unit(0)}]})  # \ud800 escaped
            r = srv.client.post(
                "/v1/items", content=body, headers={"content-type": "application/json"}
            )
            assert r.status_code == 422, (bad, r.text)
        half = len(TRICKY_IDS) // 2
        for chunk in (TRICKY_IDS[:half], TRICKY_IDS[half:]):
            items = [{"id": i, "vector": vecs[i].tolist()} for i in chunk]
            assert srv.client.post("/v1/items", json={"items": items}).status_code == 200
            if chunk is TRICKY_IDS[:half]:  # the first half goes into a snapshot, the rest
                assert srv.client.post("/v1/snapshot").json()["written"]  # only into the log
        srv.kill()
    with _serve(tmp_path) as srv:
        assert srv.wait_ready()["items"] == 20 + len(TRICKY_IDS)
        srv.client.post("/v1/snapshot")
        srv.kill()
    with _serve(tmp_path) as srv:
        assert srv.wait_ready()["items"] == 20 + len(TRICKY_IDS)
        for item in TRICKY_IDS:
            r = srv.client.get(f"/v1/items/{quote(item, safe='')}")
            assert r.status_code == 200 and r.json()["id"] == item, (item, r.text)
            unit = vecs[item] / np.linalg.norm(vecs[item])
            np.testing.assert_allclose(r.json()["vector"], unit, atol=1e-6)
        for item in TRICKY_IDS:
            assert srv.client.delete(f"/v1/items/{quote(item, safe='')}").status_code == 200
        assert srv.client.get("/ready").json()["items"] == 20


def _acknowledged_upserts(srv: ServeProcess, n: int) -> None:
    rng = np.random.default_rng(3)
    for i in range(n):
        item = {"id": 1000 + i, "vector": rng.standard_normal(DIM).tolist()}
        assert srv.client.post("/v1/items", json={"items": [item]}).status_code == 200


@pytest.mark.slow
def test_a_corrupt_log_refuses_to_start_until_repaired(tmp_path):
    """Item 4: one flipped byte inside record 11 of 100 silently dropped records 11-100, with
    a log line calling them a torn tail that was never acknowledged."""
    idx = _index(tmp_path)
    with _serve(tmp_path) as srv:
        srv.wait_ready()
        _acknowledged_upserts(srv, 100)
        srv.kill()
    wal = idx / "wal.log"
    offsets = scan(wal).offsets
    assert len(offsets) == 100
    data = bytearray(wal.read_bytes())
    data[offsets[10] + 40] ^= 0x20  # one byte inside record 11
    wal.write_bytes(bytes(data))

    with _serve(tmp_path) as srv:
        assert srv.proc.wait(timeout=60) == 2  # refuses to start
        message = srv.stderr()
    assert f"{wal}: corrupt record at byte offset {offsets[10]}" in message, message
    assert "coldstart index repair" in message and "90 acknowledged record(s)" in message
    info = run_coldstart("index", "info", "--index", str(idx))
    assert info.returncode == 2 and f"byte offset {offsets[10]}" in info.stderr
    assert wal.read_bytes() == bytes(data)  # nothing was changed by refusing

    dry = run_coldstart("index", "repair", "--index", str(idx), "--dry-run")
    assert dry.returncode == 0 and wal.read_bytes() == bytes(data)
    refused = run_coldstart("index", "repair", "--index", str(idx))  # issue 23: only when told
    assert refused.returncode == 2 and "--accept-loss" in refused.stderr
    assert wal.read_bytes() == bytes(data)
    fixed = run_coldstart("index", "repair", "--index", str(idx), "--accept-loss")
    assert fixed.returncode == 0, fixed.stderr
    report = json.loads(fixed.stdout)
    assert report["status"] == "corrupt" and report["truncated_at"] == offsets[10]
    assert report["dropped_acknowledged_records"] == 90 and report["dropped_items"] == 89
    assert "dropped 90 acknowledged record(s)" in fixed.stderr
    assert Path(report["cut_bytes_saved_to"]).read_bytes() == bytes(data[offsets[10] :])

    # A torn tail (an incomplete last record) is not corruption: cut off, start, all kept.
    with open(wal, "ab") as handle:
        handle.write(data[offsets[20] : (offsets[20] + offsets[21]) // 2])
    with _serve(tmp_path) as srv:
        assert srv.wait_ready()["items"] == 20 + 10
        srv.kill()
    assert "torn tail" in srv.stderr()


_LIMITED = (
    "import os, resource, sys; "
    "resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1]))); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)


@pytest.mark.slow
def test_a_failed_append_leaves_no_garbage_for_later_appends(tmp_path):
    """Item 4: an append that fails half way (a real EFBIG from RLIMIT_FSIZE, like a full
    disk) must be cut off, so the next acknowledged append does not land behind garbage."""
    _index(tmp_path)
    prefix = (sys.executable, "-c", _LIMITED, "1024")  # every file of the server <= 1 KiB
    rng = np.random.default_rng(4)

    def items(start: int, n: int) -> dict:
        vecs = rng.standard_normal((n, DIM))
        return {"items": [{"id": start + j, "vector": v.tolist()} for j, v in enumerate(vecs)]}

    with _serve(tmp_path, prefix=prefix) as srv:
        srv.wait_ready()
        assert srv.client.post("/v1/items", json=items(100, 1)).status_code == 200
        r = srv.client.post("/v1/items", json=items(200, 50))  # ~2 KiB: cannot fit
        assert r.status_code == 503 and "not stored" in r.json()["detail"], r.text
        assert r.headers.get("retry-after")
        assert srv.client.get("/v1/items/200").status_code == 404  # not applied either
        assert srv.client.post("/v1/items", json=items(300, 1)).status_code == 200
        srv.kill()
    assert scan(tmp_path / "idx" / "wal.log").clean
    with _serve(tmp_path) as srv:
        assert srv.wait_ready()["items"] == 22
        assert srv.client.get("/v1/items/100").status_code == 200
        assert srv.client.get("/v1/items/300").status_code == 200
        assert srv.client.get("/v1/items/200").status_code == 404


@pytest.mark.slow
def test_open_auth_settings_are_warned_about_at_start(tmp_path):
    """Item 7: --insecure-writes and --auth-reads without a token open the server silently."""
    _index(tmp_path)
    log = tmp_path / "open.log"
    with ServeProcess(tmp_path / "idx", "--insecure-writes", "--auth-reads", log=log) as srv:
        srv.wait_ready()
        item = {"items": [{"id": 900, "vector": _unit(1)}]}
        assert srv.client.post("/v1/items", json=item).status_code == 200  # open indeed
        assert srv.client.post("/v1/search", json={"vectors": [_unit(1)]}).status_code == 200
    text = log.read_text()
    assert "WARNING" in text and "--insecure-writes and no token: anyone" in text
    assert "--auth-reads has no effect without a token" in text
