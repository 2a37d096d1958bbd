"""Ops routes: liveness, readiness, Prometheus metrics, and persisting now (snapshot)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field

from coldstart.index.api import HTTPError, error_json
from coldstart.index.app_state import AppState
from coldstart.index.backend import BackendUnavailable

log = logging.getLogger("coldstart.index.server")  # the server's log, as before the split


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


class SnapshotResponse(BaseModel):
    written: bool = Field(description="false when nothing changed since the last snapshot")
    lsn: int


TEXT_METRICS = {
    "description": "Prometheus text format",
    "content": {"text/plain": {"schema": {"type": "string"}}},
}


def router(state: AppState, ranker: Any = None) -> APIRouter:
    """GET /health, GET /ready, GET /metrics (open), POST /v1/snapshot (write token).

    ranker: an index.recommend.RankerService; without a content store (state.content False)
    readiness, item counts and snapshots are those of its stores."""
    api = APIRouter()
    docs = state.docs

    def ranker_items() -> int:
        return int(ranker.warm.count()) + int(ranker.cold.count())

    @api.get("/health", tags=["ops"], **docs(Health))
    async def health() -> dict[str, Any]:
        """Liveness: the process answers. Says whether the index is loaded and where it runs."""
        store = state.store
        if not state.content:  # a ranker alone: its stores opened before the app started
            return {
                "status": "ok",
                "ready": True,
                "error": None,
                "items": await run_in_threadpool(ranker_items),
                "device": None,
                "backend": ranker.warm.health().get("backend"),
                "batching": False,
                "faiss_threads": None,
            }
        facts = store.health() if store is not None else {}
        items, error = None, state.error
        if store is not None:
            try:  # a liveness probe answers even while a Milvus server is unreachable
                items = await run_in_threadpool(store.count)
            except BackendUnavailable as err:
                error = str(err)
        return {
            "status": "ok",
            "ready": store is not None,
            "error": error,
            "items": items,
            "device": facts.get("device"),
            "backend": facts.get("backend"),
            "batching": state.config.batching,
            "faiss_threads": facts.get("search_threads"),
        }

    @api.get("/ready", tags=["ops"], **docs(Ready, 503, s503="the index is loading or failed"))
    async def ready() -> JSONResponse:
        """Readiness: 200 once the index is loaded, 503 before (or if loading failed)."""
        store = state.store
        if not state.content:
            items = await run_in_threadpool(ranker_items)
            return JSONResponse({"ready": True, "items": items, "lsn": ranker.cold.lsn})
        if store is None:
            detail = state.loading_detail()
            return error_json(503, detail, {"Retry-After": "1"}, ready=False, error=state.error)
        items = await run_in_threadpool(store.count)  # 503 when a Milvus server is unreachable
        return JSONResponse({"ready": True, "items": items, "lsn": store.lsn})

    @api.get("/metrics", tags=["ops"], response_class=PlainTextResponse, **docs(TEXT_METRICS))
    async def prometheus() -> Response:
        """Request counts and latencies per route, batch sizes, items, last log record."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @api.post(
        "/v1/snapshot",
        tags=["ops"],
        dependencies=state.write,
        **docs(SnapshotResponse, 503, auth="write"),
    )
    async def snapshot() -> JSONResponse:
        """Persist now: FAISS writes a snapshot (and resets the write-ahead log); Milvus seals
        its in-memory segments (flush)."""
        # A ranker alone: its stores (the lsn reported is the cold, upload store's).
        stores = [state.require_store()] if state.content else [ranker.warm, ranker.cold]
        try:
            written = [await run_in_threadpool(store.flush) for store in stores]
        except OSError as err:  # disk full...: the log still holds every write
            log.error("snapshot failed: %s", err)
            raise HTTPError(503, f"snapshot failed: {err}", {"Retry-After": "5"}) from err
        return JSONResponse({"written": any(written), "lsn": stores[-1].lsn})

    return api
