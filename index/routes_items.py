"""Item routes: read a stored vector (read rule), insert or replace and delete (write token)."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from coldstart.index.api import HTTPError, json_body
from coldstart.index.app_state import AppState
from coldstart.index.backend import UnknownItem
from coldstart.index.routes_search import ItemIdT


class ItemVector(BaseModel):
    id: ItemIdT
    vector: list[float] = Field(description="as stored (normalized when the index normalizes)")


class UpsertResponse(BaseModel):
    upserted: int = Field(description="distinct items written")
    lsn: int = Field(
        description="sequence number of the write, increasing with every write (FAISS: the "
        "write-ahead log record that holds it; Milvus: a microsecond sequence)"
    )


class DeleteResponse(BaseModel):
    deleted: ItemIdT
    lsn: int


def router(state: AppState) -> APIRouter:
    """GET /v1/items/{id} (read), POST /v1/items and DELETE /v1/items/{id} (write)."""
    api = APIRouter()
    docs = state.docs
    upsert_body = Depends(json_body(state.models.upsert))

    @api.get(
        "/v1/items/{item_id}",
        tags=["items"],
        dependencies=state.read,
        **docs(ItemVector, 404, 422, 503, auth="read"),
    )
    async def get_item(item_id: str) -> JSONResponse:
        """The stored vector of an item."""
        store = state.require_store()
        norm = store.schema.normalize_id(item_id)
        vector = (await run_in_threadpool(store.get, [norm]))[0]
        return JSONResponse({"id": norm, "vector": vector.astype(np.float64).round(7).tolist()})

    @api.post(
        "/v1/items",
        tags=["items"],
        dependencies=state.write,
        **docs(UpsertResponse, 409, 503, auth="write", json=state.models.upsert),
    )
    async def upsert(body: Any = upsert_body) -> JSONResponse:
        """Insert or replace items; acknowledged once durable (FAISS: fsync'd to the write-ahead
        log; Milvus: accepted by Milvus). 503 with nothing stored when the storage refuses the
        write or the Milvus server is unreachable."""
        store = state.require_store()
        ids = [item.id for item in body.items]
        vectors = [item.vector for item in body.items]
        if any(len(v) != store.dim for v in vectors):
            raise HTTPError(422, f"every vector must have {store.dim} values")
        lsn = await run_in_threadpool(store.upsert, ids, vectors)
        return JSONResponse({"upserted": len(set(ids)), "lsn": lsn})

    @api.delete(
        "/v1/items/{item_id}",
        tags=["items"],
        dependencies=state.write,
        **docs(DeleteResponse, 404, 422, 503, auth="write"),
    )
    async def delete(item_id: str) -> JSONResponse:
        """Remove an item (404 when unknown)."""
        store = state.require_store()
        norm = store.schema.normalize_id(item_id)
        removed, lsn = await run_in_threadpool(store.delete, [norm])
        if not removed:
            raise UnknownItem(f"unknown item id {norm!r}")
        return JSONResponse({"deleted": norm, "lsn": lsn})

    return api
