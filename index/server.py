"""HTTP API over a DurableIndex (FastAPI + uvicorn).

The server never imports an encoder: media queries go through an injected `encode` callable,
`encode(images: list[PIL.Image.Image], texts: list[str]) -> np.ndarray  # (D,)`, which the
`coldstart` layer builds from an encoder registry.

Reads: POST /v1/search, GET /v1/items/{id}, GET /v1/items/{id}/neighbors, POST /v1/search/media,
POST /v1/coldstart (JSON), POST /v1/coldstart/media (multipart). Writes (bearer token):
POST /v1/items, DELETE /v1/items/{id}, POST /v1/snapshot, cold-start with insert=true.
Ops: GET /health, GET /ready (503 until the index is loaded), GET /metrics (Prometheus).
Browsing (index.browse): GET /v1/items/{id}/meta, GET /v1/items/{id}/image, the page at GET /.
"""

from __future__ import annotations

import asyncio
import hmac
import io
import logging
import time
import warnings
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from index.batching import MicroBatcher
from index.catalogue import Catalogue, MediaStore
from index.coldstart import IdRows, estimate_row
from index.config import ServerConfig
from index.store import DurableIndex
from index.vector_index import InvalidInput, NotTrained, UnknownItem
from index.wal import WalWriteError

if TYPE_CHECKING:
    from index.browse import BrowseConfig

log = logging.getLogger(__name__)

EncodeFn = Callable[[list[Any], list[str]], np.ndarray]
API_VERSION = "v1"


