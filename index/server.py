"""HTTP API over a vector store (FastAPI + uvicorn): any index.backend.VectorStore, FAISS or
Milvus; this module sees only the protocol.

The server never imports an encoder: media queries go through an injected `encode` callable,
`encode(images: list[PIL.Image.Image], texts: list[str]) -> np.ndarray  # (D,)`, which the
`coldstart` layer builds from an encoder registry.

Reads: POST /v1/search, GET /v1/items/{id}, GET /v1/items/{id}/neighbors, POST /v1/search/media,
POST /v1/coldstart (JSON), POST /v1/coldstart/media (multipart). Writes (bearer token):
POST /v1/items, DELETE /v1/items/{id}, POST /v1/snapshot, cold-start with insert=true.
Ops: GET /health, GET /ready (503 until the index is loaded), GET /metrics (Prometheus).
Browsing (index.browse): GET /v1/items/{id}/meta, GET /v1/items/{id}/image, the page at GET /.

The contract (error model, statuses per route, request models, OpenAPI document) lives in
index.api; every route here declares its statuses through `docs(...)`.

Threads: the event loop only routes requests. Large bodies are parsed and validated, images
decoded, large responses encoded, and every search run in worker threads; searches run in the
"faiss-search" threads of the micro-batcher (or the unbatched pool). `faiss_threads` reaches
the store as `tune(search_threads=...)`; the FAISS store applies it in each thread that
searches (OpenMP settings are per thread).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import io
import json
import logging
import os
import time
import warnings
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field, StrictInt, StrictStr

from coldstart.index.api import (
    IMAGE_UPLOAD,
    Contract,
    HTTPError,
    RouteDocs,
    build_models,
    error_json,
    form_body,
    install_errors,
    install_openapi,
    json_body,
)
from coldstart.index.backend import (
    BackendUnavailable,
    InvalidInput,
    NotTrained,
    UnknownItem,
    VectorStore,
    WriteFailed,
)
from coldstart.index.batching import MicroBatcher
from coldstart.index.catalogue import Catalogue, MediaStore
from coldstart.index.coldstart import IdRows, estimate_row
from coldstart.index.config import ServerConfig

if TYPE_CHECKING:
    from coldstart.index.browse import BrowseConfig

log = logging.getLogger(__name__)

EncodeFn = Callable[[list[Any], list[str]], np.ndarray]
API_VERSION = "v1"
# Responses with more numbers than this are encoded in a worker thread, not on the loop.
OFFLOAD_NUMBERS = 20_000


# ------------------------------------------------------------------------- response models
ItemIdT = StrictInt | StrictStr


class Hits(BaseModel):
    ids: list[ItemIdT] = Field(description="best first; fewer than k when the index is small")
    scores: list[float] = Field(description="similarity (ip) or squared distance (l2)")


class SearchResponse(BaseModel):
    results: list[Hits] = Field(description="one per query vector, in order")


class ItemVector(BaseModel):
    id: ItemIdT
    vector: list[float] = Field(description="as stored (normalized when the index normalizes)")


class Neighbors(Hits):
    id: ItemIdT = Field(description="the item whose neighbours these are (excluded from them)")


class UpsertResponse(BaseModel):
    upserted: int = Field(description="distinct items written")
    lsn: int = Field(
        description="sequence number of the write, increasing with every write (FAISS: the "
        "write-ahead log record that holds it; Milvus: a microsecond sequence)"
    )


class DeleteResponse(BaseModel):
    deleted: ItemIdT
    lsn: int


class SnapshotResponse(BaseModel):
    written: bool = Field(description="false when nothing changed since the last snapshot")
    lsn: int


class ColdStartResponse(BaseModel):
    neighbors: Hits
    id_row: list[float] | None = Field(
        None, description="similarity-weighted mean of the neighbours' ID-embedding rows"
    )
    id_row_neighbors: int = Field(0, description="neighbours that had an ID row")
    inserted: bool = False
    lsn: int | None = None


class Health(BaseModel):
    status: str
    ready: bool
    error: str | None
    items: int | None
    device: str | None
    backend: str | None
    batching: bool
    faiss_threads: int | None = Field(
        description="FAISS: OpenMP threads seen by the last search thread (None before a "
        "search, and with Milvus)"
    )


class Ready(BaseModel):
    ready: bool
    items: int
    lsn: int


# ------------------------------------------------------------------------- middleware
_BODY_METHODS = {"POST", "PUT", "PATCH"}


class BodyLimitMiddleware:
    """413 for bodies over `limit` bytes, by Content-Length or while streaming (chunked).

    Only methods with a body are limited (no route reads the body of a GET or DELETE)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope.get("method") not in _BODY_METHODS:
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", []):
            if name == b"content-length" and scope.get("method") in _BODY_METHODS:
                try:
                    declared = int(value)
                except ValueError:
                    return await _plain(send, 400, "bad Content-Length")
                if declared > self.limit:
                    return await _plain(send, 413, f"body over the {self.limit}-byte limit")
        seen = 0
        started = False

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge()
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _plain(send, 413, f"body over the {self.limit}-byte limit")


