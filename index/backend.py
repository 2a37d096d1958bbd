"""The vector-store protocol every index backend implements, and the validation they share.

Backends:
- "faiss" (index.faiss_store.FaissStore): FAISS in this process, with a write-ahead log and
  snapshots in an index directory. The embedded default.
- "milvus" (index.milvus_store.MilvusStore): a Milvus collection, in a Milvus Lite file
  (`runs/idx/items.db`) or on a Milvus server/cluster (`http://host:19530`), same code.

Callers (the HTTP server, `coldstart index`, the experiment) hold a `VectorStore` and never
reach into a backend. Every backend validates input with the same `StoreSchema`, so bad input
(wrong dimension, NaN, an id of the wrong type) fails the same way (`InvalidInput`) whichever
store is behind it, before anything is written.

Shapes: vectors are float32 numpy arrays, (N, D) for N items or queries of dimension D.
Scores: similarity for metric "ip" (higher is better), squared L2 distance for "l2".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from index.vector_index import InvalidInput, ItemId, NotTrained, SearchResult, UnknownItem

BACKENDS = ("faiss", "milvus")
MAX_ID_CHARS = 512
MAX_FILTER_IDS = 16_384  # ids in one search filter (Milvus caps a query window at 16384 too)
_INT_RE = re.compile(r"^-?\d{1,19}$")
_I64 = (-(2**63), 2**63 - 1)


class BackendUnavailable(RuntimeError):
    """A backend's packages are not installed, or its server cannot be reached (HTTP 503)."""


@dataclass(frozen=True)
class StoreSchema:
    """What a store holds, fixed when it is created: dimension, metric, id type, normalization.

    metric: "ip" (inner product; cosine when `normalize`) or "l2" (squared distances).
    id_type: "int" (int64 item ids) or "str" (strings of 1..512 characters).
    """

    dim: int
    metric: str = "ip"
    id_type: str = "int"
    normalize: bool = True

    def __post_init__(self) -> None:
        if int(self.dim) <= 0:
            raise InvalidInput(f"dim must be positive, got {self.dim}")
        if self.metric not in ("ip", "l2"):
            raise InvalidInput(f"metric must be 'ip' or 'l2', got {self.metric!r}")
        if self.id_type not in ("int", "str"):
            raise InvalidInput(f"id_type must be 'int' or 'str', got {self.id_type!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "dim": int(self.dim),
            "metric": self.metric,
            "id_type": self.id_type,
            "normalize": bool(self.normalize),
        }

    def normalize_id(self, item_id: Any) -> ItemId:
        """The canonical form of an item id (int for int stores, "12" -> 12), or InvalidInput."""
        if self.id_type == "int":
            if isinstance(item_id, bool):
                raise InvalidInput(f"item id must be an integer, got {item_id!r}")
            if isinstance(item_id, int | np.integer):
                value = int(item_id)
            elif isinstance(item_id, str) and _INT_RE.match(item_id.strip()):
                value = int(item_id.strip())
            else:
                raise InvalidInput(f"item id must be an integer, got {item_id!r}")
            if not _I64[0] <= value <= _I64[1]:
                raise InvalidInput(f"item id {value} does not fit in int64")
            return value
        if isinstance(item_id, bool) or not isinstance(item_id, str | int | np.integer):
            raise InvalidInput(f"item id must be a string, got {item_id!r}")
        text = str(item_id)
        if not text or len(text) > MAX_ID_CHARS:
            raise InvalidInput(
                f"item id must be a non-empty string of at most {MAX_ID_CHARS} characters"
            )
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:  # lone surrogates: no store can hold them as text
            raise InvalidInput(f"item id is not valid Unicode text: {err.reason}") from err
        return text

    def prepare(self, vectors: Any) -> np.ndarray:
        """Validated float32 (N, D) copy of `vectors` ((D,) or (N, D)), L2-normalized when the
        store normalizes. InvalidInput for wrong shapes, NaN/inf, values beyond float32, and
        vectors that cannot be normalized."""
        try:
            with np.errstate(over="ignore"):  # float32 overflow becomes inf, rejected below
                arr = np.array(vectors, dtype=np.float32)
        except (TypeError, ValueError) as err:
            raise InvalidInput(f"vectors must be numbers: {err}") from err
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise InvalidInput(f"vectors must have shape (N, {self.dim}), got {arr.shape}")
        if not np.isfinite(arr).all():
            raise InvalidInput("vectors contain NaN or infinity (or values beyond float32)")
        if self.normalize and len(arr):
            # float64 norms: squaring a float32 near its range overflows to inf
            norms = np.linalg.norm(arr.astype(np.float64), axis=1, keepdims=True)
            if (norms == 0).any():
                raise InvalidInput("zero vector cannot be normalized")
            arr = (arr / norms).astype(np.float32)
        return np.ascontiguousarray(arr)

    def check_upsert(self, ids: Sequence[Any], vectors: Any) -> tuple[list[ItemId], np.ndarray]:
        """Validate an upsert without applying it: canonical ids (N,), prepared vectors (N, D)."""
        norm = [self.normalize_id(i) for i in ids]
        if len(set(norm)) != len(norm):
            raise InvalidInput("duplicate item ids in one upsert")
        vecs = self.prepare(vectors)
        if len(vecs) != len(norm):
            raise InvalidInput(f"{len(norm)} ids but {len(vecs)} vectors")
        return norm, vecs

    def check_search(
        self, queries: Any, k: int, ids: Sequence[Any] | None, prepared: bool = False
    ) -> tuple[np.ndarray, list[ItemId] | None]:
        """Validate a search: (queries (Q, D) float32, canonical filter ids or None)."""
        if k < 1:
            raise InvalidInput("k must be >= 1")
        q = np.ascontiguousarray(queries, dtype=np.float32) if prepared else self.prepare(queries)
        return q, self.check_filter(ids)

    def check_filter(self, ids: Sequence[Any] | None) -> list[ItemId] | None:
        """Canonical, de-duplicated filter ids (order kept), or None for no filter."""
        if ids is None:
            return None
        norm = list(dict.fromkeys(self.normalize_id(i) for i in ids))
        if len(norm) > MAX_FILTER_IDS:
            raise InvalidInput(f"at most {MAX_FILTER_IDS} ids in a search filter")
        return norm


