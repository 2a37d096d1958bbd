"""Crash test: a separate server process receiving upserts is SIGKILLed at random points."""

from __future__ import annotations

import numpy as np
import pytest

from coldstart.index.config import IndexConfig, StoreConfig
from coldstart.index.store import DurableIndex
from coldstart.index.vector_index import VectorIndex
from tests.index.conftest import ServeProcess
from tests.index.kill_writes import AckedWrites

TOKEN = "crash-token"
DIM = 16


@pytest.mark.slow
def test_acknowledged_writes_survive_sigkill(tmp_path):
    base = np.random.default_rng(0).standard_normal((50, DIM)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    index = VectorIndex.build(range(50), base, IndexConfig(factory="Flat"))
    DurableIndex.create(tmp_path / "idx", index, StoreConfig()).close(snapshot=False)
    writes = AckedWrites(list(range(50)), base, seed=1)
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def serve() -> ServeProcess:
        args = ("--snapshot-every", "40")
        return ServeProcess(tmp_path / "idx", *args, log=tmp_path / "serve.log", token=TOKEN)

    for _round in range(4):
        with serve() as srv:
            ready = srv.wait_ready()
            expected = {len(writes.acked) + len(b) for b in [{}, *writes.in_flight]}
            assert ready["items"] in expected
            writes.check(srv.client)
            writes.write_until_killed(srv, headers, batch=7, seconds=(0.3, 1.5))
    assert len(writes.acked) > 50 + 4 * 7, "the writer never got going"
    with serve() as srv:
        srv.wait_ready()
        writes.check(srv.client)
