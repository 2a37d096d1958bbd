"""Append-only write-ahead log with checksummed framing.

Record on disk (format 2): MAGIC "CSW2" | payload length (u32) | crc32(payload) (u32) |
crc32(the 12 bytes before) (u32) | payload. Format 1 ("CSW1", no header checksum) is still
read. Payload: lsn (u64) | op (u8) | header length (u32) | header JSON (ids, dim) | float32
vectors. Lsns are consecutive: every append takes the next one.

Durability contract:
- A record is acknowledged only after `fsync` returned. An append that fails (disk full, I/O
  error) is cut off again before the error is reported, so no later append lands behind half
  a record.
- A *torn tail* is an incomplete last record: the bytes after the last intact record are
  shorter than a header, or a valid header whose payload runs past the end of the file, or
  only zero bytes (the file grew but the data never reached the disk). It is what a crash in
  the middle of an append leaves; it was never acknowledged, and opening the log cuts it off.
- Anything else is *corruption*: a complete record with a bad checksum, a damaged header, or
  garbage followed by intact records. The log refuses to open (`WalCorrupt`, naming the file
  and the byte offset); `repair()` cuts the log at the bad record, keeps the cut bytes in a
  side file and reports how many acknowledged records were dropped.
- A *high-water mark* (`HighWaterMark`, a small file beside the log) holds the lsn of the last
  acknowledged record; it is written after each append's fsync and before the ack, so a killed
  process never loses it (the kernel holds the write), and fdatasync'd by a background thread
  within `MARK_SYNC_INTERVAL_S` (and on close): after a power cut it lags by at most that long.
  A log that ends before the mark has lost acknowledged records (truncated or deleted file):
  `missing_ranges` names them, and the store refuses to open.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from coldstart.data.embeddings import fsync_path
from coldstart.index.backend import WriteFailed
from coldstart.index.integrity import SlotFile, SlotsUnreadable

MAGIC = b"CSW2"
MAGIC_V1 = b"CSW1"
_FRAME = struct.Struct("<4sIII")  # magic, payload length, crc32(payload), crc32(first 12 bytes)
_FRAME_V1 = struct.Struct("<4sII")  # magic, payload length, crc32(payload)
_HEAD = struct.Struct("<QBI")  # lsn, op, header length
OP_UPSERT = 1
OP_DELETE = 2
MAX_RECORD = 1 << 30
MARK_MAGIC = b"CSM1"
_MARK = struct.Struct("<q")  # the last acknowledged lsn, in a SlotFile
# An fdatasync of the mark per write cost 37% of upsert throughput (benchmarks/durability.py);
# one per interval, off the writer's path, bounds the lag after a power cut. 0: every write.
MARK_SYNC_INTERVAL_S = 0.05


@dataclass
class WalRecord:
    lsn: int
    op: int
    ids: list[Any]
    vectors: np.ndarray | None  # (N, D) float32 for upserts, None for deletes


class WalCorrupt(RuntimeError):
    """A damaged record that is not a torn tail: opening would drop acknowledged writes."""

    def __init__(self, scan: WalScan) -> None:
        self.scan = scan
        super().__init__(scan.describe())


class WalWriteError(WriteFailed):
    """An append failed (disk full, I/O error); nothing of the record is left in the log."""


def encode_record(record: WalRecord) -> bytes:
    header: dict[str, Any] = {"ids": record.ids}
    body = b""
    if record.vectors is not None:
        vecs = np.ascontiguousarray(record.vectors, dtype="<f4")
        header["dim"] = int(vecs.shape[1])
        body = vecs.tobytes()
    # ensure_ascii: every str (NUL, lone surrogates...) round-trips through the JSON exactly.
    head = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode()
    payload = _HEAD.pack(record.lsn, record.op, len(head)) + head + body
    first = struct.pack("<4sII", MAGIC, len(payload), zlib.crc32(payload))
    return first + struct.pack("<I", zlib.crc32(first)) + payload


def decode_payload(payload: bytes) -> WalRecord:
    lsn, op, head_len = _HEAD.unpack_from(payload, 0)
    start = _HEAD.size
    header = json.loads(payload[start : start + head_len])
    body = payload[start + head_len :]
    vectors = None
    if op == OP_UPSERT:
        dim = int(header["dim"])
        vectors = np.frombuffer(body, dtype="<f4").reshape(-1, dim).astype(np.float32)
    elif op != OP_DELETE:
        raise ValueError(f"unknown op {op}")
    if not isinstance(header["ids"], list):
        raise ValueError("ids is not a list")
    return WalRecord(lsn=lsn, op=op, ids=header["ids"], vectors=vectors)


@dataclass
class WalScan:
    """What a log holds. Records are those before the first bad byte (the replayable prefix)."""

    path: Path
    size: int
    records: list[WalRecord] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)  # start byte of each record
    end: int = 0  # end of the last intact record of the prefix
    torn_bytes: int = 0  # incomplete last record (never acknowledged)
    corrupt_at: int | None = None  # first bad byte, when it is not a torn tail
    reason: str = ""
    after: list[WalRecord] = field(default_factory=list)  # intact records past the bad bytes

    @property
    def clean(self) -> bool:
        return self.corrupt_at is None and not self.torn_bytes

    def dropped_acknowledged(self, before_lsn: int) -> int:
        """Acknowledged records lost by cutting at `corrupt_at`: the unreadable ones (counted
        from the consecutive lsns around them) plus the intact ones after them.

        before_lsn: the lsn just before the bad bytes when the prefix is empty (the snapshot's).
        """
        if self.corrupt_at is None:
            return 0
        last_good = self.records[-1].lsn if self.records else before_lsn
        if self.after:
            return max(self.after[-1].lsn - last_good, len(self.after) + 1)
        return 1  # a complete but unreadable last record: it was acknowledged

    def describe(self) -> str:
        if self.corrupt_at is not None:
            tail = (
                f"; {len(self.after)} intact record(s) after it (lsn {self.after[0].lsn}.."
                f"{self.after[-1].lsn}) hold acknowledged writes"
                if self.after
                else ""
            )
            return f"{self.path}: corrupt record at byte offset {self.corrupt_at} ({self.reason}){tail}"
        if self.torn_bytes:
            return f"{self.path}: torn tail of {self.torn_bytes} bytes at byte offset {self.end}"
        return f"{self.path}: {len(self.records)} intact records, {self.size} bytes"


def _frame_at(data: bytes, pos: int) -> tuple[str, int, int]:
    """Classify the bytes at `pos`: ("ok", payload start, end), ("torn", ...) or ("bad", reason)."""
    remaining = len(data) - pos
    magic = data[pos : pos + 4]
    if magic == MAGIC_V1:
        if remaining < _FRAME_V1.size:
            return "torn", 0, 0
        _, length, _ = _FRAME_V1.unpack_from(data, pos)
        start = pos + _FRAME_V1.size
    elif magic == MAGIC:
        if remaining < _FRAME.size:
            return "torn", 0, 0
        _, length, _, head_crc = _FRAME.unpack_from(data, pos)
        if zlib.crc32(data[pos : pos + 12]) != head_crc:
            return "bad", 0, 0
        start = pos + _FRAME.size
    else:
        if remaining < _FRAME.size and (MAGIC.startswith(magic) or MAGIC_V1.startswith(magic)):
            return "torn", 0, 0
        return "bad", 0, 0
    if length > MAX_RECORD:
        return "bad", 0, 0
    end = start + length
    if end > len(data):
        return "torn", start, end
    return "ok", start, end


def _record_at(data: bytes, pos: int) -> tuple[str, WalRecord | None, int, str]:
    """(state, record, end, reason); state is "ok", "torn" or "bad"."""
    state, start, end = _frame_at(data, pos)
    if state == "torn":
        return "torn", None, end, "incomplete record"
    if state == "bad":
        return "bad", None, 0, "bad header"
    crc = struct.unpack_from("<I", data, pos + 8)[0]
    payload = data[start:end]
    if zlib.crc32(payload) != crc:
        return "bad", None, end, "checksum mismatch"
    try:
        return "ok", decode_payload(payload), end, ""
    except (ValueError, KeyError, TypeError, struct.error) as err:
        return "bad", None, end, f"undecodable payload: {err}"


def _intact_after(data: bytes, pos: int) -> list[WalRecord]:
    """Intact records anywhere after `pos` (found by their magic and checksums)."""
    found: list[WalRecord] = []
    search = pos + 1
    while True:
        hits = [i for i in (data.find(MAGIC, search), data.find(MAGIC_V1, search)) if i >= 0]
        if not hits:
            return found
        cand = min(hits)
        state, record, end, _ = _record_at(data, cand)
        if state == "ok" and record is not None:
            found.append(record)
            search = end
        else:
            search = cand + 1


def scan(path: str | os.PathLike) -> WalScan:
    """Read the log and classify its end: clean, torn tail, or corruption (see module doc)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return WalScan(path=path, size=0)
    result = WalScan(path=path, size=len(data))
    pos = 0
    while pos < len(data):
        state, record, end, reason = _record_at(data, pos)
        if state == "ok" and record is not None:
            result.records.append(record)
            result.offsets.append(pos)
            pos = result.end = end
            continue
        after = _intact_after(data, pos)
        rest_is_zero = not data[pos:].strip(b"\0")
        if not after and (state == "torn" or rest_is_zero):
            result.torn_bytes = len(data) - pos
        else:
            result.corrupt_at, result.reason, result.after = pos, reason, after
        break
    return result


def repair(path: str | os.PathLike, before_lsn: int = -1, dry_run: bool = False) -> dict[str, Any]:
    """Cut the log at its first bad byte. The cut bytes go to `<log>.cut-<offset>-<time>`.

    Returns a report: what was found, where the log was cut and how many acknowledged records
    (and items) were dropped. A torn tail drops nothing that was acknowledged.
    """
    found = scan(path)
    report: dict[str, Any] = {
        "wal": str(found.path),
        "bytes": found.size,
        "intact_records": len(found.records),
        "status": "clean",
        "dropped_acknowledged_records": 0,
    }
    if found.clean:
        return report
    cut = found.end if found.corrupt_at is None else found.corrupt_at
    report.update(
        status="torn_tail" if found.corrupt_at is None else "corrupt",
        reason=found.reason or "incomplete last record",
        truncated_at=cut,
        dropped_bytes=found.size - cut,
        dropped_acknowledged_records=found.dropped_acknowledged(before_lsn),
        dropped_intact_records=len(found.after),
        dropped_items=sum(len(r.ids) for r in found.after),
    )
    if found.after:
        report["dropped_lsns"] = [found.after[0].lsn, found.after[-1].lsn]
    if dry_run:
        report["dry_run"] = True
        return report
    with open(found.path, "r+b") as handle:
        handle.seek(cut)
        dropped = handle.read()
        if found.corrupt_at is not None:
            keep = found.path.with_name(f"{found.path.name}.cut-{cut}-{int(time.time())}")
            keep.write_bytes(dropped)
            _fsync_file(keep)
            report["cut_bytes_saved_to"] = str(keep)
        handle.truncate(cut)
        handle.flush()
        os.fsync(handle.fileno())
    fsync_path(found.path.parent)
    return report


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


class WriteAheadLog:
    """One append-only file. Not thread-safe by itself: the index serializes writers.

    Opening cuts off a torn tail and raises `WalCorrupt` on corruption (nothing is changed).
    """

    def __init__(
        self, path: str | os.PathLike, fsync: bool = True, mark: HighWaterMark | None = None
    ) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.mark = mark  # advanced after each durable append, before the ack
        found = scan(self.path)
        if found.corrupt_at is not None:
            raise WalCorrupt(found)
        self.records = found.records
        self.torn_bytes = found.torn_bytes
        if found.torn_bytes:
            # A crash mid-append left an incomplete last record; it was never acknowledged.
            with open(self.path, "r+b") as handle:
                handle.truncate(found.end)
                handle.flush()
                os.fsync(handle.fileno())
        self._fd = self._open()
        self.bytes = found.end
        self._broken: BaseException | None = None

    def _open(self) -> int:
        # Unbuffered: a failed write leaves nothing in a user-space buffer to be flushed later.
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def replayed(self) -> Iterator[WalRecord]:
        """Records found when the log was opened (then forgotten, to free memory)."""
        records, self.records = self.records, []
        yield from records

    def append(self, record: WalRecord) -> None:
        """Append and (when configured) fsync: the record is durable when this returns.

        On failure the partial record is cut off again and WalWriteError is raised; if even
        that fails, the log refuses further appends until it is reopened (restart).
        """
        if self._broken is not None:
            raise WalWriteError(
                errno.EIO,
                f"the write-ahead log is unusable after a failed append ({self._broken}); "
                "restart the server",
            )
        blob = encode_record(record)
        try:
            view = memoryview(blob)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            if self.fsync:
                os.fsync(self._fd)
            if self.mark is not None:
                self.mark.advance(record.lsn)
        except OSError as err:
            self._cut_back(err)
            if self.mark is not None:  # a half-done mark write must not claim this record
                with contextlib.suppress(OSError):
                    self.mark.set(self.mark.lsn)
            raise WalWriteError(
                err.errno or errno.EIO,
                f"write-ahead log append failed ({err.strerror or err}); nothing was written",
            ) from err
        self.bytes += len(blob)

    def _cut_back(self, cause: OSError) -> None:
        try:
            os.ftruncate(self._fd, self.bytes)
            os.fsync(self._fd)
        except OSError as err:  # pragma: no cover - the disk is failing harder
            self._broken = err
            raise WalWriteError(
                cause.errno or errno.EIO,
                f"write-ahead log append failed ({cause}) and cutting off the partial record "
                f"failed too ({err}): restart the server",
            ) from err

    def reset(self) -> None:
        """Start an empty log (after a snapshot made every record in it redundant)."""
        os.close(self._fd)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "wb") as handle:
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        fsync_path(self.path.parent)
        self._fd = self._open()
        self.bytes = 0
        self._broken = None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self.mark is not None:
            self.mark.close()