class HTTPError(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers


# ------------------------------------------------------------------------- schemas
ItemIdT = StrictInt | StrictStr


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    vectors: list[list[float]] = Field(description="(Q, D) query vectors")
    k: int = Field(10, description="neighbours per query")


class Hits(BaseModel):
    ids: list[ItemIdT]
    scores: list[float] = Field(description="similarity (ip) or squared distance (l2)")


class SearchResponse(BaseModel):
    results: list[Hits]


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: ItemIdT
    vector: list[float]


class UpsertRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[Item]


class UpsertResponse(BaseModel):
    upserted: int
    lsn: int


class ColdStartRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    vector: list[float] | None = Field(None, description="content vector of the new item")
    text: str | None = Field(None, description="text to encode (needs an encoder)")
    k: int = 10
    item_id: ItemIdT | None = Field(None, description="id of the new item (needed to insert)")
    insert: bool = Field(False, description="insert it so it is retrievable at once")


class ColdStartResponse(BaseModel):
    neighbors: Hits
    id_row: list[float] | None = Field(
        None, description="similarity-weighted mean of the neighbours' ID-embedding rows"
    )
    id_row_neighbors: int = Field(0, description="neighbours that had an ID row")
    inserted: bool = False
    lsn: int | None = None


# ------------------------------------------------------------------------- middleware
class BodyLimitMiddleware:
    """413 for bodies over `limit` bytes, by Content-Length or while streaming (chunked)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
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
    body = ('{"detail":"' + detail + '"}').encode()
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


# ------------------------------------------------------------------------- app
_F32_MAX = float(np.finfo(np.float32).max)


def finite_scores(scores: Any) -> list[float]:
    """Scores as JSON-safe floats, rounded to 6 decimals.

    Inputs are bounded so scores stay finite (index.vector_index.prepare); vectors acknowledged
    before those bounds existed may still overflow: +-inf is clipped to +-float32 max and NaN
    becomes the float32 minimum, so a response is never a 500."""
    arr = np.asarray(scores, dtype=np.float64)
    arr = np.nan_to_num(arr, nan=-_F32_MAX, posinf=_F32_MAX, neginf=-_F32_MAX)
    return arr.round(6).tolist()


class _State:
    def __init__(self) -> None:
        self.index: DurableIndex | None = None
        self.error: str | None = None
        self.batcher: MicroBatcher | None = None


def create_app(
    load: Callable[[], DurableIndex] | DurableIndex,
    config: ServerConfig | None = None,
    encode: EncodeFn | None = None,
    id_rows: IdRows | None = None,
    close_on_shutdown: bool = True,
    catalogue: Catalogue | None = None,
    media: MediaStore | None = None,
    browse: BrowseConfig | None = None,
) -> FastAPI:
    """The HTTP app. `load` runs in a thread at start-up (/ready is 503 until it returns).

    catalogue / media: what the browsing page at `/` shows about an item (index.browse).
    """
    config = config or ServerConfig()
    token = config.token()
    metrics = Metrics()
    state = _State()
    if config.id_rows and id_rows is None:
        id_rows = IdRows.from_export(config.id_rows, config.id_rows_modality)

    def _load() -> None:
        try:
            import faiss

            if config.faiss_threads > 0:
                faiss.omp_set_num_threads(config.faiss_threads)
            if config.blas_threshold is not None:
                faiss.cvar.distance_compute_blas_threshold = int(config.blas_threshold)
            loaded = load() if callable(load) else load
            loaded.index.start_replicas()
            state.index = loaded
            metrics.items.set_function(lambda: len(loaded))
            metrics.lsn.set_function(lambda: loaded.lsn)
            metrics.ready.set(1)
            log.info("index ready: %d items on %s", len(loaded), loaded.index.device)
        except Exception as err:  # reported by /ready and /health, the server stays up
            log.exception("loading the index failed")
            state.error = f"{type(err).__name__}: {err}"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        loader = asyncio.create_task(asyncio.to_thread(_load))
        if config.batching:
            state.batcher = MicroBatcher(
                _batched_search,
                config.max_batch_size,
                config.max_wait_ms,
                on_batch=metrics.batch.observe,
                workers=config.batch_workers,
            )
        yield
        await loader
        if state.batcher is not None:
            await state.batcher.close()
        if state.index is not None and close_on_shutdown:
            await asyncio.to_thread(state.index.close)

    app = FastAPI(
        title="coldstart index API",
        version=API_VERSION,
        description="Nearest neighbours for cold-start items over a durable FAISS index.",
        lifespan=lifespan,
    )
    app.state.cs = state
    app.state.metrics = metrics

    @app.exception_handler(HTTPError)
    async def _http_error(request: Request, err: HTTPError) -> JSONResponse:
        return JSONResponse({"detail": err.detail}, status_code=err.status, headers=err.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, err: RequestValidationError) -> JSONResponse:
        # FastAPI's default echoes the input back, and NaN/inf inputs cannot be JSON-encoded
        # (a 500): keep only where and what went wrong.
        errors = [
            {
                "loc": [str(p) for p in e.get("loc", ())],
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type", "")),
            }
            for e in err.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(InvalidInput)
    async def _invalid(request: Request, err: InvalidInput) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=422)

    @app.exception_handler(UnknownItem)
    async def _unknown(request: Request, err: UnknownItem) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=404)

    @app.exception_handler(WalWriteError)
    async def _wal_failed(request: Request, err: WalWriteError) -> JSONResponse:
        log.error("write refused: %s", err)
        return JSONResponse(
            {"detail": f"write not stored: {err.strerror or err}"},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(NotTrained)
    async def _untrained(request: Request, err: NotTrained) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=409)

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

    def index() -> DurableIndex:
        if state.index is None:
            detail = f"index failed to load: {state.error}" if state.error else "index loading"
            raise HTTPError(503, detail, {"Retry-After": "1"})
        return state.index

    def _check_k(k: int) -> int:
        if not 1 <= k <= config.max_k:
            raise HTTPError(422, f"k must be between 1 and {config.max_k}, got {k}")
        return k

    def _batched_search(queries: np.ndarray, k: int) -> tuple[list[list], list[np.ndarray]]:
        result = index().index.search(queries, k, prepared=True)
        return result.ids, result.scores

    async def _search(queries: np.ndarray, k: int) -> tuple[list[list], list[np.ndarray]]:
        if state.batcher is not None:
            return await state.batcher.search(queries, k)
        result = await run_in_threadpool(index().index.search, queries, k, True)
        metrics.batch.observe(len(queries))
        return result.ids, result.scores

    def _hits(ids: list, scores: np.ndarray) -> dict[str, Any]:
        return {"ids": ids, "scores": finite_scores(scores)}

    async def _encode(images: list[Any], texts: list[str], idx: DurableIndex) -> np.ndarray:
        if encode is None:
            raise HTTPError(501, "no encoder configured: start the server with --encoder NAME")
        if not images and not texts:
            raise HTTPError(422, "send an image and/or text")
        vector = await run_in_threadpool(encode, images, texts)
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if vector.shape[0] != idx.index.dim:
            raise HTTPError(
                500, f"encoder returned dim {vector.shape[0]}, index has {idx.index.dim}"
            )
        return vector

    async def _cold_start(
        idx: DurableIndex,
        vector: Any,
        k: int,
        item_id: Any,
        insert: bool,
        request: Request,
    ) -> dict[str, Any]:
        _check_k(k)
        if insert:
            require_write(request)
            if item_id is None:
                raise HTTPError(422, "insert=true needs an item_id")
        norm_id = idx.index.normalize_id(item_id) if item_id is not None else None
        query = idx.index.prepare(vector)
        ids, scores = await _search(query, k + 1 if norm_id is not None else k)
        pairs = [(i, s) for i, s in zip(ids[0], scores[0], strict=True) if i != norm_id][:k]
        n_ids = [i for i, _ in pairs]
        n_scores = np.asarray([s for _, s in pairs], dtype=np.float32)
        out: dict[str, Any] = {"neighbors": _hits(n_ids, n_scores), "id_row": None}
        out["id_row_neighbors"] = 0
        if id_rows is not None and n_ids:
            rows, mask = id_rows.lookup(n_ids)
            if mask.any():
                row = estimate_row(rows, n_scores[mask], idx.index.config.metric)
                out["id_row"] = np.asarray(row, dtype=np.float64).round(6).tolist()
                out["id_row_neighbors"] = int(mask.sum())
        out["inserted"] = False
        out["lsn"] = None
        if insert:
            out["lsn"] = await run_in_threadpool(idx.upsert, [norm_id], query)
            out["inserted"] = True
        return out

    # --------------------------------------------------------------- ops endpoints
    @app.get("/health", tags=["ops"])
    async def health() -> dict[str, Any]:
        """Liveness: the process answers. Says whether the index is loaded and where it runs."""
        idx = state.index
        return {
            "status": "ok",
            "ready": idx is not None,
            "error": state.error,
            "items": len(idx) if idx is not None else None,
            "device": idx.index.device if idx is not None else None,
            "backend": idx.index.backend_note if idx is not None else None,
            "batching": config.batching,
        }

    @app.get("/ready", tags=["ops"])
    async def ready() -> JSONResponse:
        """Readiness: 200 once the index is loaded, 503 before (or if loading failed)."""
        if state.index is None:
            return JSONResponse(
                {"ready": False, "error": state.error},
                status_code=503,
                headers={"Retry-After": "1"},
            )
        return JSONResponse({"ready": True, "items": len(state.index), "lsn": state.index.lsn})

    @app.get("/metrics", tags=["ops"])
    async def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # --------------------------------------------------------------- reads
    @app.post(
        "/v1/search",
        tags=["search"],
        dependencies=[Depends(require_read)],
        responses={200: {"model": SearchResponse}},
    )
    async def search(body: SearchRequest) -> JSONResponse:
        """Batch search: k nearest items for each query vector."""
        idx = index()
        _check_k(body.k)
        if not body.vectors:
            raise HTTPError(422, "vectors must not be empty")
        if len(body.vectors) > config.max_vectors_per_request:
            raise HTTPError(422, f"at most {config.max_vectors_per_request} vectors per request")
        queries = idx.index.prepare(body.vectors)
        ids, scores = await _search(queries, body.k)
        results = [_hits(i, s) for i, s in zip(ids, scores, strict=True)]
        return JSONResponse({"results": results})

    @app.get("/v1/items/{item_id}", tags=["items"], dependencies=[Depends(require_read)])
    async def get_item(item_id: str) -> JSONResponse:
        """The stored vector of an item."""
        idx = index()
        vector = idx.index.get([item_id])[0]
        norm = idx.index.normalize_id(item_id)
        return JSONResponse({"id": norm, "vector": vector.astype(np.float64).round(7).tolist()})

    @app.get(
        "/v1/items/{item_id}/neighbors",
        tags=["search"],
        dependencies=[Depends(require_read)],
        responses={200: {"model": Hits}},
    )
    async def neighbors(item_id: str, k: int = 10) -> JSONResponse:
        """Nearest items to a stored item (the item itself excluded)."""
        idx = index()
        _check_k(k)
        norm = idx.index.normalize_id(item_id)
        vector = idx.index.get([norm])
        ids, scores = await _search(vector, k + 1)
        pairs = [(i, s) for i, s in zip(ids[0], scores[0], strict=True) if i != norm][:k]
        hits = _hits([i for i, _ in pairs], np.asarray([s for _, s in pairs]))
        return JSONResponse({"id": norm, **hits})

    @app.post(
        "/v1/search/media",
        tags=["search"],
        dependencies=[Depends(require_read)],
        responses={200: {"model": Hits}},
    )
    async def search_media(
        image: Annotated[
            UploadFile | None, File(description="an image (JPEG, PNG, WebP...)")
        ] = None,
        text: Annotated[str | None, Form(description="title, description or tags")] = None,
        k: Annotated[int, Form()] = 10,
    ) -> JSONResponse:
        """Search by raw media: the image and/or text go through the encoder, then the index."""
        idx = index()
        _check_k(k)
        images = [decode_image(await image.read(), config.max_image_pixels)] if image else []
        vector = await _encode(images, [text] if text else [], idx)
        ids, scores = await _search(idx.index.prepare(vector), k)
        return JSONResponse(_hits(ids[0], scores[0]))

    @app.post(
        "/v1/coldstart",
        tags=["cold start"],
        dependencies=[Depends(require_read)],
        responses={200: {"model": ColdStartResponse}},
    )
    async def cold_start(body: ColdStartRequest, request: Request) -> JSONResponse:
        """A new item by vector or text: its nearest warm items, an estimated ID-embedding row,
        and (insert=true, needs the write token) insertion so it is retrievable at once."""
        idx = index()
        if (body.vector is None) == (body.text is None):
            raise HTTPError(422, "send exactly one of vector or text")
        if body.vector is not None:
            vector = body.vector  # validated (finite, dim, float32 range) by prepare()
        else:
            vector = await _encode([], [body.text or ""], idx)
        out = await _cold_start(idx, vector, body.k, body.item_id, body.insert, request)
        return JSONResponse(out)

    @app.post(
        "/v1/coldstart/media",
        tags=["cold start"],
        dependencies=[Depends(require_read)],
        responses={200: {"model": ColdStartResponse}},
    )
    async def cold_start_media(
        request: Request,
        image: Annotated[UploadFile | None, File()] = None,
        text: Annotated[str | None, Form()] = None,
        k: Annotated[int, Form()] = 10,
        item_id: Annotated[str | None, Form()] = None,
        insert: Annotated[bool, Form()] = False,
    ) -> JSONResponse:
        """Like /v1/coldstart, from raw media (multipart image and/or text)."""
        idx = index()
        _check_k(k)
        if insert:
            require_write(request)
        images = [decode_image(await image.read(), config.max_image_pixels)] if image else []
        vector = await _encode(images, [text] if text else [], idx)
        out = await _cold_start(idx, vector, k, item_id, insert, request)
        return JSONResponse(out)

    # --------------------------------------------------------------- writes
    @app.post(
        "/v1/items",
        tags=["items"],
        dependencies=[Depends(require_write)],
        responses={200: {"model": UpsertResponse}},
    )
    async def upsert(body: UpsertRequest) -> JSONResponse:
        """Insert or replace items; acknowledged once fsync'd to the write-ahead log."""
        idx = index()
        if not body.items:
            raise HTTPError(422, "items must not be empty")
        if len(body.items) > config.max_vectors_per_request:
            raise HTTPError(422, f"at most {config.max_vectors_per_request} items per request")
        ids = [item.id for item in body.items]
        vectors = [item.vector for item in body.items]
        if any(len(v) != idx.index.dim for v in vectors):
            raise HTTPError(422, f"every vector must have {idx.index.dim} values")
        lsn = await run_in_threadpool(idx.upsert, ids, vectors)
        return JSONResponse({"upserted": len(ids), "lsn": lsn})

    @app.delete("/v1/items/{item_id}", tags=["items"], dependencies=[Depends(require_write)])
    async def delete(item_id: str) -> JSONResponse:
        """Remove an item (404 when unknown)."""
        idx = index()
        norm = idx.index.normalize_id(item_id)
        removed, lsn = await run_in_threadpool(idx.delete, [norm])
        if not removed:
            raise UnknownItem(f"unknown item id {norm!r}")
        return JSONResponse({"deleted": norm, "lsn": lsn})

    @app.post("/v1/snapshot", tags=["ops"], dependencies=[Depends(require_write)])
    async def snapshot() -> JSONResponse:
        """Write a snapshot now (and reset the write-ahead log)."""
        idx = index()
        try:
            written = await run_in_threadpool(idx.snapshot)
        except OSError as err:  # disk full...: the log still holds every write
            log.error("snapshot failed: %s", err)
            raise HTTPError(503, f"snapshot failed: {err}", {"Retry-After": "5"}) from err
        return JSONResponse({"written": written, "lsn": idx.lsn})

    # --------------------------------------------------------------- browsing page
    from index.browse import install_browse  # imports this module: deferred

    install_browse(
        app,
        normalize_id=lambda raw: index().index.normalize_id(raw),
        require_read=require_read,
        server=config,
        catalogue=catalogue,
        media=media,
        config=browse,
    )

    # Added last = outermost: metrics also count the 413s of the body limit.
    app.add_middleware(BodyLimitMiddleware, limit=config.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def run_server(app: FastAPI, host: str = "127.0.0.1", port: int = 8080, **kwargs: Any) -> None:
    """Serve `app` with uvicorn until interrupted (SIGINT/SIGTERM close the index cleanly)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=kwargs.pop("log_level", "info"), **kwargs)
