"""WAL framing, torn tails, snapshots, replay and the manifest."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from coldstart.index.config import IndexConfig, StoreConfig
from coldstart.index.store import DurableIndex, read_manifest
from coldstart.index.vector_index import VectorIndex, unpack_strings
from coldstart.index.wal import (
    OP_DELETE,
    OP_UPSERT,
    WalCorrupt,
    WalRecord,
    WalWriteError,
    WriteAheadLog,
    encode_record,
    repair,
    scan,
)


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
    assert [r.lsn for r in scan(path).records] == [0, 1, 2]


def _log(path, n=3):
    wal = WriteAheadLog(path)
    for lsn in range(n):
        wal.append(_rec(lsn, [lsn]))
    wal.close()
    return len(encode_record(_rec(0, [0])))


@pytest.mark.parametrize("where", ["payload", "length", "magic"])
def test_damage_before_intact_records_is_corruption_not_a_torn_tail(tmp_path, where):
    path = tmp_path / "wal.log"
    size = _log(path, 5)
    data = bytearray(path.read_bytes())
    offset = {"payload": size + 30, "length": size + 5, "magic": size}[where]
    data[offset] ^= 0xFF  # one flipped byte inside the second record
    path.write_bytes(bytes(data))
    found = scan(path)
    assert found.corrupt_at == size and [r.lsn for r in found.records] == [0]
    assert [r.lsn for r in found.after] == [2, 3, 4]
    assert found.dropped_acknowledged(-1) == 4  # the damaged record and the 3 after it
    with pytest.raises(WalCorrupt, match=rf"wal.log: corrupt record at byte offset {size}"):
        WriteAheadLog(path)
    assert path.read_bytes() == bytes(data)  # refusing changes nothing
    report = repair(path)
    assert report["status"] == "corrupt" and report["truncated_at"] == size
    assert report["dropped_acknowledged_records"] == 4 and report["dropped_lsns"] == [2, 4]
    assert path.stat().st_size == size
    assert Path(report["cut_bytes_saved_to"]).read_bytes() == bytes(data[size:])
    assert [r.lsn for r in scan(path).records] == [0] and scan(path).clean


def test_complete_last_record_with_a_bad_checksum_is_corruption(tmp_path):
    path = tmp_path / "wal.log"
    _log(path, 3)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # inside the last record's vectors: complete, so it was acknowledged
    path.write_bytes(bytes(data))
    found = scan(path)
    assert found.corrupt_at is not None and found.reason == "checksum mismatch"
    assert found.dropped_acknowledged(-1) == 1 and not found.after


@pytest.mark.parametrize("tail", ["half", "header", "zeros", "magic"])
def test_incomplete_last_record_is_a_torn_tail(tmp_path, tail):
    path = tmp_path / "wal.log"
    _log(path, 3)
    good = path.stat().st_size
    blob = encode_record(_rec(3, [3, 4]))
    extra = {
        "half": blob[: len(blob) // 2],
        "header": blob[:10],
        "zeros": b"\0" * 300,
        "magic": blob[:3],
    }[tail]
    with open(path, "ab") as handle:
        handle.write(extra)
    found = scan(path)
    assert found.corrupt_at is None and found.torn_bytes == len(extra) and found.end == good
    assert repair(path, dry_run=True)["dropped_acknowledged_records"] == 0
    wal = WriteAheadLog(path)
    assert [r.lsn for r in wal.replayed()] == [0, 1, 2] and path.stat().st_size == good
    wal.close()


class _FailingWrites:
    """os.write that writes half of what it is given, then fails like a full disk."""

    def __init__(self, real):
        self.real, self.armed = real, False

    def __call__(self, fd, data):
        if not self.armed:
            return self.real(fd, data)
        self.real(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failed_append_is_cut_off_so_later_appends_stay_readable(tmp_path, monkeypatch):
    import coldstart.index.wal as wal_module

    path = tmp_path / "wal.log"
    failing = _FailingWrites(os.write)
    monkeypatch.setattr(wal_module.os, "write", failing)
    wal = WriteAheadLog(path)
    wal.append(_rec(0, [1]))
    size = path.stat().st_size
    failing.armed = True
    with pytest.raises(WalWriteError, match="No space left on device"):
        wal.append(_rec(1, [2, 3, 4]))
    assert path.stat().st_size == size  # the half-written record is gone
    failing.armed = False
    wal.append(_rec(1, [5]))
    wal.close()
    found = scan(path)
    assert found.clean and [r.ids for r in found.records] == [[1], [5]]


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
    import coldstart.index.store as store_module

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


def test_format_1_logs_are_still_read(tmp_path):
    import struct
    import zlib

    path = tmp_path / "wal.log"
    v1 = b""
    for lsn in range(2):
        payload = encode_record(_rec(lsn, [lsn]))[16:]  # format 2 has a 16-byte header
        v1 += struct.pack("<4sII", b"CSW1", len(payload), zlib.crc32(payload)) + payload
    path.write_bytes(v1 + v1[: len(v1) // 4])  # plus a torn format-1 tail
    wal = WriteAheadLog(path)
    assert wal.torn_bytes == len(v1) // 4
    wal.append(_rec(2, [2]))  # new records are format 2, after the format-1 ones
    wal.close()
    assert [r.lsn for r in scan(path).records] == [0, 1, 2]


def test_replay_never_refuses_an_acknowledged_record(tmp_path):
    """Records written under older rules (a zero vector from the float32-norm overflow, ids
    that are now refused) were acknowledged: replay applies them as they are."""
    durable, x = _build(tmp_path)
    durable._wal.close()
    legacy = [
        WalRecord(0, OP_UPSERT, [700], np.zeros((1, 8), np.float32)),
        WalRecord(1, OP_UPSERT, [701, 701], np.eye(2, 8, dtype=np.float32)),  # dup: last wins
        WalRecord(2, OP_DELETE, [5], None),
    ]
    wal = WriteAheadLog(tmp_path / "idx" / "wal.log")
    for record in legacy:
        wal.append(record)
    wal.close()
    reopened = DurableIndex.open(tmp_path / "idx")
    assert reopened.replayed == 3 and len(reopened) == 201 and 5 not in reopened.index
    np.testing.assert_array_equal(reopened.index.get([700]), np.zeros((1, 8)))
    np.testing.assert_array_equal(reopened.index.get([701]), np.eye(2, 8)[1:])
    reopened.close(snapshot=False)


def test_string_ids_survive_snapshots_byte_for_byte(tmp_path):
    """Snapshots store string ids as UTF-8 + offsets: exact even for ids the HTTP rules now
    refuse but an older server acknowledged (trailing NUL, lone surrogate)."""
    x = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    ids = ["b", "b\x00", "c\x00", "\ud800", "", "ß "]
    index = VectorIndex(IndexConfig(dim=4, id_type="str"))
    index.upsert(ids, index.prepare(x), _checked=True)  # bypasses today's id rules
    DurableIndex.create(tmp_path / "idx", index, StoreConfig(fsync=False)).close()
    reopened = DurableIndex.open(tmp_path / "idx")
    assert sorted(reopened.index.ids()) == sorted(ids)
    arrays = reopened.index.state_arrays()
    stored = dict(zip(unpack_strings(arrays), arrays["vectors"], strict=True))
    for n, item in enumerate(ids):
        np.testing.assert_allclose(stored[item], index.prepare(x[n])[0])
    reopened.close(snapshot=False)