class MarkUnreadable(SlotsUnreadable):
    """Neither slot of a high-water mark file holds an intact value."""


def read_mark(path: str | os.PathLike) -> int | None:
    """The last acknowledged lsn in a mark file; None when there is no file."""
    try:
        payload = SlotFile.read(path, MARK_MAGIC, _MARK.size)
    except SlotsUnreadable as err:
        raise MarkUnreadable(f"{path}: no intact high-water mark") from err
    return None if payload is None else _MARK.unpack(payload)[0]


class HighWaterMark:
    """The lsn of the last acknowledged record, in a SlotFile: in the OS with every write,
    on the disk within `sync_interval_s` (0: before `set` returns) and on close."""

    def __init__(
        self,
        path: str | os.PathLike,
        lsn: int,
        fsync: bool = True,
        sync_interval_s: float = MARK_SYNC_INTERVAL_S,
    ) -> None:
        self.path = Path(path)
        self.lsn = lsn
        self._file = SlotFile(path, MARK_MAGIC, _MARK.pack(lsn), fsync, sync_interval_s)

    @property
    def sync_interval_s(self) -> float | None:
        return self._file.sync_interval_s

    @sync_interval_s.setter
    def sync_interval_s(self, value: float | None) -> None:
        self._file.sync_interval_s = value

    def set(self, lsn: int, sync: bool = False) -> None:
        """Record `lsn` as the last acknowledged record."""
        self._file.write(_MARK.pack(lsn), sync=sync)
        self.lsn = lsn

    def advance(self, lsn: int) -> None:
        if lsn > self.lsn:
            self.set(lsn)

    def close(self) -> None:
        self._file.close()


def missing_ranges(after_lsn: int, acknowledged: int, present: list[int]) -> list[list[int]]:
    """The lsns in (after_lsn, acknowledged] not in `present`, as [first, last] runs."""
    runs: list[list[int]] = []
    expect = after_lsn + 1
    for lsn in sorted({p for p in present if after_lsn < p <= acknowledged}):
        if lsn > expect:
            runs.append([expect, lsn - 1])
        expect = lsn + 1
    if expect <= acknowledged:
        runs.append([expect, acknowledged])
    return runs
