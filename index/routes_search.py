"""Search routes: by vectors, by a stored item, by raw media (through the injected encoder)."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, StrictInt, StrictStr

from coldstart.data.video import VideoLimits
from coldstart.index.api import IMAGE_UPLOAD, HTTPError, decode_video_upload, form_body, json_body
from coldstart.index.app_state import AppState, hits
from coldstart.index.backend import VectorStore

ItemIdT = StrictInt | StrictStr


class Hits(BaseModel):
    ids: list[ItemIdT] = Field(description="best first; fewer than k when the index is small")
    scores: list[float] = Field(description="similarity (ip) or squared distance (l2)")


class SearchResponse(BaseModel):
    results: list[Hits] = Field(description="one per query vector, in order")


class Neighbors(Hits):
    id: ItemIdT = Field(description="the item whose neighbours these are (excluded from them)")


async def embed_media(state: AppState, form: Any, store: VectorStore) -> np.ndarray:
    """(D,) vector of a media form (image, video, text) through the injected encoder
    (embed_upload)."""
    images = [] if form.image is None else [form.image]
    texts = [form.text] if form.text else []
    return await embed_upload(state, images, getattr(form, "video", None), texts, store)


async def embed_upload(
    state: AppState,
    images: list[bytes],
    video: bytes | None,
    texts: list[str],
    store: VectorStore | int | None,
) -> np.ndarray:
    """(D,) content vector of an uploaded item as the embed job (encoders.embed) writes its
    row: its "fused" row, or its one modality's row when it has one. The one place the server
    turns raw media into a content vector (search, cold start and the ranker's uploads).

    Each part is a unit vector: the images (one: a photo; several: a carousel, their unit
    vectors averaged, encoders.pooling.pool_mean), the video (K frames sampled uniformly,
    state.config.video_frames, through the image tower and pooled over time as the export
    pooled them: `encode.video`), the text; the parts are then fused as the served export
    fused them (state.fusion, read from its manifest: coldstart.data.fusion, the function the
    embed job writes its "fused" rows with; mean fusion by default). Bad media are a 413 / 415
    / 422 (index.api.decode_upload, decode_video_upload) before the encoder sees anything; a
    weighted fusion with no weight for a part is a 422.
    store: the index the vector is for, or the dimension it must have (None: unchecked).
    """
    decoded = [image for data in images for image in await state.images(data)]
    if video is None and len(decoded) <= 1:
        return await state.embed(decoded, texts, store)  # the encoder fuses as state.fusion
    parts: dict[str, np.ndarray] = {}
    if video is not None:
        config = state.config
        limits = VideoLimits(
            config.max_video_bytes, config.max_video_seconds, config.max_image_pixels
        )
        frames = await run_in_threadpool(
            decode_video_upload, video, limits, config.video_frames
        )  # 413 / 415 / 422 on a bad video, before the encoder sees anything
        parts["video"] = await state.embed(frames, [], store, video=True)  # frames pooled
    if decoded:
        parts["image"] = await state.embed(decoded, [], store)  # a carousel: images pooled
    if texts:
        parts["text"] = await state.embed([], texts, store)
    if len(parts) == 1:
        return next(iter(parts.values()))
    try:
        return state.fusion.fuse_item(parts)  # (D,)
    except ValueError as err:
        raise HTTPError(422, f"this server fuses as its embedding export: {err}") from err


def router(state: AppState) -> APIRouter:
    """POST /v1/search, GET /v1/items/{id}/neighbors, POST /v1/search/media (reads)."""
    api = APIRouter()
    docs, models = state.docs, state.models
    # Bodies are dependencies (index.api): parsed off the loop when large, documented exactly.
    search_body = Depends(json_body(models.search))
    search_media_form = Depends(form_body(models.search_media))

    @api.post(
        "/v1/search",
        tags=["search"],
        dependencies=state.read,
        **docs(SearchResponse, 503, auth="read", json=models.search),
    )
    async def search(body: Any = search_body) -> Response:
        """Batch search: k nearest items for each query vector."""
        store = state.require_store()
        queries = await state.prepare(store, body.vectors)
        ids, scores = await state.search(queries, body.k)
        results = [hits(i, s) for i, s in zip(ids, scores, strict=True)]
        return await state.reply({"results": results}, len(queries) * body.k)

    @api.get(
        "/v1/items/{item_id}/neighbors",
        tags=["search"],
        dependencies=state.read,
        **docs(Neighbors, 404, 422, 503, auth="read"),
    )
    async def neighbors(
        item_id: str,
        k: int = Query(10, ge=1, le=state.config.max_k, description="neighbours to return"),
    ) -> JSONResponse:
        """Nearest items to a stored item (the item itself excluded)."""
        store = state.require_store()
        norm = store.schema.normalize_id(item_id)
        vector = await run_in_threadpool(store.get, [norm])
        ids, scores = await state.search(vector, k + 1)
        pairs = [(i, s) for i, s in zip(ids[0], scores[0], strict=True) if i != norm][:k]
        found = hits([i for i, _ in pairs], np.asarray([s for _, s in pairs]))
        return JSONResponse({"id": norm, **found})

    # Without an encoder the media routes answer 501 and stay out of the document.
    @api.post(
        "/v1/search/media",
        tags=["search"],
        dependencies=state.read,
        include_in_schema=state.encode is not None,
        **docs(Hits, 501, 503, auth="read", form=models.search_media, encoding=IMAGE_UPLOAD),
    )
    async def search_media(form: Any = search_media_form) -> JSONResponse:
        """Search by raw media: the image, video (frames sampled and pooled) and/or text go
        through the encoder, then the index."""
        store = state.require_store()
        vector = await embed_media(state, form, store)
        ids, scores = await state.search(store.schema.prepare(vector), form.k)
        return JSONResponse(hits(ids[0], scores[0]))

    return api
