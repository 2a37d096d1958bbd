"""WAL framing, torn tails, snapshots, replay and the manifest."""

from __future__ import annotations

import os

import numpy as np
import pytest

from index.config import IndexConfig, StoreConfig
from index.store import DurableIndex, read_manifest
from index.vector_index import VectorIndex
from index.wal import OP_DELETE, OP_UPSERT, WalRecord, WriteAheadLog, encode_record, scan


def _rec(lsn: int, ids: list, dim: int = 4) -> WalRecord:
    vecs = np.arange(len(ids) * dim, dtype=np.float32).reshape(len(ids), dim) + lsn
    return WalRecord(lsn=lsn, op=OP_UPSERT, ids=ids, vectors=vecs)


def test_wal_roundtrip_and_torn_tail(tmp_path):
    path = tmp_path / "wal.log"
    wal = WriteAheadLog(path)
    wal.append(_rec(0, [1, 2]))
    wal.append(WalRecord(lsn=1, op=OP_DELETE, ids=["a"], vectors=None))
    wal.close()
    good_size = path.stat().st_size
    # A crash mid-append: half of a third record reaches the disk.
    blob = encode_record(_rec(2, [3, 4, 5]))
    with open(path, "ab") as handle:
        handle.write(blob[: len(blob) // 2])
    wal = WriteAheadLog(path)
    records = list(wal.replayed())
    assert [r.lsn for r in records] == [0, 1]
    np.testing.assert_array_equal(records[0].vectors, _rec(0, [1, 2]).vectors)
    assert records[1].op == OP_DELETE and records[1].ids == ["a"] and records[1].vectors is None
    assert wal.torn_bytes == len(blob) // 2 and path.stat().st_size == good_size
    wal.append(_rec(2, [3]))  # appends continue cleanly after the truncation point
    wal.close()
    assert [r.lsn for r in scan(path)[0]] == [0, 1, 2]


def test_wal_checksum_stops_at_corruption(tmp_path):
    path = tmp_path / "wal.log"
    wal = WriteAheadLog(path)
    for lsn in range(3):
        wal.append(_rec(lsn, [lsn]))
    wal.close()
    data = bytearray(path.read_bytes())
    size = len(encode_record(_rec(0, [0])))
    data[size + 20] ^= 0xFF  # flip a byte inside the second record's payload
    path.write_bytes(bytes(data))
    records, good = scan(path)
    assert [r.lsn for r in records] == [0] and good == size


def _build(tmp_path, n=200, factory="Flat", fsync=True, every=10**9):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 8)).astype(np.float32)
    index = VectorIndex.build(range(n), x, IndexConfig(factory=factory))
    store = StoreConfig(fsync=fsync, snapshot_every_ops=every)
    return DurableIndex.create(tmp_path / "idx", index, store, source={"test": True}), x


@pytest.mark.parametrize("factory", ["Flat", "HNSW16", "IVF8,Flat"])
def test_replay_after_crash_without_snapshot(tmp_path, factory):
    durable, x = _build(tmp_path, factory=factory)
    new = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    durable.upsert([1000, 1001, 1002], new)
    durable.delete([5, 6])
    durable.upsert([7], new[:1])
    # "Crash": drop the object without close() or a snapshot; only the WAL has the writes.
    durable._wal.close()
    reopened = DurableIndex.open(tmp_path / "idx")
    assert reopened.replayed == 3 and reopened.lsn == 2
    assert len(reopened) == 201
    assert 5 not in reopened.index and 6 not in reopened.index
    got = reopened.index.get([1000, 1001, 1002, 7])
    expected = new / np.linalg.norm(new, axis=1, keepdims=True)
    np.testing.assert_allclose(got, np.concatenate([expected, expected[:1]]), atol=1e-6)
    assert reopened.search(new[:1], 2).ids[0][0] in (1000, 7)
    # lsns continue after the replayed ones
    assert reopened.upsert([2000], new[:1]) == 3
    reopened.close()


