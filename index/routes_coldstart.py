"""Cold-start routes: a new item's nearest warm items, an estimated ID-embedding row, and
(insert=true, write token) its insertion, from a vector, text or raw media."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from coldstart.index.api import IMAGE_UPLOAD, form_body, json_body
from coldstart.index.app_state import AppState, finite_scores, hits
from coldstart.index.backend import VectorStore
from coldstart.index.coldstart import estimate_row
from coldstart.index.routes_search import Hits, embed_media


class ColdStartResponse(BaseModel):
    neighbors: Hits
    id_row: list[float] | None = Field(
        None, description="similarity-weighted mean of the neighbours' ID-embedding rows"
    )
    id_row_neighbors: int = Field(0, description="neighbours that had an ID row")
    inserted: bool = False
    lsn: int | None = None


async def cold_start_item(
    state: AppState, store: VectorStore, vector: Any, k: int, item_id: Any, insert: bool
) -> dict[str, Any]:
    """The ColdStartResponse body of a new item's content vector (validated here)."""
    norm_id = store.schema.normalize_id(item_id) if item_id is not None else None
    query = store.schema.prepare(vector)
    ids, scores = await state.search(query, k + 1 if norm_id is not None else k)
    pairs = [(i, s) for i, s in zip(ids[0], scores[0], strict=True) if i != norm_id][:k]
    n_ids = [i for i, _ in pairs]
    n_scores = np.asarray([s for _, s in pairs], dtype=np.float32)
    out: dict[str, Any] = {"neighbors": hits(n_ids, n_scores), "id_row": None}
    out["id_row_neighbors"] = 0
    if state.id_rows is not None and n_ids:
        rows, mask = state.id_rows.lookup(n_ids)
        if mask.any():
            row = estimate_row(rows, n_scores[mask], store.metric)
            out["id_row"] = finite_scores(row)
            out["id_row_neighbors"] = int(mask.sum())
    out["inserted"] = False
    out["lsn"] = None
    if insert:
        out["lsn"] = await run_in_threadpool(store.upsert, [norm_id], query, True)
        out["inserted"] = True
    return out


def router(state: AppState) -> APIRouter:
    """POST /v1/coldstart (JSON) and POST /v1/coldstart/media (multipart): reads, except that
    insert=true needs the write token."""
    api = APIRouter()
    docs, models = state.docs, state.models
    cold_start_body = Depends(json_body(models.cold_start))
    cold_start_form = Depends(form_body(models.cold_start_media))
    statuses = (409, 501, 503)

    @api.post(
        "/v1/coldstart",
        tags=["cold start"],
        dependencies=state.read,
        **docs(ColdStartResponse, *statuses, auth="optional", json=models.cold_start),
    )
    async def cold_start(request: Request, body: Any = cold_start_body) -> JSONResponse:
        """A new item by vector or text: its nearest warm items, an estimated ID-embedding row,
        and (insert=true, needs the write token) insertion so it is retrievable at once."""
        if body.insert:
            state.require_write(request)
        store = state.require_store()
        if body.vector is not None:
            vector = body.vector  # validated and normalized by cold_start_item
        else:
            vector = await state.embed([], [body.text], store)
        out = await cold_start_item(state, store, vector, body.k, body.item_id, body.insert)
        return JSONResponse(out)

    # Without an encoder this route answers 501 and stays out of the document.
    @api.post(
        "/v1/coldstart/media",
        tags=["cold start"],
        dependencies=state.read,
        include_in_schema=state.encode is not None,
        **docs(
            ColdStartResponse,
            *statuses,
            auth="optional",
            form=models.cold_start_media,
            encoding=IMAGE_UPLOAD,
        ),
    )
    async def cold_start_media(request: Request, form: Any = cold_start_form) -> JSONResponse:
        """Like /v1/coldstart, from raw media (multipart image, video and/or text)."""
        if form.insert:
            state.require_write(request)
        store = state.require_store()
        vector = await embed_media(state, form, store)
        out = await cold_start_item(state, store, vector, form.k, form.item_id, form.insert)
        return JSONResponse(out)

    return api
