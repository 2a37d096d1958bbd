"""The vector-store protocol every index backend implements, the validation they share, and
the `Backend` declaration through which a store registers (index.registry finds them).

Built-in backends, each declared by a module-level `BACKEND` next to its implementation:
- "faiss" (index.store.FaissStore): FAISS in this process, with a write-ahead log and
  snapshots in an index directory (index.vector_index, index.wal). The embedded default.
- "milvus" (index.milvus_store.MilvusStore): a Milvus collection, in a Milvus Lite file
  (`runs/idx/items.db`) or on a Milvus server/cluster (`http://host:19530`), same code.

This module imports no backend: implementations import it, never the other way round.
Callers (the HTTP server, `coldstart index`, the experiment) hold a `VectorStore` and never
reach into a backend. Every backend validates input with the same `StoreSchema`, so bad input
(wrong dimension, NaN, an id of the wrong type) fails the same way (`InvalidInput`) whichever
store is behind it, before anything is written.

Shapes: vectors are float32 numpy arrays, (N, D) for N items or queries of dimension D.
Scores: similarity for metric "ip" (higher is better), squared L2 distance for "l2".

Optional parts of the protocol (a backend registered before they existed keeps working; the
built-in ones have them): `ids()` (listing; `list_ids` raises `Unsupported`, naming the
method, where a caller needs it and the store lacks it) and `max_k` (the largest k one search
may ask for; absent or None: no cap; `search_cap`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

ItemId = int | str
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
MAX_ID_CHARS = 512
MAX_FILTER_IDS = 16_384  # ids in one search filter (Milvus caps a query window at 16384 too)
# Stores without normalization: |component| <= this keeps D * x^2 (inner products) and
# 4 * D * x^2 (L2 distances) far below float32's 3.4e38 for any practical D.
MAX_ABS_UNNORMALIZED = 1e15
ID_RULES = (
    "string ids: 1 to 512 characters of valid Unicode, no control characters "
    "(U+0000-U+001F, U+007F-U+009F), no '/', not '.' or '..'; kept exactly as sent"
)
_INT_RE = re.compile(r"^-?[0-9]{1,19}\Z")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


class InvalidInput(ValueError):
    """Bad input from a caller (wrong shape, NaN, bad id...): a 4xx, never a 500."""


class UnknownItem(KeyError):
    """An item id that is not in the store."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown item"


class NotTrained(RuntimeError):
    """The index type needs training (IVF, PQ) and the store has not been trained yet."""


class WriteFailed(OSError):
    """The storage refused a write (disk full, I/O error); nothing of it was stored (503)."""


class BackendUnavailable(RuntimeError):
    """A backend's packages are not installed, or its server cannot be reached (503)."""


class Unsupported(NotImplementedError):
    """The store lacks an optional method of the protocol that this call needs (e.g. `ids`
    on a third-party backend written before it existed)."""


class StoreCorrupt(RuntimeError):
    """The store's files are damaged in a way that could lose acknowledged writes: it refuses
    to open until repaired (e.g. index.store.IndexCorrupt, `coldstart index repair`)."""


@dataclass
class SearchResult:
    """Per query: ids (best first, may be shorter than k) and scores.

    scores: similarity for metric "ip" (higher is better), squared distance for "l2".
    """

    ids: list[list[ItemId]]
    scores: list[np.ndarray]  # each (<=k,) float32


