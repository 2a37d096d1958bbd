"""VectorIndex: one FAISS index behind a thread-safe class with live upsert/delete.

- `index_factory` strings as config; inner product or L2; IVF/PQ quantizers trained on a sample.
- Item ids of any kind (int or str, fixed per index) map to internal int64 FAISS ids that are
  never reused, so a stale search result can never point at a different item.
- The vectors are kept beside FAISS (lookup by id, cold-start estimates, rebuilds).
- Concurrency: searches share a read lock (FAISS CPU indexes allow concurrent search and release
  the GIL); upsert/delete/compaction take the write lock (FAISS add/remove are not thread-safe).
- GPU: with faiss-gpu and a visible GPU, searches run on replicas made by
  `index_cpu_to_all_gpus`; the CPU index stays the source of truth for mutations (GPU indexes
  cannot remove ids). The replica is refreshed in batches; until then, searches merge the
  replica's results with an exact scan of the few rows written since, and hide rows deleted
  since, so a write is visible at once. Without a GPU the same path runs on a CPU clone
  (`replica="clone"`), or is skipped (`"auto"` on CPU searches the CPU index directly).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import numpy as np

from coldstart.index.backend import (
    ID_RULES,
    MAX_ABS_UNNORMALIZED,
    MAX_ID_CHARS,
    InvalidInput,
    ItemId,
    NotTrained,
    SearchResult,
    StoreSchema,
    UnknownItem,
    string_id_problem,
)
from coldstart.index.config import IndexConfig

log = logging.getLogger(__name__)
# Re-exported: callers older than index.backend import these from here.
__all__ = [
    "ID_RULES",
    "MAX_ABS_UNNORMALIZED",
    "MAX_ID_CHARS",
    "InvalidInput",
    "ItemId",
    "NotTrained",
    "SearchResult",
    "UnknownItem",
    "VectorIndex",
    "gpu_count",
    "pack_strings",
    "string_id_problem",
    "unpack_strings",
]


class RWLock:
    """Many readers or one writer; a waiting writer blocks new readers (no writer starvation)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting_writers += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


def _faiss() -> Any:
    import faiss  # heavy import kept out of module import time

    return faiss


def gpu_count() -> int:
    """GPUs FAISS can use: 0 with faiss-cpu (no GPU support compiled in) or no device."""
    faiss = _faiss()
    if not hasattr(faiss, "StandardGpuResources"):
        return 0
    try:
        return int(faiss.get_num_gpus())
    except Exception:  # pragma: no cover - broken driver
        return 0


def _walk(index: Any) -> Iterator[Any]:
    """The index and the indexes it wraps (IDMap, PreTransform, Refine), downcast."""
    faiss = _faiss()
    seen = 0
    while index is not None and seen < 8:
        index = faiss.downcast_index(index)
        yield index
        seen += 1
        if isinstance(index, faiss.IndexIDMap | faiss.IndexIDMap2 | faiss.IndexPreTransform):
            index = index.index
        elif isinstance(index, faiss.IndexRefine):
            index = index.base_index
        else:
            index = None