@runtime_checkable
class VectorStore(Protocol):
    """Item vectors by id, searchable by nearest neighbours. Thread-safe: searches and reads
    run concurrently; writes are serialized by the store.

    A write is acknowledged when `upsert`/`delete` return; what survives a crash after that
    is the backend's durability contract (README: "Index backends").
    """

    backend: str  # "faiss" or "milvus"
    schema: StoreSchema

    @property
    def dim(self) -> int: ...

    @property
    def metric(self) -> str: ...

    @property
    def lsn(self) -> int:
        """Sequence number of the last acknowledged write (increases with every write)."""
        ...

    def upsert(self, ids: Sequence[Any], vectors: Any) -> int:
        """Insert or replace items: ids (N,), vectors (N, D). Returns the write's lsn."""
        ...

    def delete(self, ids: Sequence[Any]) -> tuple[int, int]:
        """Remove items; unknown ids are ignored. Returns (items removed, lsn)."""
        ...

    def get(self, ids: Sequence[Any]) -> np.ndarray:
        """Stored vectors (N, D) of `ids`, in order (normalized when the store normalizes).
        UnknownItem when one is absent."""
        ...

    def contains(self, ids: Sequence[Any]) -> list[bool]:
        """(N,) whether each id is stored."""
        ...

    def search(
        self, queries: Any, k: int, ids: Sequence[Any] | None = None, prepared: bool = False
    ) -> SearchResult:
        """k nearest items for each query (Q, D): Q lists of <= k ids, best first, and scores.
        ids: search only among these items (unknown ones are ignored).
        prepared: the queries already went through `schema.prepare`."""
        ...

    def count(self) -> int:
        """Live items."""
        ...

    def flush(self) -> bool:
        """Make everything acknowledged so far part of the store's persistent state (FAISS: a
        snapshot; Milvus: sealed segments). False when there was nothing to do."""
        ...

    def info(self) -> dict[str, Any]:
        """What `coldstart index info` prints: backend, schema, index type, counts, location."""
        ...

    def close(self) -> None:
        """Release files, locks and connections. Acknowledged writes stay."""
        ...


class StoreBase:
    """What every backend derives from its `schema` and `count()`/`close()` (not the protocol:
    a backend may implement VectorStore without it)."""

    schema: StoreSchema

    @property
    def dim(self) -> int:
        return self.schema.dim

    @property
    def metric(self) -> str:
        return self.schema.metric

    def count(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.count()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def empty_result(n_queries: int) -> SearchResult:
    """No hits for each of `n_queries` queries."""
    return SearchResult(
        ids=[[] for _ in range(n_queries)],
        scores=[np.zeros(0, np.float32) for _ in range(n_queries)],
    )


def exact_search(
    base: np.ndarray, queries: np.ndarray, k: int, metric: str = "ip"
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest rows of `base` (N, D) for `queries` (Q, D) with numpy.

    Returns (scores (Q, k'), rows (Q, k')) with k' = min(k, N), best first; the same
    inputs give the same rows (no dependence on thread count or tie order in a BLAS).
    """
    q = np.asarray(queries, dtype=np.float32)
    b = np.asarray(base, dtype=np.float32)
    kk = min(k, len(b))
    if kk == 0:
        return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
    if metric == "ip":
        cost = -(q @ b.T)  # (Q, N): lower is better
    else:
        cost = np.maximum((q**2).sum(1)[:, None] - 2 * q @ b.T + (b**2).sum(1)[None, :], 0)
    top = np.argpartition(cost, kk - 1, axis=1)[:, :kk] if kk < len(b) else np.argsort(cost, 1)
    top_cost = np.take_along_axis(cost, top, 1)
    order = np.lexsort((top, top_cost), axis=1)  # by cost, then by row
    rows = np.take_along_axis(top, order, 1)
    best = np.take_along_axis(top_cost, order, 1)
    scores = -best if metric == "ip" else best
    return scores.astype(np.float32), rows.astype(np.int64)


__all__ = [
    "BACKENDS",
    "BackendUnavailable",
    "InvalidInput",
    "ItemId",
    "NotTrained",
    "SearchResult",
    "StoreBase",
    "StoreSchema",
    "UnknownItem",
    "VectorStore",
    "empty_result",
    "exact_search",
]
