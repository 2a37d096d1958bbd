"""FaissStore: the vector-store protocol (index.backend) over FAISS + write-ahead log + snapshots.

The embedded default. An index directory (manifest.json, snapshot-*/, wal.log) holds a FAISS
index (`index_factory` string), its id map and vectors; every write is fsync'd to the WAL
before it is acknowledged (index.store.DurableIndex), searches run in this process
(index.vector_index.VectorIndex, CPU or GPU replicas).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from index.backend import (
    InvalidInput,
    SearchResult,
    StoreBase,
    StoreSchema,
    empty_result,
    exact_search,
)
from index.config import IndexConfig, StoreConfig
from index.store import DurableIndex, read_manifest
from index.vector_index import VectorIndex


class FaissStore(StoreBase):
    """A DurableIndex behind the VectorStore protocol."""

    backend = "faiss"

    def __init__(self, durable: DurableIndex) -> None:
        self.durable = durable
        self._closed = False
        cfg = durable.index.config
        self.schema = StoreSchema(durable.index.dim, cfg.metric, cfg.id_type, cfg.normalize)

    # ----------------------------------------------------------------- create / open
    @classmethod
    def open(
        cls,
        directory: str | os.PathLike,
        store: StoreConfig | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> FaissStore:
        """Load an index directory (latest snapshot + WAL replay). overrides: search-time
        IndexConfig fields (nprobe, ef_search, replica...)."""
        return cls(DurableIndex.open(directory, store, overrides))

    @classmethod
    def build(
        cls,
        ids: Sequence[Any],
        vectors: np.ndarray,
        directory: str | os.PathLike,
        config: IndexConfig,
        store: StoreConfig | None = None,
        source: dict[str, Any] | None = None,
    ) -> FaissStore:
        """A new index directory over (ids (N,), vectors (N, D)); refuses an existing one."""
        if (Path(directory) / "manifest.json").exists():
            raise FileExistsError(f"{directory} already holds an index")
        index = VectorIndex.build(ids, vectors, config)
        return cls(DurableIndex.create(directory, index, store, source=source))

    # ----------------------------------------------------------------- properties
    @property
    def lsn(self) -> int:
        return self.durable.lsn

    # ----------------------------------------------------------------- writes
    def upsert(self, ids: Sequence[Any], vectors: Any, prepared: bool = False) -> int:
        if not prepared:
            ids, vectors = self.schema.check_upsert(ids, vectors)
        if not len(ids):
            raise InvalidInput("nothing to upsert")
        return self.durable.upsert(list(ids), vectors)

    def delete(self, ids: Sequence[Any]) -> tuple[int, int]:
        return self.durable.delete([self.schema.normalize_id(i) for i in ids])

    # ----------------------------------------------------------------- reads
    def get(self, ids: Sequence[Any]) -> np.ndarray:
        return self.durable.index.get([self.schema.normalize_id(i) for i in ids])

    def contains(self, ids: Sequence[Any]) -> list[bool]:
        index = self.durable.index
        return [self.schema.normalize_id(i) in index for i in ids]

    def search(
        self, queries: Any, k: int, ids: Sequence[Any] | None = None, prepared: bool = False
    ) -> SearchResult:
        q, allowed = self.schema.check_search(queries, k, ids, prepared)
        if allowed is None:
            return self.durable.index.search(q, k, prepared=True)
        # A candidate set: score it exactly (numpy), it is small next to the index.
        present = [i for i, there in zip(allowed, self.contains(allowed), strict=True) if there]
        if not present or not len(q):
            return empty_result(len(q))
        scores, rows = exact_search(self.durable.index.get(present), q, k, self.metric)
        return SearchResult(
            ids=[[present[r] for r in row] for row in rows], scores=list(scores.astype(np.float32))
        )

    def count(self) -> int:
        return len(self.durable)

    def tune(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Change search-time parameters (IVF cells visited, HNSW beam) of the open index."""
        index = self.durable.index
        if nprobe is not None:
            index.config.nprobe = int(nprobe)
        if ef_search is not None:
            index.config.ef_search = int(ef_search)
        with index.frozen():  # no writer mid-change
            index._apply_search_params(index.faiss_index())

    # ----------------------------------------------------------------- persistence
    def flush(self) -> bool:
        """Write a snapshot now (and reset the WAL). False when nothing changed."""
        return self.durable.snapshot()

    def info(self) -> dict[str, Any]:
        manifest = dict(read_manifest(self.durable.directory))
        cfg = self.durable.index.config
        return {
            "backend": self.backend,
            "directory": str(self.durable.directory),
            **manifest,
            "index_type": cfg.factory,
            "search_params": {"nprobe": cfg.nprobe, "ef_search": cfg.ef_search},
            **self.schema.to_dict(),
            "live_items": len(self.durable),
            "wal_records_replayed": self.durable.replayed,
            "device": self.durable.index.device,
        }

    def close(self, snapshot: bool = True) -> None:
        """Snapshot (unless told not to), close the WAL, stop replica threads. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.durable.close(snapshot=snapshot)


__all__ = ["FaissStore"]
