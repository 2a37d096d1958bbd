"""The FAISS backend of the vector-store protocol (index.backend.VectorStore): a VectorIndex
in a directory, with snapshot + write-ahead log. `FaissStore` (DurableIndex, its older name,
stays as an alias) is the one class callers see; index.vector_index and index.wal are its parts, and
nothing outside them imports faiss for the store.

Directory layout:
    manifest.json            factory, metric, dim, ntotal, id type, source export, snapshot, lsn,
                             sha256 + size of each snapshot file, and its own sha256 (seal)
    snapshot-<lsn>/          index.faiss, items.npz (internal ids, item ids, vectors), state.json
    wal.log                  records with lsn > the snapshot's, fsync'd before each ack
    wal.mark                 the lsn of the last acknowledged record (index.wal.HighWaterMark)

A write is appended to the WAL and fsync'd, then applied, then acknowledged: a write that was
acknowledged survives `kill -9`. Snapshots are written to a temp directory, fsync'd, renamed
into place and only then named in the manifest (atomic rename); the WAL is reset after. Replay
on open skips records the snapshot already holds, so a crash between steps is harmless.

Opening verifies the manifest's seal, every snapshot file's checksum, the snapshot's lsn against
the manifest's, and that the log still holds every record up to the high-water mark; any damage
refuses to open (StoreCorrupt, naming the file). Directories written before checksums open with
a warning and gain them at their next snapshot.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np

from coldstart.data.embeddings import (
    atomic_write_json,
    fsync_path,
    temp_sibling,
    utc_now,
)
from coldstart.index.backend import (
    EF_SEARCH,
    METRIC,
    NO_NORMALIZE,
    NPROBE,
    Backend,
    InvalidInput,
    ItemId,
    Option,
    SearchResult,
    Settings,
    StoreBase,
    StoreCorrupt,
    StoreSchema,
    empty_result,
    exact_search,
)
from coldstart.index.config import IndexConfig, StoreConfig
from coldstart.index.integrity import FILES, IndexDamaged, digests, load_manifest, seal
from coldstart.index.integrity import verify_files as _verify_files
from coldstart.index.vector_index import VectorIndex, _faiss
from coldstart.index.wal import (
    OP_DELETE,
    OP_UPSERT,
    HighWaterMark,
    MarkUnreadable,
    WalCorrupt,
    WalRecord,
    WriteAheadLog,
    missing_ranges,
    read_mark,
    repair,
    scan,
)

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
WAL = "wal.log"
MARK = "wal.mark"
SNAPSHOT_FILES = ("index.faiss", "items.npz", "state.json")
FORMAT = "coldstart-index/1"


class IndexCorrupt(StoreCorrupt):
    """The index directory's write-ahead log is corrupt (not a torn tail): refuse to open."""

    def __init__(self, directory: str | os.PathLike, err: WalCorrupt) -> None:
        self.directory = Path(directory)
        self.scan = err.scan
        lsn = read_manifest(directory)["lsn"]
        dropped = err.scan.dropped_acknowledged(int(lsn))
        super().__init__(
            f"{err}. Refusing to open: replaying only the records before it would silently "
            f"drop acknowledged writes. `coldstart index repair --index {self.directory}` cuts "
            f"the log at byte {err.scan.corrupt_at}, dropping {dropped} acknowledged record(s) "
            "(the cut bytes are kept beside the log)."
        )


class RecordsMissing(StoreCorrupt):
    """The log ends before the high-water mark: acknowledged records are gone."""

    def __init__(self, directory: Path, snapshot_lsn: int, acked: int, present: list[int]) -> None:
        self.missing = missing_ranges(snapshot_lsn, acked, present)
        self.count = sum(b - a + 1 for a, b in self.missing)
        wal = directory / WAL
        state = "is missing" if not wal.exists() else f"holds {len(present)} record(s)"
        runs = ", ".join(f"{a}..{b}" if a != b else str(a) for a, b in self.missing)
        held = (
            f"the snapshot holds them through lsn {snapshot_lsn}"
            if snapshot_lsn >= 0
            else "the snapshot holds none of them"
        )
        super().__init__(
            f"{wal}: {self.count} acknowledged record(s) missing, lsn {runs}: {directory / MARK} "
            f"records every write through lsn {acked} as acknowledged, {held} and the log "
            f"{state}. Refusing to open: serving would "
            "silently lose acknowledged writes. Restore the log from a backup, or accept the "
            f"loss with `coldstart index repair --index {directory} --accept-loss`."
        )


