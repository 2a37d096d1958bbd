"""The browsing page and the item routes it needs: catalogue fields and thumbnails.

Routes (added to the app by `install_browse`):

- `GET /v1/items/{id}/meta`: the item's catalogue row, `{"id", "title", "fields", "has_image"}`;
  404 when the catalogue does not know the id.
- `GET /v1/items/{id}/image?size=`: a JPEG thumbnail (longest side <= size) read from the media
  shards, cached in memory; 404 when the item has no image. Stored images go through the upload
  guards: more bytes than the body limit or more pixels than `max_image_pixels` -> 413, not an
  image -> 415, corrupt -> 422.
- `GET /`: the page (static HTML + plain JavaScript from `index/static/`, no build step, no CDN),
  served with a strict Content-Security-Policy; `/static/*` its assets.

Reads here follow the server's read rule (open unless `--auth-reads`); the page itself holds no
data and is always open.
"""

from __future__ import annotations

import html
import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from coldstart.data.resources import package_path
from coldstart.index.api import HTTPError, RouteDocs
from coldstart.index.catalogue import ByteLRU, Catalogue, ItemId, MediaStore
from coldstart.index.config import ServerConfig, _from_dict
from coldstart.index.server import decode_image

log = logging.getLogger(__name__)

STATIC_DIR = package_path("coldstart.index", "static")
# The page loads only its own script, styles and API; images may also be blob: URLs (thumbnails
# fetched with a token under --auth-reads) or the data: URL of a local preview.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)


@dataclass
class BrowseConfig:
    """Thumbnails of the item image route (YAML section `browse:` of `coldstart serve`)."""

    thumb_size: int = 256  # default longest side in pixels
    min_thumb_size: int = 16
    max_thumb_size: int = 1024
    thumb_quality: int = 85  # JPEG quality
    cache_bytes: int = 64 << 20  # encoded thumbnails kept in memory (LRU)
    max_age_s: int = 3600  # Cache-Control max-age of thumbnails and meta

    def __post_init__(self) -> None:
        if not 1 <= self.min_thumb_size <= self.thumb_size <= self.max_thumb_size:
            raise ValueError("need 1 <= min_thumb_size <= thumb_size <= max_thumb_size")
        if not 1 <= self.thumb_quality <= 95:
            raise ValueError("thumb_quality must be in 1..95")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> BrowseConfig:
        return _from_dict(cls, raw)


class ItemMeta(BaseModel):
    id: int | str
    title: str | None = Field(None, description="the catalogue title (or text), when present")
    fields: dict[str, Any] = Field(description="every other non-empty catalogue column")
    has_image: bool = Field(description="whether /v1/items/{id}/image has an image")


def make_thumbnail(data: bytes, size: int, max_pixels: int, quality: int) -> bytes:
    """JPEG bytes of an encoded image scaled so its longest side is at most `size`.

    Decoding goes through the upload decoder (`index.server.decode_image`): decompression bombs
    -> HTTPError 413, non-images -> 415, corrupt bytes -> 422.
    """
    from PIL import Image

    image = decode_image(data, max_pixels)
    image.thumbnail((size, size), Image.Resampling.LANCZOS)  # keeps aspect, never upscales
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality, optimize=True)
    return out.getvalue()


class Thumbnails:
    """Thumbnails of the media store's images, cached in memory by (id, size)."""

    def __init__(self, media: MediaStore, server: ServerConfig, config: BrowseConfig) -> None:
        self.media, self.server, self.config = media, server, config
        self.cache = ByteLRU(config.cache_bytes)
        self._rejected: dict[ItemId, HTTPError] = {}  # bad stored images: decoded once

    def get(self, item_id: ItemId, size: int) -> bytes:
        """JPEG bytes; KeyError when the item has no image; HTTPError for a rejected image."""
        cached = self.cache.get((item_id, size))
        if cached is not None:
            return cached
        if item_id in self._rejected:
            raise self._rejected[item_id]
        ref = self.media.refs[item_id]
        try:
            if ref.size > self.server.max_body_bytes:
                raise HTTPError(
                    413,
                    f"stored image of {ref.size} bytes exceeds the "
                    f"{self.server.max_body_bytes}-byte limit",
                )
            thumb = make_thumbnail(
                self.media.read(item_id),
                size,
                self.server.max_image_pixels,
                self.config.thumb_quality,
            )
        except HTTPError as err:
            log.warning("image of item %r rejected: %s", item_id, err.detail)
            self._rejected[item_id] = err
            raise
        self.cache.put((item_id, size), thumb)
        return thumb


def _page_settings(
    server: ServerConfig,
    config: BrowseConfig,
    catalogue: Catalogue | None,
    media: MediaStore | None,
) -> dict[str, Any]:
    return {
        "auth_reads": bool(server.auth_reads),
        "max_k": server.max_k,
        "thumb_size": config.thumb_size,
        "catalogue_items": len(catalogue) if catalogue is not None else 0,
        "media_items": len(media) if media is not None else 0,
    }


def install_browse(
    app: FastAPI,
    *,
    normalize_id: Callable[[str], ItemId],
    require_read: Callable[..., None],
    server: ServerConfig,
    catalogue: Catalogue | None = None,
    media: MediaStore | None = None,
    config: BrowseConfig | None = None,
    docs: RouteDocs | None = None,
) -> None:
    """Add the item meta and image routes, the page at `/` and its `/static` assets to `app`.

    normalize_id: the index's id rule (raises for a malformed id, 503 while loading), so a
    route's id finds the row the catalogue and media store keyed in the index's id type.
    docs: the server's route documentation (index.api): statuses, auth, error model.
    """
    docs = docs or RouteDocs(token=server.token() is not None, auth_reads=server.auth_reads)
    config = config or BrowseConfig()
    thumbs = Thumbnails(media, server, config) if media is not None else None
    app.state.thumbnails = thumbs
    visibility = "private" if server.auth_reads else "public"
    cache_control = f"{visibility}, max-age={config.max_age_s}"
    # 422: a malformed id or size; 503: the index is loading (normalize_id needs it).
    statuses = (404, 422, 503)
    router = APIRouter(tags=["items"], dependencies=[Depends(require_read)])

    @router.get(
        "/v1/items/{item_id}/meta",
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

    @router.get(
        "/v1/items/{item_id}/image",
        response_class=Response,
        **docs(
            {
                "description": "JPEG thumbnail",
                "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}},
            },
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
            description="longest side in pixels",
        ),
    ) -> Response:
        """A thumbnail of the item's image, longest side at most `size` pixels (cached)."""
        norm = normalize_id(item_id)
        if thumbs is None or norm not in thumbs.media:
            why = "" if thumbs is not None else " (the server was started without --media)"
            raise HTTPError(404, f"item {norm!r} has no image{why}")
        thumb = await run_in_threadpool(thumbs.get, norm, size)
        return Response(thumb, media_type="image/jpeg", headers={"Cache-Control": cache_control})

    app.include_router(router)

    settings = _page_settings(server, config, catalogue, media)
    template = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    page = template.replace("{{settings}}", html.escape(json.dumps(settings), quote=True))

    @app.get("/", include_in_schema=False)
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

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


__all__ = [
    "BrowseConfig",
    "ItemMeta",
    "Thumbnails",
    "install_browse",
    "make_thumbnail",
]