class _TooLarge(BaseException):
    """BaseException on purpose: FastAPI turns any Exception raised while reading a body into
    a 400; this one must reach BodyLimitMiddleware to become a 413."""


async def _plain(send: Callable, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()  # the one error model (index.api)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})


class MetricsMiddleware:
    """Request counts and latency per route template (pure ASGI: cheap on the hot path)."""

    def __init__(self, app: Any, metrics: Any) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = [500]

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(scope.get("method", ""), path, str(status[0])).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - start)


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "coldstart_http_requests",
            "HTTP requests by method, route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "coldstart_http_request_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=self.registry,
        )
        self.batch = Histogram(
            "coldstart_search_batch_rows",
            "query rows per FAISS call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024),
            registry=self.registry,
        )
        self.items = Gauge("coldstart_index_items", "items in the index", registry=self.registry)
        self.lsn = Gauge(
            "coldstart_wal_lsn", "last acknowledged WAL record", registry=self.registry
        )
        self.ready = Gauge("coldstart_ready", "1 once the index is loaded", registry=self.registry)


# ------------------------------------------------------------------------- images
def decode_image(data: bytes, max_pixels: int) -> Any:
    """A PIL RGB image from upload bytes; HTTPError 413/415/422 for bombs, non-images, junk."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise HTTPError(422, "empty image upload")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise HTTPError(
                    413, f"image of {width}x{height} pixels exceeds the {max_pixels}-pixel limit"
                )
            image.draft("RGB", (min(width, 4096), min(height, 4096)))  # cheap JPEG downscale
            image.load()
            return image.convert("RGB")
    except HTTPError:
        raise
    except UnidentifiedImageError as err:
        raise HTTPError(415, "upload is not a supported image (JPEG, PNG, WebP, GIF...)") from err
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise HTTPError(413, f"image rejected as a decompression bomb: {err}") from err
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as err:
        raise HTTPError(422, f"corrupt or truncated image: {err}") from err


_F32_MAX = float(np.finfo(np.float32).max)


def finite_scores(scores: Any) -> list[float]:
    """Scores as JSON-safe floats, rounded to 6 decimals.

    Inputs are bounded so scores stay finite (index.vector_index.prepare); vectors acknowledged
    before those bounds existed may still overflow: +-inf is clipped to +-float32 max and NaN
    becomes the float32 minimum, so a response is never a 500."""
    arr = np.asarray(scores, dtype=np.float64)
    arr = np.nan_to_num(arr, nan=-_F32_MAX, posinf=_F32_MAX, neginf=-_F32_MAX)
    return arr.round(6).tolist()


def warn_about_auth(config: ServerConfig, token: str | None) -> list[str]:
    """Log (and return) a warning for each auth setting that leaves the server more open
    than its flags suggest."""
    warnings_: list[str] = []
    if config.insecure_writes and token is None:
        warnings_.append(
            "--insecure-writes and no token: anyone who can reach this server can upsert and "
            "delete items; use it on a trusted host only"
        )
    elif config.insecure_writes:
        warnings_.append("--insecure-writes has no effect: a token is configured, writes need it")
    if config.auth_reads and token is None:
        warnings_.append(
            f"--auth-reads has no effect without a token (set ${config.token_env} or "
            "--token-file): reads are open to anyone"
        )
    for text in warnings_:
        log.warning(text)
    return warnings_


class _State:
    def __init__(self) -> None:
        self.index: VectorStore | None = None
        self.error: str | None = None
        self.batcher: MicroBatcher | None = None


def create_app(
    load: Callable[[], VectorStore] | VectorStore,
    config: ServerConfig | None = None,
    encode: EncodeFn | None = None,
    id_rows: IdRows | None = None,
    close_on_shutdown: bool = True,
    contract: Contract | None = None,
    catalogue: Catalogue | None = None,
    media: MediaStore | None = None,
    browse: BrowseConfig | None = None,
) -> FastAPI:
    """The HTTP app. `load` runs in a thread at start-up (/ready is 503 until it returns).

    load: an open store (index.backend.VectorStore: FAISS or Milvus) or a function that opens
    one (run in a thread: /ready is 503 until it returns).
    contract: what the OpenAPI document and the request models know of the index (dimension,
    id type, normalization; `Contract.from_schema`); taken from `load` when it is an open
    store. Without one, vectors of any length and ids of either kind are documented.
    catalogue / media: what the browsing page at `/` shows about an item (index.browse).
    """
    config = config or ServerConfig()
    token = config.token()
    warn_about_auth(config, token)
    metrics = Metrics()
    state = _State()
    if config.id_rows and id_rows is None:
        id_rows = IdRows.from_export(config.id_rows, config.id_rows_modality)
    if contract is None and isinstance(load, VectorStore):
        contract = Contract.from_schema(load.schema)
    contract = replace(
        contract or Contract(), max_k=config.max_k, max_vectors=config.max_vectors_per_request
    )
    models = build_models(contract, encoder=encode is not None)
    docs = RouteDocs(
        token=token is not None,
        auth_reads=config.auth_reads,
        insecure_writes=config.insecure_writes,
    )

    def _load() -> None:
        try:
            loaded = load() if callable(load) else load
            loaded.tune(
                search_threads=config.faiss_threads or None, blas_threshold=config.blas_threshold
            )
            state.index = loaded
            metrics.items.set_function(lambda: _safe_count(loaded))
            metrics.lsn.set_function(lambda: loaded.lsn)
            metrics.ready.set(1)
            log.info("index ready: %d items; %s", loaded.count(), loaded.health()["backend"])
        except Exception as err:  # reported by /ready and /health, the server stays up
            log.exception("loading the index failed")
            state.error = f"{type(err).__name__}: {err}"

    # Unbatched searches get a pool of their own, one thread per core (the default thread
    # pool is shared with body parsing and image decoding).
    unbatched_pool = concurrent.futures.ThreadPoolExecutor(
        max(1, os.cpu_count() or 1), "faiss-search"
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        loader = asyncio.create_task(asyncio.to_thread(_load))
        if config.batching:
            state.batcher = MicroBatcher(
                _run_search,
                config.max_batch_size,
                config.max_wait_ms,
                on_batch=metrics.batch.observe,
                workers=config.batch_workers,
            )
        yield
        await loader
        if state.batcher is not None:
            await state.batcher.close()
        unbatched_pool.shutdown(wait=False)
        if state.index is not None and close_on_shutdown:
            await asyncio.to_thread(state.index.close)

    app = FastAPI(
        title="coldstart index API",
        version=API_VERSION,
        description="Nearest neighbours for cold-start items over a vector store (FAISS with a "
        "write-ahead log, or Milvus). "
        "Every error body is `{detail, errors?}`; writes need the bearer token.",
        lifespan=lifespan,
    )
    app.state.cs = state
    app.state.metrics = metrics
    app.state.docs = docs  # for modules that add routes (index.browse)
    app.state.contract = contract
    install_errors(app)
    install_openapi(app, docs, contract)

    @app.exception_handler(InvalidInput)
    async def _invalid(request: Request, err: InvalidInput) -> JSONResponse:
        return error_json(422, str(err))

    @app.exception_handler(UnknownItem)
    async def _unknown(request: Request, err: UnknownItem) -> JSONResponse:
        return error_json(404, str(err))

    @app.exception_handler(NotTrained)
    async def _untrained(request: Request, err: NotTrained) -> JSONResponse:
        return error_json(409, str(err))

    @app.exception_handler(WriteFailed)
    async def _write_failed(request: Request, err: WriteFailed) -> JSONResponse:
        log.error("write refused: %s", err)
        return error_json(503, f"write not stored: {err.strerror or err}", {"Retry-After": "5"})

    @app.exception_handler(BackendUnavailable)
    async def _unavailable(request: Request, err: BackendUnavailable) -> JSONResponse:
        log.error("store unavailable: %s", err)
        return error_json(503, f"store unavailable: {err}", {"Retry-After": "5"})

    # --------------------------------------------------------------- dependencies
    def _check_token(request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise HTTPError(401, "missing bearer token", {"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(given.strip().encode(), token.encode()):  # type: ignore[union-attr]
            raise HTTPError(401, "invalid bearer token", {"WWW-Authenticate": "Bearer"})

    def require_write(request: Request) -> None:
        if token is None:
            if config.insecure_writes:
                return
            raise HTTPError(
                403,
                f"writes are disabled: no token configured (set ${config.token_env} or a token "
                "file; or start with --insecure-writes on a trusted host)",
            )
        _check_token(request)

    def require_read(request: Request) -> None:
        if config.auth_reads and token is not None:
            _check_token(request)

    def index() -> VectorStore:
        if state.index is None:
            detail = f"index failed to load: {state.error}" if state.error else "index loading"
            raise HTTPError(503, detail, {"Retry-After": "1"})
        return state.index

    def _run_search(queries: np.ndarray, k: int) -> tuple[list[list], list[np.ndarray]]:
        """Runs in a search thread (batcher or unbatched pool)."""
        result = index().search(queries, k, prepared=True)
        return result.ids, result.scores

    async def _search(queries: np.ndarray, k: int) -> tuple[list[list], list[np.ndarray]]:
        if state.batcher is not None:
            return await state.batcher.search(queries, k)
        loop = asyncio.get_running_loop()
        ids, scores = await loop.run_in_executor(unbatched_pool, _run_search, queries, k)
        metrics.batch.observe(len(queries))
        return ids, scores

    async def _prepare(idx: VectorStore, vectors: Any) -> np.ndarray:
        """Validated query rows (Q, D); in a worker thread when there are many."""
        if len(vectors) * idx.dim > OFFLOAD_NUMBERS:
            return await run_in_threadpool(idx.schema.prepare, vectors)
        return idx.schema.prepare(vectors)

    async def _reply(payload: dict[str, Any], numbers: int) -> Response:
        """JSON response; encoded in a worker thread when it holds many numbers."""
        if numbers <= OFFLOAD_NUMBERS:
            return JSONResponse(payload)
        body = await run_in_threadpool(_dumps, payload)
        return Response(body, media_type="application/json")

    def _hits(ids: list, scores: np.ndarray) -> dict[str, Any]:
        return {"ids": ids, "scores": finite_scores(scores)}

    async def _encode(images: list[Any], texts: list[str], idx: VectorStore) -> np.ndarray:
        if encode is None:
            raise HTTPError(501, "no encoder configured: start the server with --encoder NAME")
        if not images and not texts:
            raise HTTPError(422, "send an image and/or text")
        vector = await run_in_threadpool(encode, images, texts)
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if vector.shape[0] != idx.dim:
            raise RuntimeError(f"encoder returned dim {vector.shape[0]}, index has {idx.dim}")
        return vector

    async def _images(data: bytes | None) -> list[Any]:
        if data is None:
            return []
        return [await run_in_threadpool(decode_image, data, config.max_image_pixels)]

    async def _cold_start(
        idx: VectorStore,
        vector: Any,
        k: int,
        item_id: Any,
        insert: bool,
    ) -> dict[str, Any]:
        norm_id = idx.schema.normalize_id(item_id) if item_id is not None else None
        query = idx.schema.prepare(vector)
        ids, scores = await _search(query, k + 1 if norm_id is not None else k)
        pairs = [(i, s) for i, s in zip(ids[0], scores[0], strict=True) if i != norm_id][:k]
        n_ids = [i for i, _ in pairs]
        n_scores = np.asarray([s for _, s in pairs], dtype=np.float32)
        out: dict[str, Any] = {"neighbors": _hits(n_ids, n_scores), "id_row": None}
        out["id_row_neighbors"] = 0
        if id_rows is not None and n_ids:
            rows, mask = id_rows.lookup(n_ids)
            if mask.any():
                row = estimate_row(rows, n_scores[mask], idx.metric)
                out["id_row"] = finite_scores(row)
                out["id_row_neighbors"] = int(mask.sum())
        out["inserted"] = False
        out["lsn"] = None
        if insert:
            out["lsn"] = await run_in_threadpool(idx.upsert, [norm_id], query, True)
            out["inserted"] = True
        return out

    # --------------------------------------------------------------- ops endpoints
    @app.get("/health", tags=["ops"], **docs(Health))
    async def health() -> dict[str, Any]:
        """Liveness: the process answers. Says whether the index is loaded and where it runs."""
        idx = state.index
        facts = idx.health() if idx is not None else {}
        items, error = None, state.error
        if idx is not None:
            try:  # a liveness probe answers even while a Milvus server is unreachable
                items = await run_in_threadpool(idx.count)
            except BackendUnavailable as err:
                error = str(err)
        return {
            "status": "ok",
            "ready": idx is not None,
            "error": error,
            "items": items,
            "device": facts.get("device"),
            "backend": facts.get("backend"),
            "batching": config.batching,
            "faiss_threads": facts.get("search_threads"),
        }

    @app.get("/ready", tags=["ops"], **docs(Ready, 503, s503="the index is loading or failed"))
    async def ready() -> JSONResponse:
        """Readiness: 200 once the index is loaded, 503 before (or if loading failed)."""
        if state.index is None:
            detail = f"index failed to load: {state.error}" if state.error else "index loading"
            return error_json(503, detail, {"Retry-After": "1"}, ready=False, error=state.error)
        idx = state.index
        items = await run_in_threadpool(idx.count)  # 503 when a Milvus server is unreachable
        return JSONResponse({"ready": True, "items": items, "lsn": idx.lsn})

    text_metrics = {
        "description": "Prometheus text format",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse, **docs(text_metrics))
    async def prometheus() -> Response:
        """Request counts and latencies per route, batch sizes, items, last log record."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # --------------------------------------------------------------- reads
    read = [Depends(require_read)]
    # Bodies are dependencies (index.api): parsed off the loop when large, documented exactly.
    search_body = Depends(json_body(models.search))
    search_media_form = Depends(form_body(models.search_media))
    cold_start_body = Depends(json_body(models.cold_start))
    cold_start_form = Depends(form_body(models.cold_start_media))
    upsert_body = Depends(json_body(models.upsert))

    @app.post(
        "/v1/search",
        tags=["search"],
        dependencies=read,
        **docs(SearchResponse, 503, auth="read", json=models.search),
    )
    async def search(body: Any = search_body) -> Response:
        """Batch search: k nearest items for each query vector."""
        idx = index()
        queries = await _prepare(idx, body.vectors)
        ids, scores = await _search(queries, body.k)
        results = [_hits(i, s) for i, s in zip(ids, scores, strict=True)]
        return await _reply({"results": results}, len(queries) * body.k)

    @app.get(
        "/v1/items/{item_id}",
        tags=["items"],
        dependencies=read,
        **docs(ItemVector, 404, 422, 503, auth="read"),
    )
    async def get_item(item_id: str) -> JSONResponse:
        """The stored vector of an item."""
        idx = index()
        norm = idx.schema.normalize_id(item_id)
        vector = (await run_in_threadpool(idx.get, [norm]))[0]
        return JSONResponse({"id": norm, "vector": vector.astype(np.float64).round(7).tolist()})

    @app.get(
        "/v1/items/{item_id}/neighbors",
        tags=["search"],
        dependencies=read,
        **docs(Neighbors, 404, 422, 503, auth="read"),
    )
    async def neighbors(
        item_id: str,
        k: int = Query(10, ge=1, le=config.max_k, description="neighbours to return"),
    ) -> JSONResponse:
        """Nearest items to a stored item (the item itself excluded)."""
        idx = index()
        norm = idx.schema.normalize_id(item_id)
        vector = await run_in_threadpool(idx.get, [norm])
        ids, scores = await _search(vector, k + 1)
        pairs = [(i, s) for i, s in zip(ids[0], scores[0], strict=True) if i != norm][:k]
        hits = _hits([i for i, _ in pairs], np.asarray([s for _, s in pairs]))
        return JSONResponse({"id": norm, **hits})

    # Without an encoder the media routes answer 501 and stay out of the document.
    @app.post(
        "/v1/search/media",
        tags=["search"],
        dependencies=read,
        include_in_schema=encode is not None,
        **docs(Hits, 501, 503, auth="read", form=models.search_media, encoding=IMAGE_UPLOAD),
    )
    async def search_media(form: Any = search_media_form) -> JSONResponse:
        """Search by raw media: the image and/or text go through the encoder, then the index."""
        idx = index()
        images = await _images(form.image)
        vector = await _encode(images, [form.text] if form.text else [], idx)
        ids, scores = await _search(idx.schema.prepare(vector), form.k)
        return JSONResponse(_hits(ids[0], scores[0]))

    cold_statuses = (409, 501, 503)

    @app.post(
        "/v1/coldstart",
        tags=["cold start"],
        dependencies=read,
        **docs(ColdStartResponse, *cold_statuses, auth="optional", json=models.cold_start),
    )
    async def cold_start(request: Request, body: Any = cold_start_body) -> JSONResponse:
        """A new item by vector or text: its nearest warm items, an estimated ID-embedding row,
        and (insert=true, needs the write token) insertion so it is retrievable at once."""
        if body.insert:
            require_write(request)
        idx = index()
        if body.vector is not None:
            vector = body.vector  # validated and normalized by _cold_start
        else:
            vector = await _encode([], [body.text], idx)
        out = await _cold_start(idx, vector, body.k, body.item_id, body.insert)
        return JSONResponse(out)

    @app.post(
        "/v1/coldstart/media",
        tags=["cold start"],
        dependencies=read,
        include_in_schema=encode is not None,
        **docs(
            ColdStartResponse,
            *cold_statuses,
            auth="optional",
            form=models.cold_start_media,
            encoding=IMAGE_UPLOAD,
        ),
    )
    async def cold_start_media(request: Request, form: Any = cold_start_form) -> JSONResponse:
        """Like /v1/coldstart, from raw media (multipart image and/or text)."""
        if form.insert:
            require_write(request)
        idx = index()
        images = await _images(form.image)
        vector = await _encode(images, [form.text] if form.text else [], idx)
        out = await _cold_start(idx, vector, form.k, form.item_id, form.insert)
        return JSONResponse(out)

    # --------------------------------------------------------------- writes
    write = [Depends(require_write)]

    @app.post(
        "/v1/items",
        tags=["items"],
        dependencies=write,
        **docs(UpsertResponse, 409, 503, auth="write", json=models.upsert),
    )
    async def upsert(body: Any = upsert_body) -> JSONResponse:
        """Insert or replace items; acknowledged once durable (FAISS: fsync'd to the write-ahead
        log; Milvus: accepted by Milvus). 503 with nothing stored when the storage refuses the
        write or the Milvus server is unreachable."""
        idx = index()
        ids = [item.id for item in body.items]
        vectors = [item.vector for item in body.items]
        if any(len(v) != idx.dim for v in vectors):
            raise HTTPError(422, f"every vector must have {idx.dim} values")
        lsn = await run_in_threadpool(idx.upsert, ids, vectors)
        return JSONResponse({"upserted": len(set(ids)), "lsn": lsn})

    @app.delete(
        "/v1/items/{item_id}",
        tags=["items"],
        dependencies=write,
        **docs(DeleteResponse, 404, 422, 503, auth="write"),
    )
    async def delete(item_id: str) -> JSONResponse:
        """Remove an item (404 when unknown)."""
        idx = index()
        norm = idx.schema.normalize_id(item_id)
        removed, lsn = await run_in_threadpool(idx.delete, [norm])
        if not removed:
            raise UnknownItem(f"unknown item id {norm!r}")
        return JSONResponse({"deleted": norm, "lsn": lsn})

    @app.post(
        "/v1/snapshot",
        tags=["ops"],
        dependencies=write,
        **docs(SnapshotResponse, 503, auth="write"),
    )
    async def snapshot() -> JSONResponse:
        """Persist now: FAISS writes a snapshot (and resets the write-ahead log); Milvus seals
        its in-memory segments (flush)."""
        idx = index()
        try:
            written = await run_in_threadpool(idx.flush)
        except OSError as err:  # disk full...: the log still holds every write
            log.error("snapshot failed: %s", err)
            raise HTTPError(503, f"snapshot failed: {err}", {"Retry-After": "5"}) from err
        return JSONResponse({"written": written, "lsn": idx.lsn})

    # --------------------------------------------------------------- browsing page
    from coldstart.index.browse import install_browse  # imports this module: deferred

    install_browse(
        app,
        normalize_id=lambda raw: index().schema.normalize_id(raw),
        require_read=require_read,
        server=config,
        catalogue=catalogue,
        media=media,
        config=browse,
        docs=docs,
    )

    # Added last = outermost: metrics also count the 413s of the body limit.
    app.add_middleware(BodyLimitMiddleware, limit=config.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def _safe_count(store: VectorStore) -> float:
    """Items for the Prometheus gauge; NaN while the store cannot say (a scrape never fails)."""
    try:
        return float(store.count())
    except BackendUnavailable:
        return float("nan")


def _dumps(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def run_server(app: FastAPI, host: str = "127.0.0.1", port: int = 8080, **kwargs: Any) -> None:
    """Serve `app` with uvicorn until interrupted (SIGINT/SIGTERM close the index cleanly)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=kwargs.pop("log_level", "info"), **kwargs)