def _acknowledged(directory: Path, manifest: dict[str, Any], present: list[int]) -> int | None:
    """The high-water mark, checked against the log's lsns (`present`): raises RecordsMissing
    or IndexDamaged; None for a directory written before marks (nothing to check)."""
    path = directory / MARK
    hint = f"Accept what the log holds with `coldstart index repair --index {directory} --accept-loss`."
    try:
        acked = read_mark(path)
    except MarkUnreadable as err:
        raise IndexDamaged(
            path, f"unreadable ({err}); cannot tell which writes were acknowledged", hint
        ) from err
    if acked is None:
        if manifest.get("mark"):
            raise IndexDamaged(path, "missing; cannot tell which writes were acknowledged", hint)
        return None
    snapshot_lsn = int(manifest["lsn"])
    if missing_ranges(snapshot_lsn, acked, present):
        raise RecordsMissing(directory, snapshot_lsn, acked, present)
    return acked


def check_wal(directory: str | os.PathLike) -> None:
    """Raise IndexCorrupt when the index's log is corrupt (a torn tail is fine: it is cut off
    when the index opens), RecordsMissing when it lost acknowledged records. Reads the log once
    without loading anything."""
    directory = Path(directory)
    found = scan(directory / WAL)
    if found.corrupt_at is not None:
        raise IndexCorrupt(directory, WalCorrupt(found))
    _acknowledged(directory, read_manifest(directory), [r.lsn for r in found.records])


def verify(directory: str | os.PathLike) -> dict[str, Any]:
    """Everything `open` checks, without loading: the manifest, the snapshot files' checksums,
    the log and the high-water mark. Returns the manifest; raises StoreCorrupt naming the file."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    _verify_files(directory, manifest.get(FILES, {}))
    check_wal(directory)
    return manifest


def repair_index(
    directory: str | os.PathLike, dry_run: bool = False, accept_loss: bool = False
) -> dict[str, Any]:
    """Cut the index's write-ahead log at its first bad record (see index.wal.repair) and set
    the high-water mark to what the log then holds. When that drops acknowledged records it
    changes nothing unless `accept_loss` (report["refused"] says so)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    snapshot_lsn = int(manifest["lsn"])
    wal, mark = directory / WAL, directory / MARK
    report = repair(wal, before_lsn=snapshot_lsn, dry_run=True)
    report.pop("dry_run", None)
    kept = [r.lsn for r in scan(wal).records]  # the records before any cut
    try:
        acked = read_mark(mark)
        if acked is None and manifest.get("mark"):
            report["mark"] = f"{mark} is missing"
    except MarkUnreadable as err:
        acked, report["mark"] = None, str(err)
    if acked is not None:
        missing = missing_ranges(snapshot_lsn, acked, kept)
        if missing:
            count = sum(b - a + 1 for a, b in missing)
            report.update(missing_lsns=missing, acknowledged_through=acked)
            report["dropped_acknowledged_records"] = max(
                report["dropped_acknowledged_records"], count
            )
            if report["status"] != "corrupt":
                report["status"] = "records_missing"
    if dry_run:
        return {**report, "dry_run": True}
    if (report["dropped_acknowledged_records"] or "mark" in report) and not accept_loss:
        return {**report, "refused": True}  # nothing changed
    done = repair(wal, before_lsn=snapshot_lsn)
    if "cut_bytes_saved_to" in done:
        report["cut_bytes_saved_to"] = done["cut_bytes_saved_to"]
    if acked is not None or "mark" in report:  # the mark now says what the log holds
        HighWaterMark(mark, max([snapshot_lsn, *kept])).close()
        report["mark_set_to"] = max([snapshot_lsn, *kept])
    return report


