"""Shared by the kill -9 tests (FAISS store and Milvus Lite behind `coldstart serve`): a writer
thread upserting batches until the server dies, and the checks of what must have survived."""

from __future__ import annotations

import random
import threading
import time

import httpx
import numpy as np


class AckedWrites:
    """What the server acknowledged (`acked`) and the batches it had not answered yet."""

    def __init__(self, ids: list[int], vectors: np.ndarray, seed: int) -> None:
        self.acked: dict[int, np.ndarray] = dict(zip(ids, vectors, strict=True))
        self.in_flight: list[dict[int, np.ndarray]] = []
        self.dim = vectors.shape[1]
        self._next_id = max(ids) + 1000
        self._rng = np.random.default_rng(seed)
        self._killer = random.Random(seed)

    def unit_vector(self) -> np.ndarray:
        v = self._rng.standard_normal(self.dim).astype(np.float32)
        return v / np.linalg.norm(v)

    def write_until_killed(
        self, server: object, headers: dict[str, str], batch: int, seconds: tuple[float, float]
    ) -> None:
        """Upsert batches of `batch` items from a thread; SIGKILL `server` (a ServeProcess)
        after a random delay in `seconds`, then wait for the writer to notice."""
        client: httpx.Client = server.client  # type: ignore[attr-defined]
        stop = threading.Event()

        def writer() -> None:
            while not stop.is_set():
                items = {self._next_id + j: self.unit_vector() for j in range(batch)}
                self._next_id += batch
                self.in_flight.append(items)
                body = {"items": [{"id": i, "vector": v.tolist()} for i, v in items.items()]}
                try:
                    r = client.post("/v1/items", json=body, headers=headers)
                except httpx.TransportError:
                    return
                if r.status_code != 200:
                    return
                self.acked.update(items)
                self.in_flight.remove(items)

        thread = threading.Thread(target=writer)
        thread.start()
        time.sleep(self._killer.uniform(*seconds))
        server.kill()  # type: ignore[attr-defined]
        stop.set()
        thread.join()

    def check(self, client: httpx.Client) -> None:
        """Every acknowledged item is its own nearest neighbour; a batch in flight at the kill
        is there entirely (then it counts as written) or not at all (the log record is
        all-or-nothing)."""
        for items in self.in_flight:
            present = [client.get(f"/v1/items/{i}").status_code == 200 for i in items]
            assert all(present) or not any(present), "half of a batch survived"
            if all(present):
                self.acked.update(items)  # durable though never acknowledged: it stays
        self.in_flight.clear()
        ids = list(self.acked)
        vectors = np.stack([self.acked[i] for i in ids])
        for lo in range(0, len(ids), 200):
            body = {"vectors": vectors[lo : lo + 200].tolist(), "k": 1}
            r = client.post("/v1/search", json=body)
            assert r.status_code == 200, r.text
            assert [hit["ids"][0] for hit in r.json()["results"]] == ids[lo : lo + 200]
        assert client.get("/ready").json()["items"] == len(self.acked)
