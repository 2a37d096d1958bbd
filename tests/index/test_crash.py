"""Crash test: a separate server process receiving upserts is SIGKILLed at random points."""

from __future__ import annotations

import random
import threading
import time

import httpx
import numpy as np
import pytest

from index.config import IndexConfig, StoreConfig
from index.store import DurableIndex
from index.vector_index import VectorIndex
from tests.index.conftest import ServeProcess

TOKEN = "crash-token"
DIM = 16


def _vec(rng):
    v = rng.standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.mark.slow
def test_acknowledged_writes_survive_sigkill(tmp_path):
    rng = np.random.default_rng(0)
    base = np.stack([_vec(rng) for _ in range(50)])
    index = VectorIndex.build(range(50), base, IndexConfig(factory="Flat"))
    DurableIndex.create(tmp_path / "idx", index, StoreConfig()).close(snapshot=False)
    acked: dict[int, np.ndarray] = {i: base[i] for i in range(50)}
    in_flight: list[dict[int, np.ndarray]] = []
    next_id = [1000]
    killer = random.Random(1)
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def serve() -> ServeProcess:
        args = ("--snapshot-every", "40")
        return ServeProcess(tmp_path / "idx", *args, log=tmp_path / "serve.log", token=TOKEN)

    for _round in range(4):
        with serve() as srv:
            client = srv.client
            ready = srv.wait_ready()
            # Every batch acknowledged before a kill is there; a batch in flight at the
            # kill is there entirely or not at all (the WAL record is all-or-nothing).
            assert ready["items"] in {len(acked) + n for n in (0, *map(len, in_flight))}
            for batch in _check(client, acked, in_flight):
                acked.update(batch)  # durable though never acknowledged: it stays
            in_flight.clear()
            stop = threading.Event()

            def writer(client=client, stop=stop) -> None:
                while not stop.is_set():
                    batch = {next_id[0] + j: _vec(rng) for j in range(7)}
                    next_id[0] += 7
                    in_flight.append(batch)
                    body = {"items": [{"id": i, "vector": v.tolist()} for i, v in batch.items()]}
                    try:
                        r = client.post("/v1/items", json=body, headers=headers)
                    except httpx.TransportError:
                        return
                    if r.status_code != 200:
                        return
                    acked.update(batch)
                    in_flight.remove(batch)

            thread = threading.Thread(target=writer)
            thread.start()
            time.sleep(killer.uniform(0.3, 1.5))
            srv.kill()
            stop.set()
            thread.join()
    assert len(acked) > 50 + 4 * 7, "the writer never got going"
    with serve() as srv:
        srv.wait_ready()
        _check(srv.client, acked, in_flight)


def _check(client, acked, in_flight) -> list[dict]:
    """Assert every acknowledged item is searchable; return the in-flight batches present."""
    ids = list(acked)
    vectors = np.stack([acked[i] for i in ids])
    for start in range(0, len(ids), 200):
        chunk = ids[start : start + 200]
        r = client.post(
            "/v1/search", json={"vectors": vectors[start : start + 200].tolist(), "k": 1}
        )
        assert r.status_code == 200
        assert [res["ids"][0] for res in r.json()["results"]] == chunk
    survivors = []
    for batch in in_flight:
        present = [client.get(f"/v1/items/{i}").status_code == 200 for i in batch]
        assert all(present) or not any(present), "half of a batch survived"
        if all(present):
            survivors.append(batch)
    return survivors
