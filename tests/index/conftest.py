"""Fixtures for index tests: small clustered data, built indexes, a live uvicorn server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from data.synthetic import clustered_vectors
from index.config import IndexConfig, StoreConfig
from index.store import DurableIndex
from index.vector_index import VectorIndex

REPO_ROOT = Path(__file__).resolve().parents[2]
DIM = 16
N = 600


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def live_server(app: Any) -> Iterator[str]:
    """Run `app` under a real uvicorn server on 127.0.0.1:<random port> in a thread."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def wait_ready(client: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/ready").status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"server not ready: {client.get('/health').json()}")
        time.sleep(0.02)


@pytest.fixture(scope="session")
def vectors() -> np.ndarray:
    return clustered_vectors(N, DIM, n_clusters=12, seed=1)[0]  # (N, DIM)


@pytest.fixture
def durable(tmp_path: Path, vectors: np.ndarray) -> Iterator[DurableIndex]:
    index = VectorIndex.build(list(range(N)), vectors, IndexConfig(factory="Flat", dim=DIM))
    store = DurableIndex.create(tmp_path / "idx", index, StoreConfig(fsync=False))
    yield store
    store.close(snapshot=False)
