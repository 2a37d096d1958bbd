"""Issue 23, items 1 and 2: a truncated or deleted wal.log, and damaged snapshot or manifest
files, are detected at open (the high-water mark, checksums), never served silently."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from coldstart.index.backend import StoreCorrupt
from coldstart.index.config import IndexConfig, StoreConfig
from coldstart.index.integrity import SEAL, IndexDamaged
from coldstart.index.store import FaissStore, RecordsMissing, verify
from coldstart.index.vector_index import VectorIndex
from coldstart.index.wal import HighWaterMark, read_mark, scan
from tests.index.conftest import REPO_ROOT, ServeProcess, run_coldstart

DIM = 8
UPSERTS, DELETES = 100, 20  # one record each: lsn 0..99 upserts, 100..119 deletes
LAST = UPSERTS + DELETES - 1


def _written(tmp_path: Path, snapshot_after: int | None = None) -> Path:
    """An index of 20 items, then 100 one-item upserts and 20 deletes, all acknowledged, and
    the process gone without a snapshot (as after kill -9). snapshot_after: snapshot once
    that many upserts are in."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal((20, DIM)).astype(np.float32)
    index = VectorIndex.build(list(range(20)), base, IndexConfig(factory="Flat"))
    store = FaissStore.create(tmp_path / "idx", index, StoreConfig())
    for i in range(UPSERTS):
        store.upsert([1000 + i], rng.standard_normal((1, DIM)))
        if snapshot_after is not None and i + 1 == snapshot_after:
            store.snapshot()
    for i in range(DELETES):
        store.delete([i])
    store.close(snapshot=False)
    return tmp_path / "idx"


def _refused_to_serve(tmp_path: Path, idx: Path) -> str:
    """`coldstart serve` exits 2 before binding its port, with a message and no traceback."""
    with ServeProcess(idx, log=tmp_path / "serve.log", token="t") as srv:
        assert srv.proc.wait(timeout=60) == 2
        message = srv.stderr()
    assert "Traceback" not in message, message
    return message


def _flip(path: Path, at: float) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x01
    path.write_bytes(bytes(data))


def test_the_mark_follows_every_acknowledged_write(tmp_path):
    idx = _written(tmp_path)
    assert read_mark(idx / "wal.mark") == LAST
    assert [r.lsn for r in scan(idx / "wal.log").records] == list(range(LAST + 1))
    # A torn write of the newest slot leaves the other slot's (older) value readable.
    mark = HighWaterMark(tmp_path / "m", 5)  # both slots hold 5
    mark.set(6)  # the third write: slot 1
    mark.close()
    data = bytearray((tmp_path / "m").read_bytes())
    assert len(data) == 48  # two slots of 24 bytes
    data[24 + 14] ^= 0xFF
    (tmp_path / "m").write_bytes(bytes(data))
    assert read_mark(tmp_path / "m") == 5
    data[8] ^= 0xFF
    (tmp_path / "m").write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match="no intact high-water mark"):
        read_mark(tmp_path / "m")


def test_the_mark_reaches_the_disk_off_the_writers_path(tmp_path, monkeypatch):
    """Each set() is a pwrite only; a background thread fdatasyncs within the interval."""
    import os
    import time

    synced: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (synced.append(fd), real(fd)))
    mark = HighWaterMark(tmp_path / "m", -1, sync_interval_s=0.05)
    synced.clear()
    for lsn in range(100):
        mark.set(lsn)
    assert len(synced) <= 2  # not one per write
    deadline = time.monotonic() + 5
    while not synced and time.monotonic() < deadline:
        time.sleep(0.01)
    assert synced, "the written mark was never synced"
    synced.clear()
    time.sleep(0.2)
    assert not synced  # nothing new written: nothing to sync
    mark.close()
    assert read_mark(tmp_path / "m") == 99


