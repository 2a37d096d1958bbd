"""Fixtures for index tests: small clustered data, built indexes, a live uvicorn server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from coldstart.data.synthetic import clustered_vectors
from coldstart.index.config import IndexConfig, StoreConfig
from coldstart.index.server import serve_in_thread
from coldstart.index.store import DurableIndex
from coldstart.index.vector_index import VectorIndex

REPO_ROOT = Path(__file__).resolve().parents[2]
DIM = 16
N = 600


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def live_server(app: Any) -> AbstractContextManager[str]:
    """Run `app` under a real uvicorn server on 127.0.0.1:<random port> in a thread."""
    return serve_in_thread(app)


def run_coldstart(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m coldstart ARGS` from the repository root, output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "coldstart", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_ready(client: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/ready").status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"server not ready: {client.get('/health').json()}")
        time.sleep(0.02)


class ServeProcess:
    """A real `coldstart serve` in its own process on 127.0.0.1 (kill -9 with `kill()`).

    stderr goes to `log` (a file, so a chatty server never blocks on a full pipe).
    prefix: argv run before the server's (e.g. a wrapper that sets resource limits and execs).
    """

    def __init__(
        self,
        index_dir: Path | None,
        *args: str,
        log: Path,
        token: str | None = None,
        prefix: tuple[str, ...] = (),
    ) -> None:
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        env.pop("COLDSTART_API_TOKEN", None)
        if token is not None:
            env["COLDSTART_API_TOKEN"] = token
        cmd = [*prefix, sys.executable, "-m", "coldstart", "serve"]
        if index_dir is not None:  # None: the store is named by args (--backend milvus --uri)
            cmd += ["--index", str(index_dir)]
        cmd += ["--port", str(self.port), "--log-level", "warning", *args]
        self.log = log
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(
                cmd, env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=err
            )
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=self.url, timeout=30, headers=headers)

    def wait_ready(self, timeout: float = 60) -> dict:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited ({self.proc.returncode}): {self.stderr()}")
            try:
                r = self.client.get("/ready")
                if r.status_code == 200:
                    return r.json()
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server never became ready: {self.stderr()}")

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def kill(self) -> None:
        """SIGKILL: no shutdown hook, no snapshot."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def close(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def milvus_server(data_dir: Path, port: int) -> subprocess.Popen:
    """Milvus Lite's own gRPC server in its own process: a Milvus server at a URI."""
    cmd = [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data_dir)]
    proc = subprocess.Popen(
        [*cmd, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
        time.sleep(0.1)


@pytest.fixture(scope="session")
def vectors() -> np.ndarray:
    return clustered_vectors(N, DIM, n_clusters=12, seed=1)[0]  # (N, DIM)


@pytest.fixture
def durable(tmp_path: Path, vectors: np.ndarray) -> Iterator[DurableIndex]:
    index = VectorIndex.build(list(range(N)), vectors, IndexConfig(factory="Flat", dim=DIM))
    store = DurableIndex.create(tmp_path / "idx", index, StoreConfig(fsync=False))
    yield store
    store.close(snapshot=False)
