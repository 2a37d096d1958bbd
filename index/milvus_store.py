"""MilvusStore: the vector-store protocol (index.backend) on a Milvus collection.

One client for both deployments (pymilvus picks by URI):
- `uri: runs/idx/items.db`: Milvus Lite, embedded in this process (a directory of files; one
  process may open it at a time).
- `uri: http://host:19530`: a Milvus server or cluster (replicas, many writers, sharding).

Collection layout: primary key `id` (INT64, or VARCHAR for string ids), `vector`
(FLOAT_VECTOR, dim), one vector index (FLAT, IVF_FLAT or HNSW) with metric IP or L2, strong
consistency (a write is visible to the next search, as with FAISS). The store's schema
(normalization, id type) is kept in the collection's properties, so `open` needs only the URI.

Input is validated by the shared `StoreSchema` before any call reaches Milvus (Milvus Lite
accepts NaN vectors and then fails its background index builds for ever). String ids go into
filter expressions as escaped literals (pymilvus' `get(ids=...)` does not escape quotes).

Integrity (Milvus Lite files): Lite can lose acknowledged data without an error (a damaged
collection manifest opens empty, a truncated one falls back to an older state), so the store
keeps its own record beside the file, `<uri>.<collection>.coldstart.json`: the item count and an
order-free digest of the (id, vector) pairs (integrity.pair_digest), updated with each write
(the state before it and the state it leads to: a crash between the two leaves either) and
written to disk at every flush and close. Opening scans the collection and refuses to serve
(StoreCorrupt) when it matches neither. Server URIs keep no record: the cluster's own
durability applies.

pymilvus is imported inside functions: `pip install 'coldstart[milvus]'` provides it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from coldstart.index.backend import (
    EF_SEARCH,
    METRIC,
    NO_NORMALIZE,
    NPROBE,
    Backend,
    BackendUnavailable,
    InvalidInput,
    ItemId,
    Option,
    SearchResult,
    Settings,
    StoreBase,
    StoreCorrupt,
    StoreSchema,
    UnknownItem,
    empty_result,
)
from coldstart.index.integrity import DIGEST_MOD, SlotFile, SlotsUnreadable, pair_hashes

log = logging.getLogger(__name__)

FORMAT = "coldstart-index/1"
INDEX_TYPES = ("FLAT", "IVF_FLAT", "HNSW")
EXTRA_HINT = "install the Milvus extra: pip install 'coldstart[milvus]' (pymilvus + milvus-lite)"
_CHUNK = 1000  # ids per filter expression (get, contains, delete)
_LIST_BATCH = 10_000  # ids per page of a listing (MilvusStore.ids)
MAX_K = 16_384  # Milvus refuses a search limit (topk) above this; Lite is held to it too
_MAX_ID_BYTES = 2048  # VARCHAR length in bytes: 512 characters of up to 4 UTF-8 bytes


@dataclass
class MilvusConfig:
    """Where the collection lives and how it is indexed and searched.

    uri: a Milvus Lite file ("runs/idx/items.db", must end in .db) or a server URI
    ("http://host:19530"). token_env names an environment variable holding the server's token
    ("user:password" or an API key); never put secrets in YAML.
    index_type: FLAT (exact), IVF_FLAT (nlist cells, nprobe searched) or HNSW (hnsw_m links,
    ef_construction at build, ef_search at query). metric: "ip" (cosine when normalize) or "l2".
    dim and id_type are needed only to create a collection; an existing one keeps its own.
    """

    uri: str = "runs/idx/items.db"
    collection: str = "items"
    index_type: str = "FLAT"
    metric: str = "ip"
    normalize: bool = True
    id_type: str = "int"
    dim: int | None = None
    nlist: int = 1024
    nprobe: int = 16
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 128
    token_env: str = "MILVUS_TOKEN"
    db_name: str = ""
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        self.index_type = str(self.index_type).upper()
        if self.index_type not in INDEX_TYPES:
            raise ValueError(f"index_type must be one of {INDEX_TYPES}, got {self.index_type!r}")
        if self.metric not in ("ip", "l2"):
            raise ValueError(f"metric must be 'ip' or 'l2', got {self.metric!r}")
        if self.id_type not in ("int", "str"):
            raise ValueError(f"id_type must be 'int' or 'str', got {self.id_type!r}")
        for name in ("nlist", "nprobe", "hnsw_m", "ef_construction", "ef_search"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1")

    @property
    def is_lite(self) -> bool:
        return self.uri.endswith(".db")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> MilvusConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown MilvusConfig keys: {sorted(unknown)}")
        return cls(**raw)


def _pymilvus() -> Any:
    try:
        import pymilvus  # heavy (grpc, protobuf): only when a Milvus store is used
    except ImportError as err:
        raise BackendUnavailable(f"the milvus backend needs pymilvus: {EXTRA_HINT}") from err
    return pymilvus


def literal(item_id: ItemId) -> str:
    """`item_id` as a Milvus filter-expression literal (strings quoted and escaped)."""
    if isinstance(item_id, int):
        return str(item_id)
    text = (
        item_id.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{text}"'


def id_filter(ids: Sequence[ItemId]) -> str:
    """`id in [...]` over canonical ids."""
    return "id in [" + ",".join(literal(i) for i in ids) + "]"


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True)
class Tally:
    """Item count and order-free digest of a collection's (id, vector) pairs."""

    count: int = 0
    digest: int = 0

    def __str__(self) -> str:
        return f"{self.count} items (digest {self.digest:016x})"


