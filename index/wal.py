"""Append-only write-ahead log with length + checksum framing.

Record on disk: MAGIC (4 bytes) | payload length (u32) | crc32(payload) (u32) | payload.
Payload: lsn (u64) | op (u8) | header length (u32) | header JSON (ids, dim) | float32 vectors.

A record is acknowledged only after `fsync`. On open, records are read until the first torn or
corrupt one (short read, bad magic, bad checksum); the file is truncated there, so a crash in
the middle of an append loses only that unacknowledged record and never leaves half of it.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data.embeddings import fsync_path

MAGIC = b"CSW1"
_FRAME = struct.Struct("<4sII")  # magic, length, crc32
_HEAD = struct.Struct("<QBI")  # lsn, op, header length
OP_UPSERT = 1
OP_DELETE = 2
MAX_RECORD = 1 << 30


@dataclass
class WalRecord:
    lsn: int
    op: int
    ids: list[Any]
    vectors: np.ndarray | None  # (N, D) float32 for upserts, None for deletes


def encode_record(record: WalRecord) -> bytes:
    header: dict[str, Any] = {"ids": record.ids}
    body = b""
    if record.vectors is not None:
        vecs = np.ascontiguousarray(record.vectors, dtype="<f4")
        header["dim"] = int(vecs.shape[1])
        body = vecs.tobytes()
    head = json.dumps(header, separators=(",", ":")).encode()
    payload = _HEAD.pack(record.lsn, record.op, len(head)) + head + body
    return _FRAME.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def decode_payload(payload: bytes) -> WalRecord:
    lsn, op, head_len = _HEAD.unpack_from(payload, 0)
    start = _HEAD.size
    header = json.loads(payload[start : start + head_len])
    body = payload[start + head_len :]
    vectors = None
    if op == OP_UPSERT:
        dim = int(header["dim"])
        vectors = np.frombuffer(body, dtype="<f4").reshape(-1, dim).astype(np.float32)
    return WalRecord(lsn=lsn, op=op, ids=header["ids"], vectors=vectors)


def scan(path: str | os.PathLike) -> tuple[list[WalRecord], int]:
    """Read every intact record. Returns (records, byte offset of the end of the last one)."""
    records: list[WalRecord] = []
    good = 0
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return records, 0
    pos = 0
    while pos + _FRAME.size <= len(data):
        magic, length, crc = _FRAME.unpack_from(data, pos)
        end = pos + _FRAME.size + length
        if magic != MAGIC or length > MAX_RECORD or end > len(data):
            break
        payload = data[pos + _FRAME.size : end]
        if zlib.crc32(payload) != crc:
            break
        try:
            records.append(decode_payload(payload))
        except (ValueError, KeyError, struct.error):
            break
        pos = good = end
    return records, good


class WriteAheadLog:
    """One append-only file. Not thread-safe by itself: the index serializes writers."""

    def __init__(self, path: str | os.PathLike, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.records, good = scan(self.path)
        self.torn_bytes = 0
        if self.path.exists() and self.path.stat().st_size > good:
            # A torn tail from a crash mid-append: it was never acknowledged, drop it.
            self.torn_bytes = self.path.stat().st_size - good
            with open(self.path, "r+b") as handle:
                handle.truncate(good)
                handle.flush()
                os.fsync(handle.fileno())
        self._fh = open(self.path, "ab")  # noqa: SIM115 - kept open for appends
        self.bytes = good

    def replayed(self) -> Iterator[WalRecord]:
        """Records found when the log was opened (then forgotten, to free memory)."""
        records, self.records = self.records, []
        yield from records

    def append(self, record: WalRecord) -> None:
        """Append and (when configured) fsync: the record is durable when this returns."""
        blob = encode_record(record)
        self._fh.write(blob)
        self._fh.flush()
        if self.fsync:
            os.fsync(self._fh.fileno())
        self.bytes += len(blob)

    def reset(self) -> None:
        """Start an empty log (after a snapshot made every record in it redundant)."""
        self._fh.close()
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "wb") as handle:
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        fsync_path(self.path.parent)
        self._fh = open(self.path, "ab")  # noqa: SIM115
        self.bytes = 0

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()
