"""Nearest neighbours for cold-start items behind one vector-store protocol
(index.backend.VectorStore) with two backends: FAISS (index.store.FaissStore: CPU/GPU, live
upsert/delete, snapshot + write-ahead log; the embedded default) and Milvus
(index.milvus_store.MilvusStore: a Milvus Lite file or a Milvus server/cluster). The HTTP app
(index.server, imported on demand) sees only the protocol.

index never imports encoders or ranker: media reach it through an injected `encode` callable.
"""

from coldstart.index.backend import (
    BackendUnavailable,
    InvalidInput,
    NotTrained,
    SearchResult,
    StoreSchema,
    UnknownItem,
    VectorStore,
    WriteFailed,
    open_store,
)
from coldstart.index.config import IndexConfig, ServerConfig, StoreConfig
from coldstart.index.milvus_store import MilvusConfig, MilvusStore
from coldstart.index.store import DurableIndex, FaissStore
from coldstart.index.vector_index import VectorIndex

__all__ = [
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
    "open_store",
]
