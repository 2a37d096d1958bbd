"""FAISS nearest neighbours for cold-start items: VectorIndex (CPU/GPU, live upsert/delete),
DurableIndex (snapshot + write-ahead log), and an HTTP app (index.server, imported on demand).

index never imports encoders or ranker: media reach it through an injected `encode` callable.
"""

from index.config import IndexConfig, ServerConfig, StoreConfig
from index.store import DurableIndex
from index.vector_index import InvalidInput, NotTrained, SearchResult, UnknownItem, VectorIndex

__all__ = [
    "DurableIndex",
    "IndexConfig",
    "InvalidInput",
    "NotTrained",
    "SearchResult",
    "ServerConfig",
    "StoreConfig",
    "UnknownItem",
    "VectorIndex",
]
