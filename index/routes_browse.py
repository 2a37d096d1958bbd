"""Browse routes: an item's catalogue row and thumbnail, and the browsing page at `/`
(index.browse holds the parts: thumbnails, page, settings)."""

from __future__ import annotations

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response

from coldstart.index.api import HTTPError
from coldstart.index.app_state import AppState
from coldstart.index.browse import PAGE_CSP, BrowseConfig, ItemMeta, Thumbnails, page_html
from coldstart.index.catalogue import Catalogue, ItemId, MediaStore

JPEG_RESPONSE = {
    "description": "JPEG thumbnail",
    "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}},
}


def router(
    state: AppState,
    config: BrowseConfig,
    catalogue: Catalogue | None = None,
    thumbnails: Thumbnails | None = None,
) -> APIRouter:
    """GET /v1/items/{id}/meta and GET /v1/items/{id}/image (reads), and the page at `/`
    (always open: it holds no data). The `/static` assets are mounted by the app factory."""
    api = APIRouter()
    docs = state.docs
    media: MediaStore | None = thumbnails.media if thumbnails is not None else None
    visibility = "private" if state.config.auth_reads else "public"
    cache_control = f"{visibility}, max-age={config.max_age_s}"
    # 422: a malformed id or size; 503: the index is loading (the id rule needs it).
    statuses = (404, 422, 503)

    def normalize_id(raw: str) -> ItemId:
        # The index's id rule, so the catalogue and media store find rows keyed in its id type.
        return state.require_store().schema.normalize_id(raw)

    @api.get(
        "/v1/items/{item_id}/meta",
        tags=["items"],
        dependencies=state.read,
        **docs(ItemMeta, *statuses, auth="read", s404="not in the catalogue"),
    )
    async def item_meta(item_id: str) -> JSONResponse:
        """Catalogue fields of an item (title first), and whether it has an image."""
        norm = normalize_id(item_id)
        row = catalogue.get(norm) if catalogue is not None else None
        if row is None:
            why = "" if catalogue is not None else " (the server was started without --catalogue)"
            raise HTTPError(404, f"item {norm!r} is not in the catalogue{why}")
        row["has_image"] = media is not None and norm in media
        return JSONResponse(row, headers={"Cache-Control": cache_control})

    @api.get(
        "/v1/items/{item_id}/image",
        tags=["items"],
        dependencies=state.read,
        response_class=Response,
        **docs(
            JPEG_RESPONSE,
            *statuses,
            413,
            415,
            auth="read",
            s404="no image for this item",
            s413="stored image over the upload limits",
            s415="stored media is not an image",
        ),
    )
    async def item_image(
        item_id: str,
        size: int = Query(
            config.thumb_size,
            ge=config.min_thumb_size,
            le=config.max_thumb_size,
            description="longest side in pixels, rounded up to the next of the fixed thumbnail sizes "
            "(at most max_thumb_size), so that every size shares one cached decode",
        ),
    ) -> Response:
        """A thumbnail of the item's image: longest side `size` rounded up to the next fixed size
        (never upscaled past the image), cached."""
        norm = normalize_id(item_id)
        if thumbnails is None or norm not in thumbnails.media:
            why = "" if thumbnails is not None else " (the server was started without --media)"
            raise HTTPError(404, f"item {norm!r} has no image{why}")
        thumb = await run_in_threadpool(thumbnails.get, norm, size)
        return Response(thumb, media_type="image/jpeg", headers={"Cache-Control": cache_control})

    page = page_html(state.config, config, catalogue, media)

    @api.get("/", include_in_schema=False)
    async def browse_page() -> HTMLResponse:
        return HTMLResponse(
            page,
            headers={
                "Content-Security-Policy": PAGE_CSP,
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-cache",
            },
        )

    return api
