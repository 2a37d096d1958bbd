"""Checksums for stored index files: a FAISS index directory's manifest seals itself and names
the sha256 and size of every snapshot file; a Milvus collection's own record holds its count
and an order-free digest of its (id, vector) pairs.

Damage found here is reported as `IndexDamaged` (a StoreCorrupt: `coldstart serve` exits 2
with the message, no traceback): which file, what is wrong, and what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from coldstart.data.embeddings import fsync_path, sha256_file
from coldstart.index.backend import StoreCorrupt

SEAL = "manifest_sha256"  # sha256 of the manifest's canonical JSON without this key
FILES = "files"  # {path relative to the directory: {"sha256": hex, "bytes": n}}
DIGEST_MOD = 1 << 64
REBUILD = (
    "Refusing to open: serving it could return wrong results. Restore the directory from a "
    "backup or rebuild it (`coldstart index build`)."
)


class IndexDamaged(StoreCorrupt):
    """A stored file does not match its recorded checksum, size or content."""

    def __init__(self, path: str | os.PathLike, what: str, hint: str = REBUILD) -> None:
        self.path = Path(path)
        self.what = what
        super().__init__(f"{path}: {what}. {hint}")


def _canonical(manifest: dict[str, Any]) -> bytes:
    body = {k: v for k, v in manifest.items() if k != SEAL}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def seal(manifest: dict[str, Any]) -> dict[str, Any]:
    """A copy of `manifest` carrying the checksum of its own content."""
    return {**manifest, SEAL: hashlib.sha256(_canonical(manifest)).hexdigest()}


def load_manifest(path: Path) -> tuple[dict[str, Any], bool]:
    """(manifest, sealed). Raises IndexDamaged when it is not JSON or its seal does not match;
    a manifest without a seal (written before checksums) is returned with sealed=False."""
    try:
        raw = json.loads(path.read_bytes())
    except (UnicodeDecodeError, ValueError) as err:
        raise IndexDamaged(path, f"not a readable manifest ({err})") from err
    if not isinstance(raw, dict):
        raise IndexDamaged(path, "not a readable manifest (not a JSON object)")
    if SEAL not in raw:
        return raw, False
    found = hashlib.sha256(_canonical(raw)).hexdigest()
    if found != raw[SEAL]:
        raise IndexDamaged(
            path, f"content does not match its checksum ({SEAL} {raw[SEAL]!r}, content {found})"
        )
    return raw, True


def digests(directory: Path, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """{name: {"sha256", "bytes"}} of files under `directory` (names relative to it)."""
    return {
        name: {"sha256": sha256_file(directory / name), "bytes": (directory / name).stat().st_size}
        for name in names
    }


def verify_files(directory: Path, expected: dict[str, dict[str, Any]]) -> None:
    """Each file exists with its recorded size and sha256; IndexDamaged names the first that
    does not."""
    for name, want in expected.items():
        path = directory / name
        if not path.is_file():
            raise IndexDamaged(path, "missing (named in manifest.json)")
        size = path.stat().st_size
        if size != want["bytes"]:
            raise IndexDamaged(path, f"{size} bytes, {want['bytes']} recorded: truncated or grown")
        found = sha256_file(path)
        if found != want["sha256"]:
            raise IndexDamaged(
                path, f"sha256 {found} does not match the recorded {want['sha256']}: damaged"
            )


def pair_hashes(ids: Iterable[Any], vectors: np.ndarray) -> list[int]:
    """A 64-bit hash per (id, vector) pair (vectors hashed as float32 bytes)."""
    vecs = np.ascontiguousarray(vectors, dtype="<f4")
    out = []
    for item, row in zip(ids, vecs, strict=True):
        h = hashlib.blake2b(digest_size=8)
        key = f"i{int(item)}" if isinstance(item, int | np.integer) else f"s{item}"
        h.update(key.encode("utf-8", "surrogatepass"))
        h.update(row.tobytes())
        out.append(int.from_bytes(h.digest(), "little"))
    return out


def pair_digest(ids: Iterable[Any], vectors: np.ndarray) -> int:
    """Order-free digest of (id, vector) pairs: the sum mod 2**64 of their `pair_hashes`, so
    a write updates it (subtract the old pair's hash, add the new one) and a scan in any
    order reproduces it."""
    return sum(pair_hashes(ids, vectors)) % DIGEST_MOD


class SlotsUnreadable(RuntimeError):
    """Neither slot of a SlotFile holds an intact value."""


_SLOT_HEAD = struct.Struct("<4sQ")  # magic, write sequence; then the payload, then crc32


class SlotFile:
    """A small fixed-size value rewritten in place, in two checksummed slots written
    alternately: a torn write leaves the other slot's (previous) value readable, and the file
    never changes size, so an fdatasync is one data flush.

    A write is in the OS when `write` returns (a killed process does not lose it) and on the
    disk after `sync`. sync_interval_s: 0 syncs every write; > 0 has a background thread sync
    a written value within that many seconds (off the writer's path); None only on `sync`
    and `close`."""

    def __init__(
        self,
        path: str | os.PathLike,
        magic: bytes,
        payload: bytes,
        fsync: bool = True,
        sync_interval_s: float | None = 0.0,
    ) -> None:
        self.path = Path(path)
        self.magic = magic
        self.fsync = fsync
        self.sync_interval_s = sync_interval_s
        self._size = len(payload)
        self._seq = 0
        self._synced_seq = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._syncer: threading.Thread | None = None
        existed = self.path.exists()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        self.write(payload)
        self.write(payload, sync=True)  # both slots hold it
        if not existed:
            fsync_path(self.path.parent)
        if fsync and sync_interval_s:
            self._syncer = threading.Thread(target=self._sync_loop, daemon=True)
            self._syncer.start()

    def write(self, payload: bytes, sync: bool = False) -> None:
        assert len(payload) == self._size
        with self._lock:
            self._seq += 1
            body = _SLOT_HEAD.pack(self.magic, self._seq) + payload
            slot = body + struct.pack("<I", zlib.crc32(body))
            os.pwrite(self._fd, slot, (self._seq % 2) * len(slot))
        if sync or self.sync_interval_s == 0:
            self.sync()

    def sync(self) -> None:
        """fdatasync when something was written since the last one."""
        with self._lock:
            target = self._seq
        if not self.fsync or target == self._synced_seq:
            return
        os.fdatasync(self._fd)  # covers every pwrite made before `target` was read
        with self._lock:
            self._synced_seq = max(self._synced_seq, target)

    def _sync_loop(self) -> None:
        while self.sync_interval_s and not self._stop.wait(self.sync_interval_s):
            try:
                self.sync()
            except OSError:  # a failing disk: the writer's own log fsync reports it
                return

    def close(self) -> None:
        if self._fd < 0:
            return
        self._stop.set()
        if self._syncer is not None:
            self._syncer.join()
        try:
            self.sync()
        finally:
            os.close(self._fd)
            self._fd = -1

    @staticmethod
    def read(path: str | os.PathLike, magic: bytes, size: int) -> bytes | None:
        """The newest intact payload; None when there is no file; SlotsUnreadable when
        neither slot is intact."""
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            return None
        length = _SLOT_HEAD.size + size + 4
        best: tuple[int, bytes] | None = None
        for at in (0, length):
            slot = data[at : at + length]
            if len(slot) < length:
                continue
            found, seq = _SLOT_HEAD.unpack_from(slot)
            crc = struct.unpack_from("<I", slot, length - 4)[0]
            intact = found == magic and zlib.crc32(slot[: length - 4]) == crc
            if intact and (best is None or seq > best[0]):
                best = (seq, slot[_SLOT_HEAD.size : length - 4])
        if best is None:
            raise SlotsUnreadable(f"{path}: no intact value ({len(data)} bytes)")
        return best[1]