@pytest.mark.slow
def test_a_log_truncated_to_40_percent_refuses_to_serve_until_the_loss_is_accepted(tmp_path):
    """Reproducer A: truncated to 40%, the server started ready with 100 acknowledged upserts
    gone and 20 deleted items back, calling it a torn tail."""
    idx = _written(tmp_path)
    wal = idx / "wal.log"
    data = wal.read_bytes()
    wal.write_bytes(data[: int(len(data) * 0.4)])
    kept = len(scan(wal).records)
    message = _refused_to_serve(tmp_path, idx)
    assert f"{wal}: {LAST + 1 - kept} acknowledged record(s) missing, lsn {kept}..{LAST}" in message
    assert "--accept-loss" in message and "torn tail" not in message

    before = wal.read_bytes()
    refused = run_coldstart("index", "repair", "--index", str(idx))
    assert refused.returncode == 2 and "--accept-loss" in refused.stderr
    assert wal.read_bytes() == before  # nothing changed without the flag
    done = run_coldstart("index", "repair", "--index", str(idx), "--accept-loss")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["missing_lsns"] == [[kept, LAST]]
    assert report["dropped_acknowledged_records"] == LAST + 1 - kept
    assert f"dropped {LAST + 1 - kept} acknowledged record(s)" in done.stderr
    store = FaissStore.open(idx)
    assert store.count() == 20 + kept and store.lsn == kept - 1
    store.close(snapshot=False)


@pytest.mark.parametrize("damage", ["delete", "truncate_to_0"])
def test_a_deleted_or_emptied_log_refuses_to_open(tmp_path, damage):
    """Reproducer A: deleting wal.log, or truncating it to 0, lost everything silently."""
    idx = _written(tmp_path)
    wal = idx / "wal.log"
    if damage == "delete":
        wal.unlink()
    else:
        wal.write_bytes(b"")
    with pytest.raises(RecordsMissing) as err:
        FaissStore.open(idx)
    assert err.value.missing == [[0, LAST]] and err.value.count == LAST + 1
    assert str(wal) in str(err.value)
    assert ("is missing" in str(err.value)) == (damage == "delete")
    with pytest.raises(RecordsMissing):
        verify(idx)  # what `serve` checks before binding its port


def test_records_after_a_snapshot_are_covered_and_a_snapshot_clears_the_need(tmp_path):
    idx = _written(tmp_path, snapshot_after=50)
    (idx / "wal.log").write_bytes(b"")
    with pytest.raises(RecordsMissing) as err:
        FaissStore.open(idx)
    assert err.value.missing == [[50, LAST]]  # 0..49 are in the snapshot
    # A clean close snapshots: the log is reset and nothing is missing.
    idx2 = _written(tmp_path / "b")
    store = FaissStore.open(idx2)
    store.close()
    assert (idx2 / "wal.log").stat().st_size == 0
    FaissStore.open(idx2).close()


@pytest.mark.slow
def test_a_flipped_byte_in_the_snapshot_index_refuses_to_serve(tmp_path):
    """Reproducer B: one flipped byte in snapshot-*/index.faiss served wrong neighbours."""
    idx = _written(tmp_path, snapshot_after=UPSERTS)
    snap = idx / json.loads((idx / "manifest.json").read_text())["snapshot"]
    _flip(snap / "index.faiss", 0.5)
    message = _refused_to_serve(tmp_path, idx)
    assert f"{snap / 'index.faiss'}: sha256" in message and "damaged" in message, message


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("items.npz", lambda p: _flip(p, 0.7)),
        ("items.npz", lambda p: p.write_bytes(p.read_bytes()[:100])),
        ("state.json", lambda p: p.write_text(p.read_text().replace('"lsn"', '"lsm"'))),
        ("index.faiss", lambda p: p.unlink()),
    ],
)
def test_damaged_snapshot_files_are_named(tmp_path, name, damage):
    idx = _written(tmp_path, snapshot_after=UPSERTS)
    snap = idx / json.loads((idx / "manifest.json").read_text())["snapshot"]
    damage(snap / name)
    with pytest.raises(IndexDamaged) as err:
        FaissStore.open(idx)
    assert err.value.path == snap / name