def string_id_problem(text: str) -> str | None:
    """Why `text` cannot be a string item id (see ID_RULES), or None when it can."""
    if not text:
        return "empty"
    if len(text) > MAX_ID_CHARS:
        return f"longer than {MAX_ID_CHARS} characters"
    if _CONTROL.search(text):
        return "control characters (U+0000-U+001F, U+007F-U+009F) are not allowed"
    if "/" in text:
        return "'/' is not allowed (the id could not be addressed as /v1/items/{id})"
    if text in (".", ".."):
        return "'.' and '..' are not allowed (URL paths collapse them)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "not valid Unicode (lone surrogate)"
    return None


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
        """The canonical form of an item id (int64 or str); InvalidInput else.

        Int stores take ints and their decimal strings ("12" -> 12). String ids (ID_RULES):
        1 to 512 characters, valid Unicode (no lone surrogates), no control characters
        (U+0000-U+001F, U+007F-U+009F), no "/", not "." or "..". They are kept exactly as
        given (no trimming, no Unicode normalization), so every accepted id can be read and
        deleted through /v1/items/{id} and round-trips through every backend byte for byte.
        """
        if self.id_type == "int":
            if isinstance(item_id, bool):
                raise InvalidInput(f"item id must be an integer, got {item_id!r}")
            digits = isinstance(item_id, str) and _INT_RE.match(item_id)
            if isinstance(item_id, int | np.integer) or digits:
                value = int(item_id)  # type: ignore[arg-type]
            else:
                raise InvalidInput(f"item id must be an integer, got {_short(item_id)}")
            if not I64_MIN <= value <= I64_MAX:
                raise InvalidInput(f"item id {value} does not fit in int64")
            return value
        if isinstance(item_id, bool) or not isinstance(item_id, str | int | np.integer):
            raise InvalidInput(f"item id must be a string, got {_short(item_id)}")
        text = str(item_id)
        problem = string_id_problem(text)
        if problem:
            raise InvalidInput(f"item id {_short(text)} is not allowed: {problem}")
        return text

    def prepare(self, vectors: Any) -> np.ndarray:
        """Validated float32 (N, D) copy of `vectors` ((D,) or (N, D)), or InvalidInput.

        Normalizing stores accept any finite non-zero vector: the norm is taken in float64
        after scaling by the largest component, so neither 1e20 (whose float32 norm
        overflows) nor 1e-30 (whose square underflows) loses its direction. Stores without
        normalization accept components of magnitude <= MAX_ABS_UNNORMALIZED, so that every
        inner product and L2 distance stays finite in float32.
        """
        try:
            arr = np.array(vectors, dtype=np.float64)
        except (TypeError, ValueError, OverflowError) as err:
            raise InvalidInput(f"vectors must be numbers: {err}") from err
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise InvalidInput(f"vectors must have shape (N, {self.dim}), got {arr.shape}")
        if not np.isfinite(arr).all():
            raise InvalidInput("vectors contain NaN or infinity")
        if not len(arr):
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.normalize:
            scale = np.abs(arr).max(axis=1, keepdims=True)  # (N, 1)
            if (scale == 0).any():
                raise InvalidInput("zero vector cannot be normalized")
            arr = arr / scale
            arr /= np.linalg.norm(arr, axis=1, keepdims=True)
        elif (np.abs(arr) > MAX_ABS_UNNORMALIZED).any():
            raise InvalidInput(
                f"vector components must lie within +-{MAX_ABS_UNNORMALIZED:g} in an index "
                "without normalization (larger values overflow float32 scores)"
            )
        out = np.ascontiguousarray(arr, dtype=np.float32)
        if not np.isfinite(out).all():  # pragma: no cover - guarded above; never store inf
            raise InvalidInput("vectors overflow float32")
        return out

    def check_upsert(self, ids: Sequence[Any], vectors: Any) -> tuple[list[ItemId], np.ndarray]:
        """Validate an upsert without applying it: canonical ids (N,), prepared vectors (N, D).
        The same id twice: the later item wins, as in a dict."""
        norm = [self.normalize_id(i) for i in ids]
        vecs = self.prepare(vectors)
        if len(vecs) != len(norm):
            raise InvalidInput(f"{len(norm)} ids but {len(vecs)} vectors")
        if len(set(norm)) != len(norm):
            last = {item: row for row, item in enumerate(norm)}
            norm, vecs = list(last), vecs[list(last.values())]
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

    backend: str  # its name in index.registry: "faiss", "milvus"...
    schema: StoreSchema  # dim, metric, id type, normalization: fixed at creation

    @property
    def dim(self) -> int: ...

    @property
    def metric(self) -> str: ...

    @property
    def lsn(self) -> int:
        """Sequence number of the last acknowledged write (increases with every write)."""
        ...

    def upsert(self, ids: Sequence[Any], vectors: Any, prepared: bool = False) -> int:
        """Insert or replace items: ids (N,), vectors (N, D). Returns the write's lsn.
        prepared: the vectors already went through `schema.prepare`."""
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
        ids: search only among these items (unknown ones are ignored; <= MAX_FILTER_IDS).
        prepared: the queries already went through `schema.prepare`.
        A store with a `max_k` (Milvus: 16,384) refuses a larger k with InvalidInput; callers
        that may ask for more read `search_cap(store)` first."""
        ...

    def count(self) -> int:
        """Live items."""
        ...

    def ids(self) -> list[ItemId]:
        """Every live item id (canonical form), each once, in no particular order: what the
        store holds as of the call (a write running beside it may or may not be in). Memory:
        one Python object per item. Optional for third-party backends: call it through
        `list_ids`, which names what is missing when a store lacks it (module docstring)."""
        ...

    def flush(self) -> bool:
        """Make everything acknowledged so far part of the store's persistent state (FAISS: a
        snapshot; Milvus: sealed segments). False when there was nothing to do."""
        ...

    def tune(self, **params: Any) -> None:
        """Search-time settings; None leaves one as it is. nprobe (IVF cells visited),
        ef_search (HNSW beam), search_threads (threads one search may use), blas_threshold
        (FAISS flat search). A backend ignores the ones its engine decides for itself."""
        ...

    def health(self) -> dict[str, Any]:
        """Cheap facts for /health: device, backend (a sentence), search_threads."""
        ...

    def info(self) -> dict[str, Any]:
        """What `coldstart index info` prints: backend, schema, index type, counts, location."""
        ...

    def close(self) -> None:
        """Release files, locks and connections. Acknowledged writes stay. Idempotent."""
        ...


class StoreBase:
    """What every backend derives from its `schema` and `count()`/`close()` (not the protocol:
    a backend may implement VectorStore without it)."""

    schema: StoreSchema
    max_k: int | None = None  # the largest k of one search (None: no cap; see search_cap)

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


# --------------------------------------------------------------------------- registration
# A store's settings, in the shape of its YAML file: section -> keys (configs/index/*.yaml),
# e.g. {"index": {"factory": "HNSW32"}, "store": {"fsync": True}} or {"milvus": {...}}.
Settings = Mapping[str, Mapping[str, Any]]
COMMANDS = ("build", "info", "serve")  # the commands that choose a store


@dataclass(frozen=True)
class Option:
    """A command-line option of a backend; `coldstart index build|info` and `coldstart serve`
    add the options of every registered backend and refuse those of another backend.

    key: the settings key the value goes to, in `section` (default: the backend's first
    section); None when the option names the store's location (faiss --index, milvus --uri).
    const: a flag that takes no value and sets `key` to `const` (--no-normalize: False).
    Two backends may declare the same flag (--nprobe) if they declare it alike.
    """

    flag: str
    help: str
    key: str | None = None
    commands: tuple[str, ...] = COMMANDS
    section: str | None = None
    type: Callable[[str], Any] = str
    choices: tuple[str, ...] | None = None
    const: Any = None
    metavar: str | None = None

    @property
    def dest(self) -> str:
        """The argparse attribute: "--ef-search" -> "ef_search"."""
        return self.flag.lstrip("-").replace("-", "_")


# Options whose keys every built-in config shares; a backend lists those it honours.
METRIC = Option(
    "--metric", "inner product (default) or L2", "metric", ("build",), choices=("ip", "l2")
)
NPROBE = Option("--nprobe", "IVF cells visited per query", "nprobe", ("build", "serve"), type=int)
EF_SEARCH = Option(
    "--ef-search", "HNSW search beam width", "ef_search", ("build", "serve"), type=int
)
NO_NORMALIZE = Option(
    "--no-normalize",
    "keep vectors as they are (no L2 normalization)",
    "normalize",
    ("build",),
    const=False,
)

BuildFn = Callable[
    [list[ItemId], np.ndarray, str, Settings, dict[str, Any]], tuple[VectorStore, dict[str, Any]]
]
OpenFn = Callable[[str, Settings], VectorStore]
InspectFn = Callable[[str, Settings], dict[str, Any]]
ServeFn = Callable[[str, Settings], tuple["VectorStore | Callable[[], VectorStore]", StoreSchema]]


@dataclass(frozen=True)
class Backend:
    """One vector store, declared once next to its implementation (a module-level `BACKEND`):
    its name, settings, how to build and open it and its command-line options. Everything
    that chooses a store (`coldstart index`, `coldstart serve`, the experiment) goes through
    index.registry, which imports a backend's module only when that backend is used; heavy
    packages (faiss, pymilvus) are imported inside the functions below, never at import time.

    location: where a store lives, one string (faiss: an index directory; milvus: a URI).
    build(ids (N,), vectors (N, D), location, settings, source) -> (the new store, the keys
        `coldstart index build` reports about where it is: "factory" and its location).
        settings[sections[0]] holds "dim" and "id_type" (from the data) besides the user's keys.
    open(location, settings) -> the existing store, for reading and writing.
    inspect(location, settings) -> what `coldstart index info` prints; default: open, info(),
        close. A backend whose close writes (a FAISS snapshot) supplies a read-only variant.
    prepare_serving(location, settings) -> (the store, or a function opening it in the
        server's loader thread; its schema). Default: open now, so a bad location stops the
        start before the port is bound.
    """

    name: str
    summary: str  # one line for --help
    config: Any  # the config dataclass of sections[0] (has from_dict): checked before use
    sections: tuple[str, ...]  # settings sections it reads; the first holds the index keys
    options: tuple[Option, ...]
    build: BuildFn
    open: OpenFn
    inspect: InspectFn | None = None
    prepare_serving: ServeFn | None = None
    location_key: str | None = None  # a key of sections[0] that may hold the location (YAML)
    factory_key: str = "factory"  # the key of sections[0] naming the index structure
    local_name: str = "index"  # the store's name inside a directory holding it (experiment)

    def check(self, settings: Settings) -> None:
        """Refuse unknown or invalid keys of the index section before anything is touched."""
        self.config.from_dict(dict(settings.get(self.sections[0], {})))

    def info(self, location: str, settings: Settings) -> dict[str, Any]:
        if self.inspect is not None:
            return self.inspect(location, settings)
        store = self.open(location, settings)
        try:
            return store.info()
        finally:
            store.close()

    def serving(
        self, location: str, settings: Settings
    ) -> tuple[VectorStore | Callable[[], VectorStore], StoreSchema]:
        if self.prepare_serving is not None:
            return self.prepare_serving(location, settings)
        store = self.open(location, settings)
        return store, store.schema


def list_ids(store: VectorStore, needed_for: str) -> list[ItemId]:
    """`store.ids()`; Unsupported, saying what needs it, when the store has no listing."""
    listing = getattr(store, "ids", None)
    if not callable(listing):
        name = getattr(store, "backend", type(store).__name__)
        raise Unsupported(
            f"index backend {name!r} ({type(store).__name__}) has no ids() listing, which "
            f"{needed_for} needs: implement VectorStore.ids() -> list of item ids "
            "(index.backend)"
        )
    return list(listing())


def search_cap(store: VectorStore) -> int | None:
    """The largest k one search of `store` may ask for (its `max_k`), or None: no cap."""
    cap = getattr(store, "max_k", None)
    return None if cap is None else int(cap)


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
    "COMMANDS",
    "EF_SEARCH",
    "METRIC",
    "NO_NORMALIZE",
    "NPROBE",
    "ID_RULES",
    "MAX_ABS_UNNORMALIZED",
    "MAX_FILTER_IDS",
    "MAX_ID_CHARS",
    "Backend",
    "BackendUnavailable",
    "InvalidInput",
    "ItemId",
    "NotTrained",
    "Option",
    "SearchResult",
    "Settings",
    "StoreBase",
    "StoreCorrupt",
    "StoreSchema",
    "UnknownItem",
    "Unsupported",
    "VectorStore",
    "WriteFailed",
    "empty_result",
    "exact_search",
    "list_ids",
    "search_cap",
    "string_id_problem",
]
