"""What the routers of one app share: `AppState`, built once by `index.server.create_app`.

The app's routes, one module per area, each a `router(state, ...) -> APIRouter` factory:

- `index.routes_ops`: /health, /ready, /metrics, /v1/snapshot;
- `index.routes_search`: /v1/search, /v1/items/{id}/neighbors, /v1/search/media;
- `index.routes_items`: GET and DELETE /v1/items/{id}, POST /v1/items;
- `index.routes_coldstart`: /v1/coldstart, /v1/coldstart/media;
- `index.routes_browse`: /v1/items/{id}/meta, /v1/items/{id}/image and the page at `/`.

The request models and limits a route declares (body models, `k <= max_k`) belong to the served
index, so routers are made per app; they read the store, auth rule, search executor and metrics
from the AppState they are given.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from coldstart.data.fusion import FusionSpec
from coldstart.index.api import Contract, HTTPError, Models, RouteDocs, decode_upload
from coldstart.index.backend import BackendUnavailable, VectorStore
from coldstart.index.batching import MicroBatcher
from coldstart.index.coldstart import IdRows
from coldstart.index.config import ServerConfig
from coldstart.index.middleware import Metrics

log = logging.getLogger("coldstart.index.server")  # the server's log, as before the split

# encode(images: list[PIL.Image.Image], texts: list[str]) -> (D,) vector; built by `coldstart`.
EncodeFn = Callable[[list[Any], list[str]], np.ndarray]
# Responses with more numbers than this are encoded in a worker thread, not on the loop.
OFFLOAD_NUMBERS = 20_000
_F32_MAX = float(np.finfo(np.float32).max)


def _search_pool() -> concurrent.futures.ThreadPoolExecutor:
    # Unbatched searches get a pool of their own, one thread per core (the default thread
    # pool is shared with body parsing and image decoding).
    return concurrent.futures.ThreadPoolExecutor(max(1, os.cpu_count() or 1), "faiss-search")


@dataclass
class AppState:
    """One app's store handle, configuration, auth rule, search executor and metrics.

    store / error: the loaded store, or why loading failed (None, None while it loads).
    batcher: the micro-batcher while the app runs with `config.batching`; searches otherwise
    run in `search_pool`.
    """

    config: ServerConfig
    token: str | None
    metrics: Metrics
    contract: Contract
    models: Models
    docs: RouteDocs
    encode: EncodeFn | None = None
    id_rows: IdRows | None = None
    store: VectorStore | None = None
    error: str | None = None
    batcher: MicroBatcher | None = None
    content: bool = True  # False: a ranker served alone, no content store to load
    # Coroutine functions awaited at shutdown (e.g. a router's upload batch queue).
    closers: list[Callable[[], Any]] = field(default_factory=list)
    search_pool: concurrent.futures.ThreadPoolExecutor = field(default_factory=_search_pool)

    # ----------------------------------------------------------------- loading
    def load(self, load: Callable[[], VectorStore] | VectorStore) -> None:
        """Open (or adopt) the store; runs in a thread at start-up. A failure is kept in
        `error` for /ready and /health: the server stays up."""
        try:
            loaded = load() if callable(load) else load
            loaded.tune(
                search_threads=self.config.faiss_threads or None,
                blas_threshold=self.config.blas_threshold,
            )
            self.store = loaded
            self.metrics.items.set_function(lambda: _safe_count(loaded))
            self.metrics.lsn.set_function(lambda: loaded.lsn)
            self.metrics.ready.set(1)
            log.info("index ready: %d items; %s", loaded.count(), loaded.health()["backend"])
        except Exception as err:  # reported by /ready and /health, the server stays up
            log.exception("loading the index failed")
            self.error = f"{type(err).__name__}: {err}"

    def loading_detail(self) -> str:
        return f"index failed to load: {self.error}" if self.error else "index loading"

    def require_store(self) -> VectorStore:
        """The loaded store; 503 (Retry-After) while it loads or when loading failed; 501
        when the server has no content store (a ranker served alone)."""
        if not self.content:
            raise HTTPError(501, "no content index: this server serves a ranker only (--index)")
        if self.store is None:
            raise HTTPError(503, self.loading_detail(), {"Retry-After": "1"})
        return self.store

    # ----------------------------------------------------------------- auth (dependencies)
    # Plain functions on purpose: FastAPI runs them in worker threads, as it always has.
    def _check_token(self, request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise HTTPError(401, "missing bearer token", {"WWW-Authenticate": "Bearer"})
        assert self.token is not None
        if not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            raise HTTPError(401, "invalid bearer token", {"WWW-Authenticate": "Bearer"})

    def require_write(self, request: Request) -> None:
        if self.token is None:
            if self.config.insecure_writes:
                return
            raise HTTPError(
                403,
                f"writes are disabled: no token configured (set ${self.config.token_env} or a "
                "token file; or start with --insecure-writes on a trusted host)",
            )
        self._check_token(request)

    def require_read(self, request: Request) -> None:
        if self.config.auth_reads and self.token is not None:
            self._check_token(request)

    @property
    def read(self) -> list[Any]:
        """`dependencies=` of a read route."""
        return [Depends(self.require_read)]

    @property
    def write(self) -> list[Any]:
        """`dependencies=` of a write route."""
        return [Depends(self.require_write)]

    # ----------------------------------------------------------------- search executor
    def run_search(self, queries: np.ndarray, k: int) -> tuple[list[list], list[np.ndarray]]:
        """Runs in a search thread (batcher or unbatched pool)."""
        result = self.require_store().search(queries, k, prepared=True)
        return result.ids, result.scores

    async def search(self, queries: np.ndarray, k: int) -> tuple[list[list], list[np.ndarray]]:
        """(Q, D) prepared queries -> ids and scores per query, off the event loop."""
        if self.batcher is not None:
            return await self.batcher.search(queries, k)
        loop = asyncio.get_running_loop()
        ids, scores = await loop.run_in_executor(self.search_pool, self.run_search, queries, k)
        self.metrics.batch.observe(len(queries))
        return ids, scores

    def start_batcher(self) -> None:
        if self.config.batching:
            self.batcher = MicroBatcher(
                self.run_search,
                self.config.max_batch_size,
                self.config.max_wait_ms,
                on_batch=self.metrics.batch.observe,
                workers=self.config.batch_workers,
            )

    async def close(self, close_store: bool) -> None:
        """Stop searching; close the store too when `close_store`."""
        if self.batcher is not None:
            await self.batcher.close()
        for closer in self.closers:
            await closer()
        self.search_pool.shutdown(wait=False)
        if self.store is not None and close_store:
            await asyncio.to_thread(self.store.close)

    # ----------------------------------------------------------------- work off the loop
    async def prepare(self, store: VectorStore, vectors: Any) -> np.ndarray:
        """Validated query rows (Q, D); in a worker thread when there are many."""
        if len(vectors) * store.dim > OFFLOAD_NUMBERS:
            return await run_in_threadpool(store.schema.prepare, vectors)
        return store.schema.prepare(vectors)

    async def reply(self, payload: dict[str, Any], numbers: int) -> Response:
        """JSON response; encoded in a worker thread when it holds many numbers."""
        if numbers <= OFFLOAD_NUMBERS:
            return JSONResponse(payload)
        body = await run_in_threadpool(_dumps, payload)
        return Response(body, media_type="application/json")

    async def images(self, data: bytes | None) -> list[Any]:
        """The uploaded image, decoded in a worker thread ([] without one)."""
        if data is None:
            return []
        return [await run_in_threadpool(decode_upload, data, self.config.max_image_pixels)]

    @property
    def fusion(self) -> FusionSpec:
        """How an upload's parts are fused: the encoder's (`encode.fusion`, the served
        export's, coldstart.serving), else mean fusion."""
        spec = getattr(self.encode, "fusion", None)
        return spec if isinstance(spec, FusionSpec) else FusionSpec()

    async def embed(
        self,
        images: list[Any],
        texts: list[str],
        store: VectorStore | int | None,
        video: bool = False,
    ) -> np.ndarray:
        """(D,) vector of media through the injected encoder (501 without one). store: the
        index the vector is for, or the dimension it must have (None: unchecked). video: the
        images are a video's frames, pooled over time by `encode.video` when the encoder has
        one (the export's pooling), else as images (mean)."""
        if self.encode is None:
            raise HTTPError(501, "no encoder configured: start the server with --encoder NAME")
        if not images and not texts:
            raise HTTPError(422, "send an image and/or text")
        pool = getattr(self.encode, "video", None) if video else None
        if pool is not None:
            vector = await run_in_threadpool(pool, images)
        else:
            vector = await run_in_threadpool(self.encode, images, texts)
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        dim = store if store is None or isinstance(store, int) else store.dim
        if dim is not None and vector.shape[0] != dim:
            raise RuntimeError(f"encoder returned dim {vector.shape[0]}, index has {dim}")
        return vector


def finite_scores(scores: Any) -> list[float]:
    """Scores as JSON-safe floats, rounded to 6 decimals.

    Inputs are bounded so scores stay finite (index.vector_index.prepare); vectors acknowledged
    before those bounds existed may still overflow: +-inf is clipped to +-float32 max and NaN
    becomes the float32 minimum, so a response is never a 500."""
    arr = np.asarray(scores, dtype=np.float64)
    arr = np.nan_to_num(arr, nan=-_F32_MAX, posinf=_F32_MAX, neginf=-_F32_MAX)
    return arr.round(6).tolist()


def hits(ids: list, scores: np.ndarray) -> dict[str, Any]:
    """A `Hits` body: ids best first and their finite scores."""
    return {"ids": ids, "scores": finite_scores(scores)}


def _safe_count(store: VectorStore) -> float:
    """Items for the Prometheus gauge; NaN while the store cannot say (a scrape never fails)."""
    try:
        return float(store.count())
    except BackendUnavailable:
        return float("nan")


def _dumps(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


__all__ = ["AppState", "EncodeFn", "finite_scores", "hits"]