@pytest.mark.slow
def test_an_edited_manifest_lsn_or_damaged_manifest_refuses_to_serve(tmp_path):
    """Reproducer B: editing the manifest's lsn silently skipped 50 acknowledged records; a
    damaged manifest or items.npz was refused as a raw traceback."""
    idx = _written(tmp_path, snapshot_after=50)
    path = idx / "manifest.json"
    original = path.read_text()
    manifest = json.loads(original)
    path.write_text(json.dumps({**manifest, "lsn": manifest["lsn"] + 50}))
    message = _refused_to_serve(tmp_path, idx)
    assert f"{path}: content does not match its checksum" in message, message
    # Written before checksums (no seal): the lsn is checked against the snapshot's state.
    unsealed = {k: v for k, v in manifest.items() if k != SEAL}
    path.write_text(json.dumps({**unsealed, "lsn": manifest["lsn"] + 50}))
    with pytest.raises(IndexDamaged, match=r"lsn 99 but its snapshot .* through lsn 49"):
        FaissStore.open(idx)
    path.write_text(original[:-40])  # truncated
    assert f"{path}: not a readable manifest" in _refused_to_serve(tmp_path, idx)
    path.write_text(original)
    snap = idx / manifest["snapshot"]
    (snap / "items.npz").write_bytes(b"garbage")
    assert f"{snap / 'items.npz'}: 7 bytes" in _refused_to_serve(tmp_path, idx)


def test_an_index_written_before_checksums_opens_with_a_warning_and_gains_them(tmp_path, caplog):
    idx = _written(tmp_path, snapshot_after=50)
    path = idx / "manifest.json"
    manifest = json.loads(path.read_text())
    old = {k: v for k, v in manifest.items() if k not in (SEAL, "files", "mark")}
    path.write_text(json.dumps(old))
    (idx / "wal.mark").unlink()
    with caplog.at_level(logging.WARNING):
        verify(idx)  # serve checks before binding its port, then opens: one warning, not two
        store = FaissStore.open(idx)
    assert caplog.text.count("written before checksums") == 1
    assert "no high-water mark" in caplog.text
    assert store.count() == 20 + UPSERTS - DELETES
    store.close()  # snapshots: checksums, seal and mark from now on
    upgraded = json.loads(path.read_text())
    assert SEAL in upgraded and upgraded["mark"] == "wal.mark" and len(upgraded["files"]) == 3
    verify(idx)


def test_a_deleted_mark_is_refused_when_the_manifest_names_one(tmp_path):
    idx = _written(tmp_path)
    (idx / "wal.mark").unlink()
    with pytest.raises(StoreCorrupt, match="wal.mark: missing"):
        FaissStore.open(idx)
    done = run_coldstart("index", "repair", "--index", str(idx), "--accept-loss")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["mark_set_to"] == LAST
    FaissStore.open(idx).close(snapshot=False)


@pytest.mark.slow
def test_the_durability_benchmark_prints_every_variant_and_a_summary():
    cmd = [sys.executable, str(REPO_ROOT / "benchmarks" / "durability.py")]
    out = subprocess.run(
        [*cmd, "--upserts", "30", "--rounds", "2", "--dim", "8"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["variant"] for r in rows] == [
        "wal_mark",
        "wal_mark_strict",
        "wal_only",
        "sqlite_log",
        "summary",
    ]
    assert all(r["upserts_per_s"] > 0 and len(r["rounds"]) == 2 for r in rows[:4])
    assert {"mark_cost_pct", "strict_mark_cost_pct", "verify_s"} <= set(rows[-1])
    assert rows[-1]["sqlite_deleted_wal"]["rows_kept"] == 0  # SQLite loses them silently
