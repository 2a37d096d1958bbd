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

Layout: `create_app` is a small factory. It builds one `AppState` (index.app_state: store
handle, config, token checks, search executor, metrics) and includes one router per area
(index.routes_ops, _search, _items, _coldstart, _browse). The contract (error model, statuses per
route, request models, OpenAPI document, upload decoding) lives in index.api; every route
declares its statuses through `docs(...)`. Middleware and metrics: index.middleware.

Threads: the event loop only routes requests. Large bodies are parsed and validated, images
decoded, large responses encoded, and every search run in worker threads; searches run in the
"faiss-search" threads of the micro-batcher (or the unbatched pool). `faiss_threads` reaches
the store as `tune(search_threads=...)`; the FAISS store applies it in each thread that
searches (OpenMP settings are per thread).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from coldstart.index import (
    routes_browse,
    routes_coldstart,
    routes_items,
    routes_ops,
    routes_recs,
    routes_search,
)
from coldstart.index.api import (
    Contract,
    RouteDocs,
    build_models,
    error_json,
    install_errors,
    install_openapi,
)
from coldstart.index.app_state import AppState, EncodeFn
from coldstart.index.backend import (
    BackendUnavailable,
    InvalidInput,
    NotTrained,
    StoreSchema,
    UnknownItem,
    Unsupported,
    VectorStore,
    WriteFailed,
)
from coldstart.index.browse import STATIC_DIR, BrowseConfig, Thumbnails
from coldstart.index.catalogue import Catalogue, MediaStore
from coldstart.index.coldstart import IdRows
from coldstart.index.config import ServerConfig
from coldstart.index.middleware import BodyLimitMiddleware, Metrics, MetricsMiddleware
from coldstart.index.recommend import RankerService

log = logging.getLogger(__name__)

API_VERSION = "v1"


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


def create_app(
    load: Callable[[], VectorStore] | VectorStore | None,
    config: ServerConfig | None = None,
    encode: EncodeFn | None = None,
    id_rows: IdRows | None = None,
    close_on_shutdown: bool = True,
    contract: Contract | None = None,
    catalogue: Catalogue | None = None,
    media: MediaStore | None = None,
    browse: BrowseConfig | None = None,
    ranker: RankerService | None = None,
) -> FastAPI:
    """The HTTP app. `load` runs in a thread at start-up (/ready is 503 until it returns).

    load: an open store (index.backend.VectorStore: FAISS or Milvus) or a function that opens
    one (run in a thread: /ready is 503 until it returns).
    contract: what the OpenAPI document and the request models know of the index (dimension,
    id type, normalization; `Contract.from_schema`); taken from `load` when it is an open
    store. Without one, vectors of any length and ids of either kind are documented.
    catalogue / media: what the browsing page at `/` shows about an item (index.browse).
    ranker: a trained ranker served from its own stores (index.recommend): adds the
    recommendation routes (index.routes_recs); its stores close with the app.
    load None (a ranker alone): no content index, so no search, item or cold-start routes;
    /ready and /health report the ranker's stores.
    """
    if load is None and ranker is None:
        raise ValueError("create_app needs a content store (load), a ranker, or both")
    config = config or ServerConfig()
    token = config.token()
    warn_about_auth(config, token)
    if config.id_rows and id_rows is None:
        id_rows = IdRows.from_export(config.id_rows, config.id_rows_modality)
    # A store, not a loader: by its schema (isinstance(load, VectorStore) would also ask for
    # the protocol's optional methods, which a third-party store may lack).
    if contract is None and isinstance(getattr(load, "schema", None), StoreSchema):
        contract = Contract.from_schema(load.schema)  # type: ignore[union-attr]
    contract = replace(
        contract or Contract(), max_k=config.max_k, max_vectors=config.max_vectors_per_request
    )
    docs = RouteDocs(
        token=token is not None,
        auth_reads=config.auth_reads,
        insecure_writes=config.insecure_writes,
    )
    state = AppState(
        config=config,
        token=token,
        metrics=Metrics(),
        contract=contract,
        models=build_models(contract, encoder=encode is not None),
        docs=docs,
        encode=encode,
        id_rows=id_rows,
        content=load is not None,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if load is not None:
            loader = asyncio.create_task(asyncio.to_thread(state.load, load))
            state.start_batcher()
        yield
        if load is not None:
            await loader
        await state.close(close_store=close_on_shutdown)
        if ranker is not None and close_on_shutdown:
            await asyncio.to_thread(ranker.close)

    app = FastAPI(
        title="coldstart index API",
        version=API_VERSION,
        description="Nearest neighbours for cold-start items over a vector store (FAISS with a "
        "write-ahead log, or Milvus). "
        "Every error body is `{detail, errors?}`; writes need the bearer token.",
        lifespan=lifespan,
    )
    app.state.cs = state
    app.state.metrics = state.metrics
    app.state.docs = docs
    app.state.contract = contract
    install_errors(app)
    install_openapi(app, docs, contract)
    install_store_errors(app)

    browse = browse or BrowseConfig()
    thumbnails = Thumbnails(media, config, browse) if media is not None else None
    app.state.thumbnails = thumbnails
    content = (
        [routes_search.router(state), routes_items.router(state), routes_coldstart.router(state)]
        if load is not None
        else []
    )
    for router in (
        routes_ops.router(state, ranker),
        *content,
        routes_browse.router(state, browse, catalogue, thumbnails),
        *([routes_recs.router(state, ranker)] if ranker is not None else []),
    ):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    # Added last = outermost: metrics also count the 413s of the body limit.
    app.add_middleware(
        BodyLimitMiddleware, limit=config.max_body_bytes, timeout_s=config.body_timeout_s
    )
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    return app


def install_store_errors(app: FastAPI) -> None:
    """The store's exceptions (index.backend) as responses of the one error model."""

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

    @app.exception_handler(Unsupported)
    async def _unsupported(request: Request, err: Unsupported) -> JSONResponse:
        log.error("store lacks a method: %s", err)  # a third-party backend to complete
        return error_json(501, str(err))

    @app.exception_handler(BackendUnavailable)
    async def _unavailable(request: Request, err: BackendUnavailable) -> JSONResponse:
        log.error("store unavailable: %s", err)
        return error_json(503, f"store unavailable: {err}", {"Retry-After": "5"})


def run_server(app: FastAPI, host: str = "127.0.0.1", port: int = 8080, **kwargs: Any) -> None:
    """Serve `app` with uvicorn until interrupted (SIGINT/SIGTERM close the index cleanly)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=kwargs.pop("log_level", "info"), **kwargs)


@contextmanager
def serve_in_thread(
    app: FastAPI, host: str = "127.0.0.1", start_timeout_s: float = 20
) -> Iterator[str]:
    """Run `app` under a real uvicorn server on `host`:<free port> in a daemon thread; yields its
    base URL and stops the server on exit (tests and benchmarks talk to it over loopback)."""
    import uvicorn

    with socket.socket() as sock:
        sock.bind((host, 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


__all__ = [
    "API_VERSION",
    "EncodeFn",
    "create_app",
    "install_store_errors",
    "run_server",
    "serve_in_thread",
    "warn_about_auth",
]