RECORD_MAGIC = b"CSR1"
_RECORD = struct.Struct("<qQqQ")  # count, digest; pending count (-1: none), pending digest


def _pack_record(committed: Tally, pending: Tally | None) -> bytes:
    after = pending or Tally(-1, 0)
    return _RECORD.pack(committed.count, committed.digest, after.count, after.digest)


def record_path(config: MilvusConfig) -> Path | None:
    """Where a Milvus Lite collection's record lives (None for a server URI: none kept)."""
    return Path(f"{config.uri}.{config.collection}.coldstart-record") if config.is_lite else None


class MilvusStore(StoreBase):
    """A Milvus collection behind the VectorStore protocol (see the module docstring)."""

    backend = "milvus"
    max_k = MAX_K  # one search's k (index.backend.search_cap), server and Lite alike

    def __init__(self, client: Any, config: MilvusConfig, schema: StoreSchema, info: dict) -> None:
        self._client = client
        self.config = config
        self.schema = schema
        self._meta = info  # properties, server version, index description
        self._write_mutex = threading.Lock()
        # Milvus has no sequence number we can read back: a microsecond clock, which is larger
        # than the number of every write acknowledged before this store was opened.
        self._lsn = time.time_ns() // 1000
        self._closed = False
        self._record = record_path(config)
        self._slots: SlotFile | None = None  # the open record file
        self._tally: Tally | None = None  # None: no record kept, or unknown after a failed write
        # Each stored pair's hash (integrity.pair_hashes), from the scan at open: a write
        # updates the digest without reading the old vectors back (~16 bytes + dict entry each).
        self._hashes: dict[ItemId, int] = {}

    # ----------------------------------------------------------------- connect
    @staticmethod
    def _connect(config: MilvusConfig) -> tuple[Any, str]:
        """(MilvusClient, server version: "milvus_lite-..." for Milvus Lite)."""

        pymilvus = _pymilvus()
        if config.is_lite:
            try:
                import milvus_lite  # noqa: F401 - pymilvus needs it for .db URIs
            except ImportError as err:
                raise BackendUnavailable(
                    f"a Milvus Lite file ({config.uri}) needs milvus-lite: {EXTRA_HINT}"
                ) from err
            Path(config.uri).parent.mkdir(parents=True, exist_ok=True)
        token = os.environ.get(config.token_env, "") if config.token_env else ""
        try:
            client = pymilvus.MilvusClient(
                uri=config.uri, token=token, db_name=config.db_name, timeout=config.timeout_s
            )
            version = str(client.get_server_version())
        except Exception as err:
            hint = ""
            if config.is_lite and _lite_locked(config.uri):
                hint = " (another process has it open: Milvus Lite allows one process per file)"
            raise BackendUnavailable(f"cannot open Milvus at {config.uri}{hint}: {err}") from err
        return client, version

    @classmethod
    def open(
        cls,
        config: MilvusConfig,
        create: bool = False,
        dim: int | None = None,
        source: dict[str, Any] | None = None,
    ) -> MilvusStore:
        """Open the collection `config.collection`, or create it when `create` (dim from `dim`
        or config.dim). The stored schema (dim, metric, id type, normalization, index type and
        build params) wins over the config; search params (nprobe, ef_search) come from it."""
        client, version = cls._connect(config)
        try:
            exists = client.has_collection(config.collection)
            if not exists and not create:
                raise FileNotFoundError(
                    f"no collection {config.collection!r} at {config.uri} "
                    "(build one with `coldstart index build --backend milvus`)"
                )
            if not exists:
                cls._create_collection(client, config, dim or config.dim, source, _is_lite(version))
            store = cls._from_existing(client, config, version)
            store._check_record(fresh=not exists)
        except BaseException:
            cls._release(client, config)
            raise
        return store

    @classmethod
    def create(
        cls, config: MilvusConfig, dim: int | None = None, source: dict[str, Any] | None = None
    ) -> MilvusStore:
        """A new, empty collection; refuses to touch an existing one (FileExistsError)."""
        client, version = cls._connect(config)
        try:
            if client.has_collection(config.collection):
                raise FileExistsError(
                    f"{config.uri} already holds a collection {config.collection!r}"
                )
            cls._create_collection(client, config, dim or config.dim, source, _is_lite(version))
            store = cls._from_existing(client, config, version)
            store._check_record(fresh=True)
            return store
        except BaseException:
            cls._release(client, config)
            raise

    @staticmethod
    def _create_collection(
        client: Any,
        config: MilvusConfig,
        dim: int | None,
        source: dict[str, Any] | None,
        lite: bool,
    ) -> None:
        from pymilvus import DataType

        if not dim:
            raise InvalidInput("the index dimension is unknown: pass dim or config.dim")
        schema = StoreSchema(int(dim), config.metric, config.id_type, config.normalize)
        fields_ = client.create_schema(auto_id=False, enable_dynamic_field=False)
        if schema.id_type == "int":
            fields_.add_field("id", DataType.INT64, is_primary=True)
        else:
            fields_.add_field("id", DataType.VARCHAR, is_primary=True, max_length=_MAX_ID_BYTES)
        fields_.add_field("vector", DataType.FLOAT_VECTOR, dim=schema.dim)
        build = _build_params(config)
        index = client.prepare_index_params()
        # pymilvus 3 sends build params as flat key/values; Milvus Lite 3.2 reads only the
        # older JSON "params" entry and would silently build with its defaults (nlist 128).
        params = {"params": build} if lite else build
        index.add_index(
            field_name="vector",
            index_type=config.index_type,
            metric_type=schema.metric.upper(),
            params=params,
        )
        properties = {
            "coldstart.format": FORMAT,
            "coldstart.normalize": json.dumps(schema.normalize),
            "coldstart.source": json.dumps(source or {}, sort_keys=True),
        }
        client.create_collection(
            config.collection,
            schema=fields_,
            index_params=index,
            consistency_level="Strong",
            properties=properties,
        )

    @classmethod
    def _from_existing(cls, client: Any, config: MilvusConfig, version: str) -> MilvusStore:
        from pymilvus import DataType

        desc = client.describe_collection(config.collection)
        by_name = {f["name"]: f for f in desc["fields"]}
        if "id" not in by_name or "vector" not in by_name:
            raise InvalidInput(
                f"collection {config.collection!r} is not a coldstart index "
                f"(fields {sorted(by_name)}; expected id and vector)"
            )
        id_type = "int" if by_name["id"]["type"] == DataType.INT64 else "str"
        dim = int(by_name["vector"]["params"]["dim"])
        props = desc.get("properties") or {}
        normalize = json.loads(props.get("coldstart.normalize", json.dumps(config.normalize)))
        index = client.describe_index(config.collection, "vector")
        metric = str(index["metric_type"]).lower()
        schema = StoreSchema(dim, metric, id_type, bool(normalize))
        stored_type = str(index["index_type"]).upper()
        config = MilvusConfig.from_dict(
            {
                **config.to_dict(),
                "index_type": stored_type if stored_type in INDEX_TYPES else config.index_type,
                "metric": metric,
                "id_type": id_type,
                "dim": dim,
                "normalize": bool(normalize),
            }
        )
        client.load_collection(config.collection)  # a reopened Lite collection is "released"
        info = {
            "server": version,
            "lite": _is_lite(version),
            "index": {k: v for k, v in index.items() if k in ("index_type", "params")},
            "source": json.loads(props.get("coldstart.source", "{}")),
            "format": props.get("coldstart.format"),
        }
        return cls(client, config, schema, info)

    @staticmethod
    def _release(client: Any, config: MilvusConfig) -> None:
        try:
            client.close()
        finally:
            if config.is_lite:
                # pymilvus keeps the embedded Lite server (and the directory's lock) until the
                # process exits; release it so the file can be reopened, here or elsewhere.
                from milvus_lite.server_manager import server_manager_instance

                server_manager_instance.release_server(config.uri)

    # ----------------------------------------------------------------- properties
    @property
    def lsn(self) -> int:
        return self._lsn

    def _next_lsn(self) -> int:
        # Never repeats, and increases across restarts, as the FAISS WAL's lsn does.
        self._lsn = max(self._lsn + 1, time.time_ns() // 1000)
        return self._lsn

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self._closed:
            raise BackendUnavailable("the Milvus store is closed")
        for attempt in (0, 1):
            try:
                return fn(*args, timeout=self.config.timeout_s, **kwargs)
            except (InvalidInput, UnknownItem):
                raise
            except Exception as err:  # connection lost, server-side failure: not the caller's
                if attempt == 0 and _not_loaded(err):
                    # A restarted server comes back with the collection released: load it.
                    try:
                        self._client.load_collection(
                            self.config.collection, timeout=self.config.timeout_s
                        )
                        continue
                    except Exception:
                        pass
                raise BackendUnavailable(f"milvus {what} failed: {err}") from err
        raise AssertionError("unreachable")  # pragma: no cover

    # ----------------------------------------------------------------- writes
    def upsert(self, ids: Sequence[Any], vectors: Any, prepared: bool = False) -> int:
        """Insert or replace items (ids (N,), vectors (N, D)) in one Milvus call. Returns lsn."""
        if prepared:
            norm, vecs = list(ids), np.asarray(vectors, dtype=np.float32)
        else:
            norm, vecs = self.schema.check_upsert(ids, vectors)
        if not norm:
            raise InvalidInput("nothing to upsert")
        rows = [{"id": i, "vector": v} for i, v in zip(norm, vecs, strict=True)]
        with self._write_mutex:
            begun = self._begin(norm, vecs)
            try:
                self._call("upsert", self._client.upsert, self.config.collection, rows)
            except BaseException:
                self._end(norm, begun, applied=False)
                raise
            self._end(norm, begun, applied=True)
            return self._next_lsn()

    def delete(self, ids: Sequence[Any]) -> tuple[int, int]:
        """Remove items; unknown ids are ignored. Returns (items removed, lsn)."""
        norm = list(dict.fromkeys(self.schema.normalize_id(i) for i in ids))
        with self._write_mutex:
            # Milvus reports the ids it was asked to delete, not those it found: look first.
            present = [i for i, there in zip(norm, self.contains(norm), strict=True) if there]
            if not present:
                return 0, self._lsn
            for chunk in _chunks(present):
                begun = self._begin(chunk)
                try:
                    self._call(
                        "delete",
                        self._client.delete,
                        self.config.collection,
                        filter=id_filter(chunk),
                    )
                except BaseException:
                    self._end(chunk, begun, applied=False)
                    raise
                self._end(chunk, begun, applied=True)
            return len(present), self._next_lsn()

    # ----------------------------------------------------------------- the record
    def _pages(self, what: str, output: list[str], batch_size: int) -> Iterator[list[dict]]:
        """Every row of the collection (fields `output`, "id" among them), a page of <=
        batch_size rows at a time, paged by primary key: `id > last` with the last id as an
        escaped literal. (pymilvus' query_iterator writes that cursor unescaped, so a string
        id with a quote or backslash at a page's end breaks it; its requests are otherwise
        these: the iterator flag makes each page the smallest ids, in order.)"""
        last: ItemId | None = None
        while True:
            page = self._call(
                what,
                self._client.query,
                self.config.collection,
                filter="" if last is None else f"id > {literal(last)}",
                output_fields=output,
                limit=batch_size,
                iterator="True",
                reduce_stop_for_best="True",
            )
            if not page:
                return
            rows = sorted(page, key=lambda row: _pk_order(row["id"]))
            yield rows
            last = rows[-1]["id"]

    def _scan(self) -> tuple[Tally, dict[ItemId, int]]:
        """Count, digest and pair hashes of the whole collection, in one pass."""
        hashes: dict[ItemId, int] = {}
        for batch in self._pages("scan", ["id", "vector"], _CHUNK):
            ids = [row["id"] for row in batch]
            vecs = np.asarray([row["vector"] for row in batch], dtype=np.float32)
            hashes.update(zip(ids, pair_hashes(ids, vecs), strict=True))
        return Tally(len(hashes), sum(hashes.values()) % DIGEST_MOD), hashes

    def _write_record(
        self, committed: Tally, pending: Tally | None = None, sync: bool = False
    ) -> None:
        """`committed` (the state now) and `pending` (the state the write in flight leads to).
        In the OS when this returns, which a killed process does not lose (as Lite's own log);
        on the disk when `sync` (flush, close)."""
        if self._record is None:
            return
        payload = _pack_record(committed, pending)
        if self._slots is None:
            self._slots = SlotFile(self._record, RECORD_MAGIC, payload, sync_interval_s=None)
        self._slots.write(payload, sync=sync)

    def _begin(
        self, ids: Sequence[ItemId], vectors: np.ndarray | None = None
    ) -> tuple[Tally, dict[ItemId, int]] | None:
        """Before a write replacing or deleting `ids` (upserting `vectors` for them): record
        the state it leads to. Returns it with the new pairs' hashes; None when no record is
        kept."""
        if self._tally is None:
            return None
        new = dict(zip(ids, pair_hashes(ids, vectors), strict=True)) if vectors is not None else {}
        gone = [self._hashes[i] for i in ids if i in self._hashes]
        digest = (self._tally.digest - sum(gone) + sum(new.values())) % DIGEST_MOD
        after = Tally(self._tally.count - len(gone) + len(new), digest)
        self._write_record(self._tally, after)
        return after, new

    def _end(self, ids: Sequence[ItemId], begun: tuple | None, applied: bool) -> None:
        if begun is None:
            return
        if applied:
            self._tally, new = begun
            for item in ids:
                self._hashes.pop(item, None)
            self._hashes.update(new)
            return
        # A failed call may or may not have been applied: stop tracking; the next flush or
        # open counts the collection again. A record that cannot say which state is valid
        # must not stay: it would refuse the next open.
        self._tally, self._hashes = None, {}
        with contextlib.suppress(OSError):
            if self._slots is not None:
                self._slots.close()
                self._slots = None
            self._record.unlink()  # type: ignore[union-attr]

    def _save_record(self) -> None:
        """Write the record to disk (flush, close); recounted when a failed write left the
        state unknown."""
        if self._record is None:
            return
        if self._tally is None:
            self._tally, self._hashes = self._scan()
        self._write_record(self._tally, sync=True)

    def _check_record(self, fresh: bool) -> None:
        """At open: the collection must match its record (the state after the last write, or
        the one a write in flight at a crash led to). Refuses with StoreCorrupt otherwise.
        fresh: a collection created just now (no record yet)."""
        if self._record is None:
            return
        if fresh:
            self._tally = Tally()
            self._write_record(self._tally, sync=True)
            return
        found, hashes = self._scan()
        try:
            payload = SlotFile.read(self._record, RECORD_MAGIC, _RECORD.size)
        except (OSError, SlotsUnreadable) as err:
            raise StoreCorrupt(
                f"{self._record}: unreadable ({err}), so the collection {self.config.uri} "
                "cannot be checked. Refusing to open; delete the record to serve the "
                "collection as it is (a new record is written)."
            ) from err
        if payload is None:
            log.warning(
                "%s: no record of collection %r (written before records, or after a failed "
                "write): recording its %d items now; damage before this is not detectable",
                self._record,
                self.config.collection,
                found.count,
            )
        else:
            count, digest, pending_count, pending_digest = _RECORD.unpack(payload)
            states = [Tally(count, digest), Tally(pending_count, pending_digest)]
            if found not in states:
                raise StoreCorrupt(self._mismatch(found, states))
        self._tally, self._hashes = found, hashes
        self._write_record(found, sync=True)

    def _mismatch(self, found: Tally, states: list[Tally]) -> str:
        want = str(states[0])
        if states[1].count >= 0:
            want += f" (or {states[1]} once its last write is in)"
        return (
            f"{self.config.uri}: collection {self.config.collection!r} holds {found} but this "
            f"store's record {self._record} says {want}: Milvus Lite lost or changed "
            "acknowledged data without an error (for example a damaged or rolled-back "
            f"collections/{self.config.collection}/manifest.json or segment file). Refusing "
            f"to open. Restore {self.config.uri} from a backup; to serve what it holds now, "
            f"delete {self._record} (a new record is written)."
        )

    # ----------------------------------------------------------------- reads
    def _query(self, ids: Sequence[ItemId], output: list[str]) -> dict[ItemId, dict]:
        found: dict[ItemId, dict] = {}
        for chunk in _chunks(ids):
            rows = self._call(
                "query",
                self._client.query,
                self.config.collection,
                filter=id_filter(chunk),
                output_fields=output,
            )
            found.update((row["id"], row) for row in rows)
        return found

    def contains(self, ids: Sequence[Any]) -> list[bool]:
        norm = [self.schema.normalize_id(i) for i in ids]
        found = self._query(list(dict.fromkeys(norm)), ["id"])
        return [i in found for i in norm]

    def get(self, ids: Sequence[Any]) -> np.ndarray:
        """Stored vectors (N, D) of `ids`; UnknownItem when one is absent."""
        norm = [self.schema.normalize_id(i) for i in ids]
        found = self._query(list(dict.fromkeys(norm)), ["id", "vector"])
        missing = [i for i in norm if i not in found]
        if missing:
            raise UnknownItem(f"unknown item id {missing[0]!r}")
        out = np.empty((len(norm), self.dim), dtype=np.float32)
        for row, item in enumerate(norm):
            out[row] = np.asarray(found[item]["vector"], dtype=np.float32)
        return out

    def search(
        self, queries: Any, k: int, ids: Sequence[Any] | None = None, prepared: bool = False
    ) -> SearchResult:
        """k nearest items per query (Q, D); `ids` restricts the candidates."""
        q, allowed = self.schema.check_search(queries, k, ids, prepared)
        if self.max_k is not None and k > self.max_k:
            raise InvalidInput(f"k must be <= {self.max_k} (Milvus' largest search limit)")
        if len(q) == 0 or allowed == []:
            return empty_result(len(q))
        hits = self._call(
            "search",
            self._client.search,
            self.config.collection,
            data=list(q),
            limit=int(k),
            filter=id_filter(allowed) if allowed is not None else "",
            output_fields=["id"],
            anns_field="vector",
            search_params={
                "metric_type": self.schema.metric.upper(),
                "params": _search_params(self.config, k),
            },
        )
        out_ids: list[list[ItemId]] = []
        out_scores: list[np.ndarray] = []
        for row in hits:
            out_ids.append([h["id"] for h in row])
            # Milvus returns inner products for IP and squared distances for L2, as FAISS.
            out_scores.append(np.asarray([h["distance"] for h in row], dtype=np.float32))
        return SearchResult(ids=out_ids, scores=out_scores)

    def ids(self) -> list[ItemId]:
        """Every live item id, paged through the primary key (index.backend.VectorStore)."""
        return [row["id"] for batch in self._pages("list", ["id"], _LIST_BATCH) for row in batch]

    def count(self) -> int:
        rows = self._call(
            "count",
            self._client.query,
            self.config.collection,
            filter="",
            output_fields=["count(*)"],
        )
        return int(rows[0]["count(*)"])

    def tune(
        self,
        nprobe: int | None = None,
        ef_search: int | None = None,
        search_threads: int | None = None,
        blas_threshold: int | None = None,
    ) -> None:
        """Search-time parameters (they travel with every search request). search_threads and
        blas_threshold have no effect: the Milvus server decides how it searches."""
        if nprobe is not None:
            self.config.nprobe = max(1, int(nprobe))
        if ef_search is not None:
            self.config.ef_search = max(1, int(ef_search))

    def health(self) -> dict[str, Any]:
        where = "Milvus Lite in this process" if self._meta["lite"] else "a Milvus server"
        return {
            "device": "milvus-lite" if self._meta["lite"] else "milvus",
            "backend": f"milvus: {where} ({self._meta['server']}), {self.config.uri}, "
            f"collection {self.config.collection!r}, {self.config.index_type}",
            "search_threads": None,
        }

    # ----------------------------------------------------------------- persistence
    def flush(self) -> bool:
        """Seal what is in memory into segment files (and index them); write the record."""
        self._call("flush", self._client.flush, self.config.collection)
        with self._write_mutex:
            self._save_record()
        return True

    def wait_indexed(self, timeout: float = 600.0) -> None:
        """Block until every row is in the vector index (Milvus indexes in the background)."""
        deadline = time.monotonic() + timeout
        while True:
            desc = self._call(
                "describe_index", self._client.describe_index, self.config.collection, "vector"
            )
            if int(desc.get("pending_index_rows", 0) or 0) == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"Milvus still indexing after {timeout:.0f} s: {desc}")
            time.sleep(0.2)

    def info(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "uri": self.config.uri,
            "collection": self.config.collection,
            "format": self._meta.get("format"),
            "server": self._meta["server"],
            "index_type": self.config.index_type,
            "build_params": self._meta["index"].get("params") or _build_params(self.config),
            "search_params": _search_params(self.config, 1),
            **self.schema.to_dict(),
            "live_items": self.count(),
            "source": self._meta.get("source", {}),
        }

    def close(self) -> None:
        if self._closed:
            return
        try:
            with self._write_mutex:
                self._save_record()
                if self._slots is not None:
                    self._slots.close()
        finally:
            self._closed = True
            self._release(self._client, self.config)

    # ----------------------------------------------------------------- bulk build
    @classmethod
    def build(
        cls,
        ids: Sequence[Any],
        vectors: np.ndarray,
        config: MilvusConfig,
        source: dict[str, Any] | None = None,
        batch: int = 5000,
        progress: bool = False,
    ) -> MilvusStore:
        """A new collection holding (ids (N,), vectors (N, D)), flushed and fully indexed."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise InvalidInput(f"vectors must be (N, D), got shape {vectors.shape}")
        store = cls.create(config, dim=vectors.shape[1], source=source)
        try:
            bar = None
            if progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=len(vectors), desc="milvus upsert", unit="items")
            for start in range(0, len(vectors), batch):
                store.upsert(list(ids[start : start + batch]), vectors[start : start + batch])
                if bar is not None:
                    bar.update(min(batch, len(vectors) - start))
            if bar is not None:
                bar.close()
            store.flush()
            store.wait_indexed()
        except BaseException:
            store.close()
            raise
        return store


def _build_params(config: MilvusConfig) -> dict[str, int]:
    if config.index_type == "IVF_FLAT":
        return {"nlist": int(config.nlist)}
    if config.index_type == "HNSW":
        return {"M": int(config.hnsw_m), "efConstruction": int(config.ef_construction)}
    return {}


def _search_params(config: MilvusConfig, k: int) -> dict[str, int]:
    if config.index_type == "IVF_FLAT":
        return {"nprobe": int(min(config.nprobe, config.nlist))}
    if config.index_type == "HNSW":
        return {"ef": int(max(config.ef_search, k))}  # Milvus requires ef >= k
    return {}


def _not_loaded(err: Exception) -> bool:
    """Whether Milvus refused a call because the collection is not loaded (code 101)."""
    return getattr(err, "code", None) == 101 or "released" in str(err) or "not loaded" in str(err)


def _pk_order(item_id: ItemId) -> Any:
    """Milvus' primary-key order: integers, or strings by their UTF-8 bytes."""
    return item_id.encode("utf-8") if isinstance(item_id, str) else item_id


