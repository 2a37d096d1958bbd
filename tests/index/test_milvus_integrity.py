"""Issue 23, item 3: a Milvus Lite collection that lost or changed acknowledged data (a damaged
collection manifest.json) is refused at open, by the store's own record of its count and
order-free digest; kill -9 after acknowledged writes still opens."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from coldstart.index.backend import StoreCorrupt
from coldstart.index.integrity import pair_digest
from tests.index.conftest import REPO_ROOT, ServeProcess
from tests.index.test_backends import needs_milvus

pytestmark = needs_milvus
DIM = 8


def _written(tmp_path: Path) -> str:
    """20 items built and flushed, then 100 acknowledged upserts and 20 deletes, closed."""
    from coldstart.index.milvus_store import MilvusConfig, MilvusStore

    uri = str(tmp_path / "items.db")
    rng = np.random.default_rng(0)
    config = MilvusConfig(uri=uri, index_type="FLAT")
    store = MilvusStore.build(list(range(20)), rng.standard_normal((20, DIM)), config)
    for i in range(100):
        store.upsert([1000 + i], rng.standard_normal((1, DIM)))
    store.delete(list(range(20)))
    store.close()
    return uri


def _open(uri: str):  # noqa: ANN202 - MilvusStore, imported lazily
    from coldstart.index.milvus_store import MilvusConfig, MilvusStore

    return MilvusStore.open(MilvusConfig(uri=uri))


def _flip(data: bytes) -> bytes:
    out = bytearray(data)
    out[len(out) // 2] ^= 0x01
    return bytes(out)


DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "byte_changed": _flip,
    "truncated": lambda data: data[: len(data) // 2],
    "appended": lambda data: data + b'{"garbage": 1}\n',
}


def test_the_digest_is_order_free_and_sees_every_pair() -> None:
    vecs = np.random.default_rng(1).standard_normal((4, DIM)).astype(np.float32)
    assert pair_digest([1, 2, 3, 4], vecs) == pair_digest([3, 1, 4, 2], vecs[[2, 0, 3, 1]])
    assert pair_digest([1, 2, 3, 4], vecs) != pair_digest([1, 2, 3, 5], vecs)
    changed = vecs.copy()
    changed[2, 5] = np.nextafter(changed[2, 5], np.float32(10))
    assert pair_digest([1, 2, 3, 4], vecs) != pair_digest([1, 2, 3, 4], changed)
    assert pair_digest(["1"], vecs[:1]) != pair_digest([1], vecs[:1])


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_collection_manifest_refuses_to_open(tmp_path: Path, damage: str) -> None:
    """Reproducer C: a changed byte made the server ready with 0 items; truncating or
    appending fell back to an older state without 100 upserts and with 20 deleted items."""
    uri = _written(tmp_path)
    with _open(uri) as store:
        assert store.count() == 100  # undamaged: opens
    manifest = Path(uri) / "collections" / "items" / "manifest.json"
    manifest.write_bytes(DAMAGE[damage](manifest.read_bytes()))
    with pytest.raises(StoreCorrupt) as err:
        _open(uri)
    message = str(err.value)
    assert f"{uri}: collection 'items' holds" in message
    assert "says 100 items" in message and "Refusing to open" in message
    # Deleting the record is how an operator accepts what the collection holds now.
    record = Path(f"{uri}.items.coldstart-record")
    assert str(record) in message
    record.unlink()
    with _open(uri) as store:
        assert store.count() != 100
    with _open(uri):  # recorded afresh
        pass


@pytest.mark.slow
def test_serve_exits_2_on_a_damaged_collection(tmp_path: Path) -> None:
    uri = _written(tmp_path)
    manifest = Path(uri) / "collections" / "items" / "manifest.json"
    manifest.write_bytes(_flip(manifest.read_bytes()))
    log = tmp_path / "serve.log"
    with ServeProcess(None, "--backend", "milvus", "--uri", uri, log=log, token="t") as srv:
        assert srv.proc.wait(timeout=120) == 2
        message = srv.stderr()
    assert "Traceback" not in message and "says 100 items" in message, message


@pytest.mark.slow
def test_kill_9_after_acknowledged_writes_still_opens(tmp_path: Path) -> None:
    """The record is updated with every write (the state before and after it), so a process
    killed without flush or close leaves a record the collection matches."""
    uri = str(tmp_path / "items.db")
    code = (
        "import sys, time, numpy as np\n"
        f"sys.path.insert(0, {str(REPO_ROOT)!r})\n"
        "from coldstart.index.milvus_store import MilvusConfig, MilvusStore\n"
        f"s = MilvusStore.create(MilvusConfig(uri={uri!r}, index_type='FLAT'), dim={DIM})\n"
        "rng = np.random.default_rng(0)\n"
        "for i in range(60):\n"
        f"    s.upsert([i % 40], rng.standard_normal((1, {DIM})))\n"
        "s.delete(list(range(5)))\n"
        "print('acknowledged', flush=True)\n"
        "time.sleep(60)\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "acknowledged"  # type: ignore[union-attr]
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    with _open(uri) as store:
        assert store.count() == 35
        store.upsert([100], np.ones((1, DIM)))
    with _open(uri) as store:
        assert store.count() == 36


def test_a_collection_without_a_record_opens_with_a_warning(tmp_path: Path, caplog) -> None:
    uri = _written(tmp_path)
    Path(f"{uri}.items.coldstart-record").unlink()
    with caplog.at_level(logging.WARNING), _open(uri) as store:
        assert store.count() == 100
    assert "no record of collection 'items'" in caplog.text
    assert Path(f"{uri}.items.coldstart-record").exists()
