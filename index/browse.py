"""The browsing page's parts: thumbnail settings (`BrowseConfig`), cached thumbnails of the
media store's images, and the page itself (static HTML + plain JavaScript from
`index/static/`, no build step, no CDN, served under a strict Content-Security-Policy).

The routes that serve them live in index.routes_browse:

- `GET /v1/items/{id}/meta`: the item's catalogue row, `{"id", "title", "fields", "has_image"}`;
  404 when the catalogue does not know the id.
- `GET /v1/items/{id}/image?size=`: a JPEG thumbnail (longest side <= size) read from the media
  shards, cached in memory; 404 when the item has no image. Stored images go through the upload
  guards: more bytes than the body limit or more pixels than `max_image_pixels` -> 413, not an
  image -> 415, corrupt -> 422.
- `GET /`: the page; `/static/*` its assets.

Reads there follow the server's read rule (open unless `--auth-reads`); the page itself holds no
data and is always open.
"""

from __future__ import annotations

import html
import io
import json
import logging
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from coldstart.data.resources import package_path
from coldstart.index.api import HTTPError, decode_upload
from coldstart.index.catalogue import ByteLRU, Catalogue, ItemId, MediaStore
from coldstart.index.config import ServerConfig, _from_dict

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

    Decoding goes through the upload decoder (`index.api.decode_upload`): decompression bombs
    -> HTTPError 413, non-images -> 415, corrupt bytes -> 422.
    """
    from PIL import Image

    image = decode_upload(data, max_pixels)
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


def page_html(
    server: ServerConfig,
    config: BrowseConfig,
    catalogue: Catalogue | None,
    media: MediaStore | None,
) -> str:
    """The page, with what its script needs to know of this server filled in."""
    settings = {
        "auth_reads": bool(server.auth_reads),
        "max_k": server.max_k,
        "thumb_size": config.thumb_size,
        "catalogue_items": len(catalogue) if catalogue is not None else 0,
        "media_items": len(media) if media is not None else 0,
    }
    template = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    return template.replace("{{settings}}", html.escape(json.dumps(settings), quote=True))


__all__ = [
    "PAGE_CSP",
    "STATIC_DIR",
    "BrowseConfig",
    "ItemMeta",
    "Thumbnails",
    "make_thumbnail",
    "page_html",
]
