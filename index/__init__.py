"""Nearest neighbours for cold-start items behind one vector-store protocol
(index.backend.VectorStore) with registered backends (index.registry): FAISS
(index.store.FaissStore: CPU/GPU, live upsert/delete, snapshot + write-ahead log; the embedded
default) and Milvus (index.milvus_store.MilvusStore: a Milvus Lite file or a Milvus
server/cluster). The HTTP app (index.server, imported on demand) sees only the protocol.

index never imports encoders or ranker: media reach it through an injected `encode` callable.
The stores are imported on first use of their names, so importing the protocol stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from coldstart.index.backend import (
    Backend,
    BackendUnavailable,
    InvalidInput,
    NotTrained,
    SearchResult,
    StoreSchema,
    UnknownItem,
    VectorStore,
    WriteFailed,
)
from coldstart.index.config import IndexConfig, ServerConfig, StoreConfig

# name -> the module defining it, imported when the name is first used
_LAZY = {
    "DurableIndex": "store",
    "FaissStore": "store",
    "MilvusConfig": "milvus_store",
    "MilvusStore": "milvus_store",
    "VectorIndex": "vector_index",
    "backend_names": "registry",
    "get_backend": "registry",
    "open_store": "registry",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


__all__ = [
    "Backend",
    "BackendUnavailable",
    "DurableIndex",
    "FaissStore",
    "IndexConfig",
    "InvalidInput",
    "MilvusConfig",
    "MilvusStore",
    "NotTrained",
    "SearchResult",
    "ServerConfig",
    "StoreConfig",
    "StoreSchema",
    "UnknownItem",
    "VectorIndex",
    "VectorStore",
    "WriteFailed",
    "backend_names",
    "get_backend",
    "open_store",
]