def _is_lite(server_version: str) -> bool:
    return server_version.startswith("milvus_lite")


def _lite_locked(uri: str) -> bool:
    """Whether another process holds the Milvus Lite directory's lock."""
    import fcntl

    lock = Path(uri) / "LOCK"
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- registration
def _config(location: str, settings: Settings) -> MilvusConfig:
    return MilvusConfig.from_dict({**settings.get("milvus", {}), "uri": str(location)})


def _build(
    ids: list[ItemId],
    vectors: np.ndarray,
    location: str,
    settings: Settings,
    source: dict[str, Any],
) -> tuple[MilvusStore, dict[str, Any]]:
    config = _config(location, settings)
    built = MilvusStore.build(ids, vectors, config, source=source, progress=True)
    return built, {"uri": config.uri, "collection": config.collection, "factory": config.index_type}


def _open(location: str, settings: Settings) -> MilvusStore:
    return MilvusStore.open(_config(location, settings))


BACKEND = Backend(
    name="milvus",
    summary="a Milvus collection in a Milvus Lite file (--uri runs/idx/items.db) or on a Milvus "
    "server or cluster (--uri http://host:19530, token in $MILVUS_TOKEN); needs "
    "`pip install 'coldstart[milvus]'`",
    config=MilvusConfig,
    sections=("milvus",),
    options=(
        Option("--uri", "a Milvus Lite file, *.db, or a server, http://host:19530", metavar="URI"),
        Option("--collection", "collection name (default: items)", "collection"),
        Option("--index-type", "the vector index", "index_type", ("build",), choices=INDEX_TYPES),
        METRIC,
        NPROBE,
        EF_SEARCH,
        NO_NORMALIZE,
    ),
    build=_build,
    open=_open,
    location_key="uri",
    factory_key="index_type",
    local_name="index.db",  # Milvus Lite wants a .db name
)

__all__ = ["BACKEND", "MilvusConfig", "MilvusStore", "id_filter", "literal"]