_WARNED_UNSEALED: set[Path] = set()


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """The manifest, its seal checked (IndexDamaged), and its lsn against its snapshot's."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{directory} is not an index directory: no {MANIFEST}")
    raw, sealed = load_manifest(path)
    if raw.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown format {raw.get('format')!r}, expected {FORMAT}")
    if not sealed and path.resolve() not in _WARNED_UNSEALED:
        _WARNED_UNSEALED.add(path.resolve())  # serve checks before binding, then loads: say it once
        log.warning(
            "%s: written before checksums, so its snapshot files are not verified; the next "
            "snapshot (a write, then POST /v1/snapshot or a clean stop) adds them",
            path,
        )
    state_path = directory / str(raw.get("snapshot")) / "state.json"
    try:
        state_lsn = json.loads(state_path.read_text())["lsn"]
    except (OSError, ValueError, KeyError, TypeError):
        return raw  # a damaged state.json is named by its checksum (or by the load)
    if state_lsn != raw.get("lsn"):
        raise IndexDamaged(
            path,
            f"lsn {raw.get('lsn')} but its snapshot {state_path.parent.name} holds the writes "
            f"through lsn {state_lsn} (state.json): edited or mismatched",
        )
    return raw


class FaissStore(StoreBase):
    """The FAISS store: upsert/delete are logged (fsync) before they are applied and
    acknowledged, searches go to the VectorIndex. Thread-safe."""

    backend = "faiss"

    def __init__(
        self,
        directory: str | os.PathLike,
        index: VectorIndex,
        store: StoreConfig,
        manifest: dict[str, Any],
        wal: WriteAheadLog,
        next_lsn: int,
    ) -> None:
        self.directory = Path(directory)
        self.index = index
        self.store = store
        self.manifest = manifest
        self._wal = wal
        self._next_lsn = next_lsn
        self._snapshot_lsn = int(manifest["lsn"])
        self._ops_since_snapshot = 0
        self._write_mutex = threading.Lock()
        self._snapshot_thread: threading.Thread | None = None
        self.replayed = 0
        self.schema: StoreSchema = index.schema
        self._closed = False
        # OpenMP settings are per thread: applied in each thread that searches (tune()).
        self._search_threads = 0
        self._thread_state = threading.local()
        self._seen_threads: int | None = None

    # ----------------------------------------------------------------- create / open
    @classmethod
    def create(
        cls,
        directory: str | os.PathLike,
        index: VectorIndex,
        store: StoreConfig | None = None,
        source: dict[str, Any] | None = None,
    ) -> FaissStore:
        """Persist a (built) VectorIndex as a new index directory; refuses to overwrite one."""
        directory = Path(directory)
        if (directory / MANIFEST).exists():
            raise FileExistsError(f"{directory} already holds an index")
        directory.mkdir(parents=True, exist_ok=True)
        manifest = {
            "format": FORMAT,
            "factory": index.config.factory,
            "metric": index.config.metric,
            "dim": index.dim,
            "id_type": index.config.id_type,
            "normalize": index.config.normalize,
            "config": index.config.to_dict(),
            "source": source or {},
            "created_at": utc_now(),
            "lsn": -1,
            "snapshot": None,
            "ntotal": 0,
            "mark": MARK,
        }
        fsync = (store or StoreConfig()).fsync
        wal = WriteAheadLog(
            directory / WAL, fsync=fsync, mark=HighWaterMark(directory / MARK, -1, fsync)
        )
        self = cls(directory, index, store or StoreConfig(), manifest, wal, next_lsn=0)
        self.snapshot(force=True)
        return self

    @classmethod
    def build(
        cls,
        ids: Any,
        vectors: np.ndarray,
        directory: str | os.PathLike,
        config: IndexConfig,
        store: StoreConfig | None = None,
        source: dict[str, Any] | None = None,
    ) -> FaissStore:
        """A new index directory over (ids (N,), vectors (N, D)); refuses an existing one."""
        if (Path(directory) / MANIFEST).exists():
            raise FileExistsError(f"{directory} already holds an index")
        index = VectorIndex.build(ids, vectors, config)
        return cls.create(directory, index, store, source=source)

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike,
        store: StoreConfig | None = None,
        overrides: dict[str, Any] | None = None,
        verified: bool = False,
    ) -> FaissStore:
        """Verify, load the latest snapshot and replay the WAL.

        overrides: search-time IndexConfig fields (nprobe, ef_search, replica...); the stored
        factory, metric, dim, id type and normalization always win.
        verified: `verify(directory)` just passed (skips hashing the snapshot files again).
        """
        directory = Path(directory)
        manifest = read_manifest(directory)
        if not verified:
            _verify_files(directory, manifest.get(FILES, {}))
        store = store or StoreConfig()
        if not (directory / WAL).exists():  # checked before opening the log creates it
            _acknowledged(directory, manifest, [])
        try:  # first: a corrupt log stops the open before the snapshot is loaded
            wal = WriteAheadLog(directory / WAL, fsync=store.fsync)
        except WalCorrupt as err:
            raise IndexCorrupt(directory, err) from err
        try:
            present = [r.lsn for r in wal.records]
            acked = _acknowledged(directory, manifest, present)
            if acked is None:  # a directory from before marks: start one now
                log.warning("%s: no high-water mark yet; writing one now", directory / MARK)
            last = max([int(manifest["lsn"]), *present, *([acked] if acked is not None else [])])
            wal.mark = HighWaterMark(directory / MARK, last, store.fsync)
            index, replayed, next_lsn = _load(directory, manifest, wal, overrides)
        except BaseException:
            wal.close()
            raise
        self = cls(directory, index, store, manifest, wal, next_lsn)
        self.replayed = replayed
        self._ops_since_snapshot = replayed
        return self

    # ----------------------------------------------------------------- writes
    def upsert(self, ids: list[Any], vectors: Any, prepared: bool = False) -> int:
        """Validate, log (fsync), apply. Returns the record's lsn once durable.
        prepared: ids canonical and vectors from `schema.prepare` (not validated again)."""
        if prepared:
            norm, vecs = list(ids), np.ascontiguousarray(vectors, dtype=np.float32)
            if vecs.shape != (len(norm), self.dim):
                raise InvalidInput(f"{len(norm)} ids but vectors of shape {vecs.shape}")
            if not self.index.is_trained:
                self.index.check_upsert(norm, vecs)  # raises NotTrained
        else:
            norm, vecs = self.index.check_upsert(ids, vectors)
        if not norm:
            raise InvalidInput("nothing to upsert")
        with self._write_mutex:
            lsn = self._next_lsn
            self._wal.append(WalRecord(lsn=lsn, op=OP_UPSERT, ids=norm, vectors=vecs))
            self._next_lsn += 1
            self.index.upsert(norm, vecs, _checked=True)
            self._ops_since_snapshot += len(norm)
        self._maybe_snapshot()
        return lsn

    def delete(self, ids: list[Any]) -> tuple[int, int]:
        """Log and apply a delete. Returns (items removed, lsn); unknown ids are ignored."""
        norm = [self.index.normalize_id(i) for i in ids]
        with self._write_mutex:
            present = [i for i in norm if i in self.index]
            if not present:
                return 0, self._next_lsn - 1
            lsn = self._next_lsn
            self._wal.append(WalRecord(lsn=lsn, op=OP_DELETE, ids=present, vectors=None))
            self._next_lsn += 1
            removed = self.index.delete(present)
            self._ops_since_snapshot += len(present)
        self._maybe_snapshot()
        return removed, lsn

    # ----------------------------------------------------------------- reads
    def get(self, ids: Any) -> np.ndarray:
        """Stored vectors (N, D); UnknownItem when one is absent."""
        return self.index.get(ids)

    def contains(self, ids: Any) -> list[bool]:
        return [self.schema.normalize_id(i) in self.index for i in ids]

    def search(self, queries: Any, k: int, ids: Any = None, prepared: bool = False) -> SearchResult:
        """k nearest items per query (Q, D); `ids` restricts the candidates (scored exactly:
        a candidate set is small next to the index)."""
        q, allowed = self.schema.check_search(queries, k, ids, prepared)
        self._apply_threads()
        if allowed is None:
            return self.index.search(q, k, prepared=True)
        present = [i for i, there in zip(allowed, self.contains(allowed), strict=True) if there]
        if not present or not len(q):
            return empty_result(len(q))
        scores, rows = exact_search(self.index.get(present), q, k, self.metric)
        return SearchResult(ids=[[present[r] for r in row] for row in rows], scores=list(scores))

    def _apply_threads(self) -> None:
        """Give this thread the configured OpenMP thread count (once per thread and value);
        remember what the searching thread sees, for /health."""
        faiss = _faiss()
        wanted = self._search_threads
        local = self._thread_state
        if wanted > 0 and getattr(local, "threads", None) != wanted:
            faiss.omp_set_num_threads(wanted)
            local.threads = wanted
        self._seen_threads = int(faiss.omp_get_max_threads())

    def count(self) -> int:
        return len(self.index)

    def ids(self) -> list[ItemId]:
        """Every live item id, from the id map (a copy: later writes do not change it)."""
        return self.index.ids()

    @property
    def lsn(self) -> int:
        return self._next_lsn - 1

    # ----------------------------------------------------------------- settings and status
    def tune(
        self,
        nprobe: int | None = None,
        ef_search: int | None = None,
        search_threads: int | None = None,
        blas_threshold: int | None = None,
    ) -> None:
        """Search-time settings. search_threads: OpenMP threads per search, applied in each
        thread that searches (0: FAISS's default). blas_threshold: queries per call from which
        flat search uses one BLAS product (a FAISS process-wide setting)."""
        index = self.index
        if nprobe is not None or ef_search is not None:
            with index.frozen():  # no writer mid-change
                if nprobe is not None:
                    index.config.nprobe = int(nprobe)
                if ef_search is not None:
                    index.config.ef_search = int(ef_search)
                index._apply_search_params(index.faiss_index())
        if search_threads is not None:
            self._search_threads = max(0, int(search_threads))
            self._thread_state = threading.local()  # every thread re-applies the new value
        if blas_threshold is not None:
            _faiss().cvar.distance_compute_blas_threshold = int(blas_threshold)

    def health(self) -> dict[str, Any]:
        return {
            "device": self.index.device,
            "backend": f"faiss: {self.index.backend_note}",
            "search_threads": self._seen_threads,
        }

    def info(self) -> dict[str, Any]:
        cfg = self.index.config
        return {
            **self.manifest,
            "backend": self.backend,
            "directory": str(self.directory),
            "index_type": cfg.factory,
            "search_params": {"nprobe": cfg.nprobe, "ef_search": cfg.ef_search},
            **self.schema.to_dict(),
            "live_items": len(self.index),
            "wal_records_replayed": self.replayed,
            "device": self.index.device,
        }

    # ----------------------------------------------------------------- snapshots
    def _maybe_snapshot(self) -> None:
        if self._ops_since_snapshot < self.store.snapshot_every_ops:
            return
        if self._snapshot_thread is not None and self._snapshot_thread.is_alive():
            return
        self._snapshot_thread = threading.Thread(target=self._background_snapshot, daemon=True)
        self._snapshot_thread.start()

    def _background_snapshot(self) -> None:
        try:
            self.snapshot()
        except Exception:  # the WAL still holds every write: retried after the next writes
            log.exception("automatic snapshot of %s failed", self.directory)

    def snapshot(self, force: bool = False) -> bool:
        """Write a snapshot atomically and reset the WAL. False when nothing changed."""
        with self._write_mutex, self.index.frozen():
            lsn = self._next_lsn - 1
            if not force and lsn == self._snapshot_lsn:
                return False
            name = f"snapshot-{lsn + 1:012d}"  # +1 so the empty initial snapshot is 0
            tmp = temp_sibling(self.directory / name)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            _faiss().write_index(self.index.faiss_index(), str(tmp / "index.faiss"))
            np.savez(tmp / "items.npz", **self.index.state_arrays())
            state = {"lsn": lsn, **self.index.meta(), "written_at": utc_now()}
            (tmp / "state.json").write_text(json.dumps(state))
            for child in tmp.iterdir():
                with open(child, "rb") as handle:
                    os.fsync(handle.fileno())
            fsync_path(tmp)
            final = self.directory / name
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            fsync_path(self.directory)
            manifest = dict(self.manifest)
            files = digests(self.directory, [f"{name}/{f}" for f in SNAPSHOT_FILES])
            manifest.update(
                snapshot=name,
                lsn=lsn,
                ntotal=len(self.index),
                updated_at=utc_now(),
                mark=MARK,
                **{FILES: files},
            )
            manifest = seal(manifest)
            atomic_write_json(self.directory / MANIFEST, manifest)
            self.manifest = manifest
            self._wal.reset()
            self._snapshot_lsn = lsn
            self._ops_since_snapshot = 0
            _clean_orphans(self.directory, keep=name)
            return True

    def flush(self) -> bool:
        """The protocol's flush: a snapshot now (False when nothing changed)."""
        return self.snapshot()

    def close(self, snapshot: bool = True) -> None:
        """Snapshot (optional), then close the WAL and stop replica threads. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._snapshot_thread is not None:
            self._snapshot_thread.join()
        if snapshot:
            self.snapshot()
        self._wal.close()
        self.index.close()


def _load(
    directory: Path,
    manifest: dict[str, Any],
    wal: WriteAheadLog,
    overrides: dict[str, Any] | None,
) -> tuple[VectorIndex, int, int]:
    """The snapshot named by the manifest with the log replayed over it."""
    cfg = dict(manifest["config"])
    for key, value in (overrides or {}).items():
        if key in ("factory", "metric", "dim", "id_type", "normalize"):
            raise ValueError(f"{key} is fixed by the stored index and cannot be overridden")
        cfg[key] = value
    config = IndexConfig.from_dict(cfg)
    snap = directory / manifest["snapshot"]
    index = _read_snapshot(snap, config)
    if len(index) != manifest.get("ntotal", len(index)):
        raise IndexDamaged(
            directory / MANIFEST,
            f"ntotal {manifest['ntotal']} but its snapshot {snap.name} holds {len(index)} items",
        )
    _clean_orphans(directory, keep=manifest["snapshot"])
    if wal.torn_bytes:
        log.warning(
            "%s: cut off a torn tail of %d bytes at byte %d (an incomplete last record: "
            "a crash during an append that was never acknowledged)",
            wal.path,
            wal.torn_bytes,
            wal.bytes,
        )
    next_lsn = int(manifest["lsn"]) + 1
    replayed = 0
    for record in wal.replayed():
        if record.lsn <= manifest["lsn"]:
            continue  # already in the snapshot (crash between snapshot and WAL reset)
        _apply(index, record)
        next_lsn = max(next_lsn, record.lsn + 1)
        replayed += 1
    return index, replayed, next_lsn


def _read_snapshot(snap: Path, config: IndexConfig) -> VectorIndex:
    """The snapshot's VectorIndex; an unreadable file is IndexDamaged naming it (checksums
    catch damage first; this covers directories written before them)."""
    path = snap / "state.json"
    try:
        state = json.loads(path.read_text())
        path = snap / "items.npz"
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
        path = snap / "index.faiss"
        faiss_index = _faiss().read_index(str(path))
        path = snap
        return VectorIndex.restore(config, faiss_index, arrays, state)
    except (OSError, ValueError, KeyError, IndexError, EOFError, RuntimeError) as err:
        raise IndexDamaged(path, f"unreadable ({type(err).__name__}: {err})") from err


def _apply(index: VectorIndex, record: WalRecord) -> None:
    """Replay one record as it was acknowledged: no re-validation (the rules may have changed
    since it was written, and refusing it now would lose an acknowledged write)."""
    if record.op == OP_UPSERT:
        assert record.vectors is not None
        last = {item: row for row, item in enumerate(record.ids)}  # duplicate ids: last wins
        rows = list(last.values())
        index.upsert(list(last), record.vectors[rows], _checked=True)
    elif record.op == OP_DELETE:
        index.delete(record.ids, _checked=True)
    else:
        raise ValueError(f"unknown WAL op {record.op}")


def _clean_orphans(directory: Path, keep: str) -> None:
    """Remove snapshots other than `keep` and temp directories from interrupted snapshots."""
    for child in directory.iterdir():
        is_snap = child.name.startswith("snapshot-") or child.name.startswith(".snapshot-")
        if is_snap and child.is_dir() and child.name != keep:
            shutil.rmtree(child, ignore_errors=True)


DurableIndex = FaissStore  # the class's older name, kept for existing code


# --------------------------------------------------------------------------- registration
# Fixed by the stored index; a YAML's `index:` section may name them (flat.yaml), they are not
# search-time overrides when the index is opened.
_STORED = ("factory", "metric", "dim", "id_type", "normalize")


def _store_config(settings: Settings) -> StoreConfig:
    return StoreConfig.from_dict(dict(settings.get("store", {})))


def _overrides(settings: Settings) -> dict[str, Any]:
    return {k: v for k, v in settings.get("index", {}).items() if k not in _STORED}


def _build(
    ids: list[ItemId],
    vectors: np.ndarray,
    location: str,
    settings: Settings,
    source: dict[str, Any],
) -> tuple[FaissStore, dict[str, Any]]:
    config = IndexConfig.from_dict(dict(settings.get("index", {})))
    built = FaissStore.build(ids, vectors, location, config, _store_config(settings), source)
    return built, {"index": location, "factory": config.factory}


def _open(location: str, settings: Settings) -> FaissStore:
    return FaissStore.open(location, _store_config(settings), _overrides(settings))


def _inspect(location: str, settings: Settings) -> dict[str, Any]:
    store = _open(location, settings)
    try:
        return store.info()
    finally:
        store.close(snapshot=False)  # info only looks: the log stays as it was


def _prepare_serving(location: str, settings: Settings) -> tuple[Any, StoreSchema]:
    """(a function opening the store in the server's loader thread, its schema): the manifest
    and the log are checked now, so a missing or corrupt index stops the start before the port
    is bound, while loading a large snapshot does not delay it."""
    manifest = verify(location)  # damage stops the start before the port is bound
    store, overrides = _store_config(settings), _overrides(settings)
    schema = StoreSchema(
        int(manifest["dim"]),
        manifest.get("metric", "ip"),
        manifest.get("id_type", "int"),
        bool(manifest.get("normalize", True)),
    )

    def load() -> FaissStore:
        opened = FaissStore.open(location, store, overrides, verified=True)
        opened.index.start_replicas()  # GPU replicas (or a CPU clone) when configured
        return opened

    return load, schema


FACTORY_HELP = (
    'FAISS index_factory string, e.g. "Flat" (exact), "IVF1024,Flat", "HNSW32", "IVF256,PQ16"'
)
BACKEND = Backend(
    name="faiss",
    summary="FAISS in this process: an index directory (snapshot + write-ahead log; CPU, or "
    "GPU replicas); the default",
    config=IndexConfig,
    sections=("index", "store"),
    options=(
        Option("--out", "new index directory (must not hold one)", None, ("build",), metavar="DIR"),
        Option(
            "--index",
            "index directory, made by `coldstart index build`",
            None,
            ("info", "serve"),
            metavar="DIR",
        ),
        Option("--factory", FACTORY_HELP + " (overrides --config)", "factory", ("build",)),
        METRIC,
        NPROBE,
        EF_SEARCH,
        NO_NORMALIZE,
        Option(
            "--replica",
            "GPU replicas: auto (when faiss-gpu sees a GPU), gpu, clone (a CPU copy), none",
            "replica",
            ("serve",),
            choices=("auto", "gpu", "clone", "none"),
        ),
        Option(
            "--no-fsync",
            "skip fsync on writes (unsafe)",
            "fsync",
            ("serve",),
            section="store",
            const=False,
        ),
        Option(
            "--snapshot-every",
            "items written between snapshots",
            "snapshot_every_ops",
            ("serve",),
            section="store",
            type=int,
        ),
    ),
    build=_build,
    open=_open,
    inspect=_inspect,
    prepare_serving=_prepare_serving,
)