def test_snapshot_resets_wal_and_manifest(tmp_path):
    durable, x = _build(tmp_path)
    durable.upsert([500], x[:1])
    assert durable.snapshot() is True
    assert durable.snapshot() is False  # nothing new
    assert (tmp_path / "idx" / "wal.log").stat().st_size == 0
    manifest = read_manifest(tmp_path / "idx")
    assert manifest["factory"] == "Flat" and manifest["metric"] == "ip" and manifest["dim"] == 8
    assert (
        manifest["ntotal"] == 201 and manifest["lsn"] == 0 and manifest["source"] == {"test": True}
    )
    snaps = [p.name for p in (tmp_path / "idx").iterdir() if p.name.startswith("snapshot-")]
    assert snaps == [manifest["snapshot"]]  # older snapshots were removed
    durable.delete([500])
    durable.close()  # snapshots on close
    reopened = DurableIndex.open(tmp_path / "idx")
    assert reopened.replayed == 0 and 500 not in reopened.index and len(reopened) == 200
    reopened.close(snapshot=False)


def test_crash_between_snapshot_steps_is_harmless(tmp_path, monkeypatch):
    durable, x = _build(tmp_path)
    durable.upsert([900], x[:1])
    durable.upsert([901], x[1:2])
    wal_before = (tmp_path / "idx" / "wal.log").read_bytes()
    durable.snapshot()
    durable._wal.close()
    # Case 1: crash after the snapshot and the manifest, before the WAL reset: old records
    # are still in the log and must be skipped, not applied twice.
    (tmp_path / "idx" / "wal.log").write_bytes(wal_before)
    reopened = DurableIndex.open(tmp_path / "idx")
    assert reopened.replayed == 0 and len(reopened) == 202
    reopened.upsert([902], x[2:3])
    # Case 2: crash after renaming the new snapshot into place, before the manifest names it.
    import index.store as store_module

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(store_module, "atomic_write_json", crash)
    with pytest.raises(KeyboardInterrupt):
        reopened.snapshot()
    monkeypatch.undo()
    reopened._wal.close()
    snaps = sorted(p.name for p in (tmp_path / "idx").iterdir() if p.name.startswith("snapshot-"))
    assert len(snaps) == 2  # the orphan is on disk, the manifest still names the old one
    again = DurableIndex.open(tmp_path / "idx")
    assert again.replayed == 1 and 902 in again.index and len(again) == 203
    snaps = [p.name for p in (tmp_path / "idx").iterdir() if p.name.startswith("snapshot-")]
    assert snaps == [read_manifest(tmp_path / "idx")["snapshot"]]
    again.close(snapshot=False)


def test_automatic_snapshot_and_temp_dirs_cleaned(tmp_path):
    durable, x = _build(tmp_path, every=5)
    stale = tmp_path / "idx" / ".snapshot-000000000099.tmp-1"
    stale.mkdir()
    for i in range(3):
        durable.upsert([300 + 2 * i, 301 + 2 * i], x[:2])
    durable._snapshot_thread.join()
    manifest = read_manifest(tmp_path / "idx")
    assert manifest["lsn"] >= 2 and manifest["ntotal"] >= 206
    assert not stale.exists()
    durable.close()


def test_open_rejects_bad_directories(tmp_path):
    with pytest.raises(FileNotFoundError):
        DurableIndex.open(tmp_path)
    durable, _ = _build(tmp_path)
    with pytest.raises(FileExistsError):
        DurableIndex.create(tmp_path / "idx", durable.index)
    durable.close()
    with pytest.raises(ValueError):
        DurableIndex.open(tmp_path / "idx", overrides={"dim": 3})
    opened = DurableIndex.open(tmp_path / "idx", overrides={"ef_search": 7})
    assert opened.index.config.ef_search == 7
    opened.close(snapshot=False)
    assert os.listdir(tmp_path / "idx")