class VectorIndex:
    """A FAISS index with stable item ids, live mutations and optional GPU replicas."""

    def __init__(self, config: IndexConfig, dim: int | None = None) -> None:
        dim = int(dim or config.dim or 0)
        if dim <= 0:
            raise InvalidInput("the index dimension is unknown: pass dim or config.dim")
        self.config = replace(config, dim=dim)
        self.dim = dim
        # The validation every backend shares (index.backend): ids, shapes, finiteness.
        self.schema = StoreSchema(dim, config.metric, config.id_type, config.normalize)
        self._lock = RWLock()
        self._ext_to_int: dict[ItemId, int] = {}
        self._ext_of = np.empty(0, dtype=object)  # internal id -> item id (None when dead)
        self._row_of = np.empty(0, dtype=np.int64)  # internal id -> row of _vecs (-1 dead)
        self._vecs = np.empty((0, dim), dtype=np.float32)
        self._n_rows = 0
        self._free_rows: list[int] = []
        self._next_id = 0
        self._tombstones: set[int] = set()
        self._selector: tuple[Any, Any] | None = None  # (IDSelectorNot, refs kept alive)
        self._index = self._new_index()
        self._apply_search_params(self._index)
        self._can_remove = self._probe_remove(self._index)
        self._init_replica()

    # ----------------------------------------------------------------- construction
    def _new_index(self) -> Any:
        faiss = _faiss()
        metric = faiss.METRIC_INNER_PRODUCT if self.config.metric == "ip" else faiss.METRIC_L2
        try:
            index = faiss.index_factory(self.dim, self.config.factory, metric)
        except RuntimeError as err:
            raise InvalidInput(f"bad factory string {self.config.factory!r}: {err}") from err
        for sub in _walk(index):
            if isinstance(sub, faiss.IndexIVFPQ):
                sub.do_polysemous_training = False  # slow and unused: we never search polysemous
        top = faiss.downcast_index(index)
        native_ids = False
        if isinstance(top, faiss.IndexIVF | faiss.IndexPreTransform):
            try:
                faiss.extract_index_ivf(index)
                native_ids = True  # IVF stores our ids in its inverted lists
            except RuntimeError:
                native_ids = False
        return index if native_ids else faiss.IndexIDMap2(index)

    def _probe_remove(self, index: Any) -> bool:
        try:
            index.remove_ids(np.array([-12345], dtype=np.int64))
            return True
        except RuntimeError:
            return False  # e.g. HNSW: deletions become tombstones filtered at search

    def _apply_search_params(self, index: Any) -> None:
        faiss = _faiss()
        for sub in _walk(index):
            if isinstance(sub, faiss.IndexIVF) and self.config.nprobe:
                sub.nprobe = int(min(self.config.nprobe, sub.nlist))
            if isinstance(sub, faiss.IndexHNSW) and self.config.ef_search:
                sub.hnsw.efSearch = int(self.config.ef_search)

    def _init_replica(self) -> None:
        mode = self.config.replica
        ngpu = gpu_count()
        self.replica_kind = "none"
        if mode in ("auto", "gpu"):
            if ngpu > 0:
                self.replica_kind = "gpu"
                self.backend_note = f"search on {ngpu} GPU replica(s)"
            else:
                self.backend_note = "no GPU visible to FAISS (faiss-cpu or no device): CPU search"
                if mode == "gpu":
                    log.warning("replica='gpu' but %s; falling back to CPU", self.backend_note)
        elif mode == "clone":
            self.replica_kind = "clone"
            self.backend_note = "CPU clone replica (exercises the GPU refresh path on CPU)"
        else:
            self.backend_note = "CPU search"
        self._replica: tuple[Any, frozenset[int], frozenset[int]] | None = None
        self._refresh_mutex = threading.Lock()
        self._pending_since: float | None = None
        self._refresh_wakeup = threading.Event()
        self._closed = threading.Event()
        self._refresher: threading.Thread | None = None
        self.replica_refreshes = 0

    @property
    def device(self) -> str:
        return "gpu" if self.replica_kind == "gpu" and self._replica is not None else "cpu"

    # ----------------------------------------------------------------- properties
    def __len__(self) -> int:
        return len(self._ext_to_int)

    @property
    def ntotal(self) -> int:
        return len(self._ext_to_int)

    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained)

    def __contains__(self, item_id: object) -> bool:
        try:
            return self.normalize_id(item_id) in self._ext_to_int
        except InvalidInput:
            return False

    def ids(self) -> list[ItemId]:
        with self._lock.read():
            return list(self._ext_to_int)

    # ----------------------------------------------------------------- validation
    def normalize_id(self, item_id: object) -> ItemId:
        """The canonical form of an item id for this index; InvalidInput else (the shared
        rules of index.backend.StoreSchema.normalize_id)."""
        return self.schema.normalize_id(item_id)

    def prepare(self, vectors: Any) -> np.ndarray:
        """Validated float32 (N, D) copy, L2-normalized when configured; InvalidInput else
        (index.backend.StoreSchema.prepare)."""
        return self.schema.prepare(vectors)

    # ----------------------------------------------------------------- training
    def train(self, vectors: np.ndarray) -> None:
        """Train quantizers on a sample of `vectors` (N, D) when the factory needs it."""
        if self.is_trained:
            return
        vecs = self.prepare(vectors)
        if len(vecs) > self.config.train_size:
            rng = np.random.default_rng(self.config.seed)
            vecs = vecs[rng.choice(len(vecs), self.config.train_size, replace=False)]
        with self._lock.write():
            try:
                self._index.train(vecs)
            except RuntimeError as err:
                raise InvalidInput(f"training {self.config.factory!r} failed: {err}") from err
            self._apply_search_params(self._index)

    @classmethod
    def build(
        cls, ids: Sequence[Any], vectors: np.ndarray, config: IndexConfig, chunk: int = 100_000
    ) -> VectorIndex:
        """A new index over (ids (N,), vectors (N, D)), trained on a sample when needed."""
        vectors = np.asarray(vectors, dtype=np.float32)
        index = cls(config, dim=vectors.shape[1])
        index.train(vectors)
        for start in range(0, len(vectors), chunk):
            index.upsert(list(ids[start : start + chunk]), vectors[start : start + chunk])
        return index

    # ----------------------------------------------------------------- mutations
    def check_upsert(self, ids: Sequence[Any], vectors: Any) -> tuple[list[ItemId], np.ndarray]:
        """Validate an upsert without applying it. Returns canonical ids and prepared vectors
        (the same id twice: the later item wins)."""
        norm, vecs = self.schema.check_upsert(ids, vectors)
        if not self.is_trained:
            raise NotTrained(f"{self.config.factory!r} is untrained: build it from data first")
        return norm, vecs

    def upsert(self, ids: Sequence[Any], vectors: Any, _checked: bool = False) -> int:
        """Insert or replace items. vectors: (N, D). Returns N."""
        if _checked:
            norm, vecs = list(ids), np.asarray(vectors, dtype=np.float32)
        else:
            norm, vecs = self.check_upsert(ids, vectors)
        if not norm:
            return 0
        with self._lock.write():
            self._upsert_locked(norm, vecs)
        self._after_mutation()
        return len(norm)

    def delete(self, ids: Sequence[Any], _checked: bool = False) -> int:
        """Remove items; unknown ids are ignored. Returns how many were removed."""
        norm = list(ids) if _checked else [self.normalize_id(i) for i in ids]
        with self._lock.write():
            internal = [self._ext_to_int[i] for i in dict.fromkeys(norm) if i in self._ext_to_int]
            if internal:
                self._remove_locked(np.asarray(internal, dtype=np.int64))
        self._after_mutation()
        return len(internal)

    def _grow(self, n_ids: int, n_rows: int) -> None:
        if n_ids > len(self._row_of):
            cap = max(n_ids, 2 * len(self._row_of), 1024)
            row_of = np.full(cap, -1, dtype=np.int64)
            row_of[: len(self._row_of)] = self._row_of
            ext_of = np.empty(cap, dtype=object)
            ext_of[: len(self._ext_of)] = self._ext_of
            self._row_of, self._ext_of = row_of, ext_of
        if n_rows > len(self._vecs):
            cap = max(n_rows, 2 * len(self._vecs), 1024)
            vecs = np.empty((cap, self.dim), dtype=np.float32)
            vecs[: self._n_rows] = self._vecs[: self._n_rows]
            self._vecs = vecs

    def _upsert_locked(self, ids: list[ItemId], vecs: np.ndarray) -> None:
        old = [self._ext_to_int[i] for i in ids if i in self._ext_to_int]
        if old:
            self._remove_locked(np.asarray(old, dtype=np.int64))
        n = len(ids)
        new = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        reuse = [self._free_rows.pop() for _ in range(min(n, len(self._free_rows)))]
        fresh = n - len(reuse)
        rows = np.asarray(reuse + list(range(self._n_rows, self._n_rows + fresh)), dtype=np.int64)
        self._grow(self._next_id + n, self._n_rows + fresh)
        self._n_rows += fresh
        self._next_id += n
        self._vecs[rows] = vecs
        self._row_of[new] = rows
        ext = np.empty(n, dtype=object)
        ext[:] = ids
        self._ext_of[new] = ext
        self._ext_to_int.update(zip(ids, new.tolist(), strict=True))
        self._index.add_with_ids(vecs, new)
        if self._replica is not None:
            rep, padd, pdel = self._replica
            self._replica = (rep, padd | frozenset(new.tolist()), pdel)
            self._pending_since = self._pending_since or time.monotonic()

    def _remove_locked(self, internal: np.ndarray) -> None:
        if self._can_remove:
            self._index.remove_ids(internal)
        else:
            self._tombstones.update(internal.tolist())
            self._selector = self._make_selector()
        rows = self._row_of[internal]
        self._free_rows.extend(rows.tolist())
        self._row_of[internal] = -1
        for ext in self._ext_of[internal]:
            self._ext_to_int.pop(ext, None)
        self._ext_of[internal] = None
        if self._replica is not None:
            rep, padd, pdel = self._replica
            gone = frozenset(internal.tolist())
            self._replica = (rep, padd - gone, pdel | (gone - padd))
            self._pending_since = self._pending_since or time.monotonic()
        if len(self._tombstones) > max(64, self.config.compact_ratio * len(self._ext_to_int)):
            self._compact_locked()

    def _compact_locked(self) -> None:
        """Rebuild a non-removable index (HNSW) from the stored vectors, dropping tombstones."""
        faiss = _faiss()
        fresh = faiss.clone_index(self._index)
        fresh.reset()
        live = np.fromiter(self._ext_to_int.values(), dtype=np.int64, count=len(self._ext_to_int))
        if len(live):
            fresh.add_with_ids(self._vecs[self._row_of[live]], live)
        self._apply_search_params(fresh)
        self._index = fresh
        self._tombstones.clear()
        self._selector = None
        if self._replica is not None:
            self._replica = (self._replica[0], frozenset(live.tolist()), frozenset())
            self._refresh_wakeup.set()

    def compact(self) -> None:
        with self._lock.write():
            if self._tombstones:
                self._compact_locked()

    # ----------------------------------------------------------------- reads
    def get(self, ids: Sequence[Any]) -> np.ndarray:
        """Stored vectors (N, D) of `ids` (normalized when the index normalizes)."""
        norm = [self.normalize_id(i) for i in ids]
        with self._lock.read():
            missing = [i for i in norm if i not in self._ext_to_int]
            if missing:
                raise UnknownItem(f"unknown item id {missing[0]!r}")
            internal = np.asarray([self._ext_to_int[i] for i in norm], dtype=np.int64)
            return self._vecs[self._row_of[internal]].copy()

    def search(self, queries: Any, k: int, prepared: bool = False) -> SearchResult:
        """k nearest items for each query. queries: (Q, D) -> Q lists of <= k ids and scores."""
        if k < 1:
            raise InvalidInput("k must be >= 1")
        q = np.ascontiguousarray(queries, dtype=np.float32) if prepared else self.prepare(queries)
        with self._lock.read():
            scores, labels = self._search_locked(q, k)
            ids: list[list[ItemId]] = []
            out_scores: list[np.ndarray] = []
            for row_s, row_l in zip(scores, labels, strict=True):
                keep = row_l >= 0
                ids.append(self._ext_of[row_l[keep]].tolist())
                out_scores.append(row_s[keep])
        self._maybe_refresh()
        return SearchResult(ids=ids, scores=out_scores)

    def _search_locked(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n_index = int(self._index.ntotal)
        if self._replica is not None:
            return self._search_replica(q, k)
        if n_index == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        kk = min(k, n_index)
        if not self._tombstones:
            return self._index.search(q, kk)
        selector = self._selector  # built by writers only: readers never free it under us
        if selector is None:
            return self._filtered(self._index, q, k, self._tombstones)
        try:
            # A fresh SearchParameters per call: IndexIDMap swaps params.sel during a search,
            # so sharing one between concurrent searches is a use-after-free.
            params = _faiss().SearchParameters(sel=selector[0])
            return self._index.search(q, kk, params=params)
        except (RuntimeError, TypeError):
            return self._filtered(self._index, q, k, self._tombstones)

    def _make_selector(self) -> tuple[Any, Any] | None:
        """SearchParameters hiding the tombstones (call with the write lock held)."""
        if not self._tombstones:
            return None
        faiss = _faiss()
        dead = np.fromiter(self._tombstones, dtype=np.int64)
        batch = faiss.IDSelectorBatch(dead)
        sel = faiss.IDSelectorNot(batch)
        return (sel, (batch, dead))  # keep the C++ objects and their data alive

    def _filtered(
        self, index: Any, q: np.ndarray, k: int, hidden: set[int] | frozenset[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Over-fetch by len(hidden) and drop hidden ids (GPU indexes take no id selector)."""
        n_index = int(index.ntotal)
        if n_index == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        kk = min(k + len(hidden), n_index)
        scores, labels = index.search(q, kk)
        if hidden:
            mask = np.isin(labels, np.fromiter(hidden, dtype=np.int64))
            labels = np.where(mask, -1, labels)
        return self._top(scores, labels, k)

    def _top(self, scores: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Best k per row, ignoring label -1."""
        worst = -np.inf if self.config.metric == "ip" else np.inf
        s = np.where(labels >= 0, scores, worst)
        order = np.argsort(-s if self.config.metric == "ip" else s, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(s, order, 1), np.take_along_axis(labels, order, 1)

    def _search_replica(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        rep, padd, pdel = self._replica  # type: ignore[misc]
        s1, l1 = self._filtered(rep, q, k, pdel | self._tombstones)
        if not padd:
            return s1, l1
        # Rows written since the last refresh: an exact scan of a few vectors.
        internal = np.fromiter(padd, dtype=np.int64, count=len(padd))
        vecs = self._vecs[self._row_of[internal]]
        if self.config.metric == "ip":
            s2 = q @ vecs.T
        else:
            s2 = (q**2).sum(1)[:, None] - 2 * q @ vecs.T + (vecs**2).sum(1)[None, :]
        l2 = np.broadcast_to(internal, s2.shape)
        return self._top(
            np.concatenate([s1, s2.astype(np.float32)], 1), np.concatenate([l1, l2], 1), k
        )

    # ----------------------------------------------------------------- replicas
    def start_replicas(self) -> None:
        """Make the first replica and start the background refresher (no-op without one)."""
        if self.replica_kind == "none" or self._refresher is not None:
            return
        self.refresh_replica()
        if self.replica_kind == "none":
            return
        self._refresher = threading.Thread(target=self._refresh_loop, daemon=True)
        self._refresher.start()

    def refresh_replica(self) -> None:
        """Copy the CPU index to the replica(s) and forget pending changes."""
        faiss = _faiss()
        with self._refresh_mutex, self._lock.read():
            try:
                if self.replica_kind == "gpu":
                    rep = faiss.index_cpu_to_all_gpus(self._index)
                else:
                    rep = faiss.clone_index(self._index)
            except RuntimeError as err:  # e.g. HNSW has no GPU implementation
                log.warning("cannot copy %s to the GPU (%s): CPU search", self.config.factory, err)
                self.replica_kind, self.backend_note = "none", f"GPU copy failed: {err}"
                self._replica = None
                return
            self._replica = (rep, frozenset(), frozenset())
            self._pending_since = None
            self.replica_refreshes += 1

    def _pending(self) -> int:
        state = self._replica
        return 0 if state is None else len(state[1]) + len(state[2])

    def _after_mutation(self) -> None:
        if self._replica is not None and self._pending() >= self.config.replica_refresh_ops:
            self._refresh_wakeup.set()

    def _maybe_refresh(self) -> None:
        since = self._pending_since
        if since is not None and time.monotonic() - since >= self.config.replica_refresh_s:
            self._refresh_wakeup.set()

    def _refresh_loop(self) -> None:
        while not self._closed.is_set():
            self._refresh_wakeup.wait(timeout=self.config.replica_refresh_s)
            self._refresh_wakeup.clear()
            if self._closed.is_set():
                return
            since = self._pending_since
            due = since is not None and (
                time.monotonic() - since >= self.config.replica_refresh_s
                or self._pending() >= self.config.replica_refresh_ops
            )
            if due:
                self.refresh_replica()

    def close(self) -> None:
        self._closed.set()
        self._refresh_wakeup.set()
        if self._refresher is not None:
            self._refresher.join(timeout=5)
            self._refresher = None

    # ----------------------------------------------------------------- persistence
    @contextmanager
    def frozen(self) -> Iterator[None]:
        """Hold off writers (searches continue) while a consistent copy is written."""
        with self._lock.read():
            yield

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Live items (call inside `frozen()`): internal ids, item ids, vectors."""
        internal = np.fromiter(
            self._ext_to_int.values(), dtype=np.int64, count=len(self._ext_to_int)
        )
        item_ids = self._ext_of[internal].tolist()
        out = {
            "internal_ids": internal,
            "vectors": self._vecs[self._row_of[internal]] if len(internal) else self._vecs[:0],
        }
        if self.config.id_type == "int":
            out["item_ids"] = np.asarray(item_ids, dtype=np.int64)
        else:
            out.update(pack_strings(item_ids))
        return out

    def faiss_index(self) -> Any:
        """The CPU source-of-truth FAISS index (call inside `frozen()` to serialize it)."""
        return self._index

    def meta(self) -> dict[str, Any]:
        return {"next_id": self._next_id, "tombstones": sorted(self._tombstones)}

    @classmethod
    def restore(
        cls,
        config: IndexConfig,
        faiss_index: Any,
        arrays: dict[str, np.ndarray],
        meta: dict[str, Any],
    ) -> VectorIndex:
        """Rebuild from a snapshot's parts (see index.store)."""
        self = cls(config)
        self._index = faiss_index
        self._apply_search_params(self._index)
        self._can_remove = self._probe_remove(self._index)
        internal = arrays["internal_ids"].astype(np.int64)
        n = len(internal)
        self._next_id = int(meta["next_id"])
        self._grow(self._next_id, n)
        self._vecs[:n] = arrays["vectors"]
        self._n_rows = n
        self._row_of[internal] = np.arange(n, dtype=np.int64)
        # Snapshots written before the UTF-8 + offsets form held a numpy str array (which had
        # already dropped trailing NULs).
        legacy = "item_ids_utf8" not in arrays
        items = arrays["item_ids"].tolist() if legacy else unpack_strings(arrays)
        ext = np.empty(n, dtype=object)
        ext[:] = items
        self._ext_of[internal] = ext
        self._ext_to_int = dict(zip(items, internal.tolist(), strict=True))
        self._tombstones = set(int(t) for t in meta.get("tombstones", []))
        self._selector = self._make_selector()
        return self


def pack_strings(strings: Sequence[str]) -> dict[str, np.ndarray]:
    """Strings as UTF-8 bytes + offsets: exact for any str (numpy's str dtype drops trailing
    NULs). Lone surrogates (only possible in logs written before the id rules) pass through."""
    encoded = [s.encode("utf-8", "surrogatepass") for s in strings]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(b) for b in encoded])
    return {
        "item_ids_utf8": np.frombuffer(b"".join(encoded), dtype=np.uint8),
        "item_ids_offsets": offsets,
    }


def unpack_strings(arrays: dict[str, np.ndarray]) -> list[str]:
    """The inverse of pack_strings."""
    blob = arrays["item_ids_utf8"].tobytes()
    offsets = arrays["item_ids_offsets"].tolist()
    return [
        blob[a:b].decode("utf-8", "surrogatepass")
        for a, b in zip(offsets[:-1], offsets[1:], strict=True)
    ]
