"""The browsing page's parts: thumbnail settings (`BrowseConfig`), cached thumbnails of the
media store's images, and the page itself (static HTML + plain JavaScript from
`index/static/`, no build step, no CDN, served under a strict Content-Security-Policy).

The routes that serve them live in index.routes_browse:

- `GET /v1/items/{id}/meta`: the item's catalogue row, `{"id", "title", "fields", "has_image"}`;
  404 when the catalogue does not know the id.
- `GET /v1/items/{id}/image?size=`: a JPEG thumbnail whose longest side is `size` rounded up to
  the next of `THUMB_SIZES` (never upscaled), read from the media shards and cached in memory;
  404 when the item has no image. Stored images go through the upload
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
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from PIL import Image
from pydantic import BaseModel, Field

from coldstart.data.resources import package_path
from coldstart.data.video import VideoLimits
from coldstart.index.api import HTTPError, decode_upload, decode_video_upload
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


# Thumbnail sides served: a requested size rounds up to the next one, so distinct `?size=`
# values cannot multiply the work and the cache entries of one image (issue 23, D).
THUMB_SIZES = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)
FULL_DECODES = 2  # stored images decoded at once (a full decode can take 100+ MB)
MASTER_BYTES = 32 << 20  # decoded per-item images (<= max_thumb_size) kept to resize from


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

    def rounded(self, size: int) -> int:
        """The served side for a requested `size`: the next of THUMB_SIZES, capped at
        max_thumb_size (itself always served, so every size the route accepts has an answer)."""
        for step in THUMB_SIZES:
            if step >= size:
                return min(step, self.max_thumb_size)
        return self.max_thumb_size


class ItemMeta(BaseModel):
    id: int | str
    title: str | None = Field(None, description="the catalogue title (or text), when present")
    fields: dict[str, Any] = Field(description="every other non-empty catalogue column")
    has_image: bool = Field(description="whether /v1/items/{id}/image has an image")


def decode_reduced(data: bytes, side: int, max_pixels: int) -> Image.Image:
    """An RGB image of encoded bytes, longest side at most `side`, reduced while decoding.

    JPEG decodes at a reduced DCT scale (`draft`); other formats decode fully, then shrink by
    an integer factor (`reduce`, cheap) before the final resample. Decoding goes through the
    upload decoder (`index.api.decode_upload`): decompression bombs -> HTTPError 413,
    non-images -> 415, corrupt bytes -> 422.
    """
    from PIL import Image

    image = decode_upload(data, max_pixels, draft_side=side)
    # reducing_gap: `reduce` first, LANCZOS only over the last <= 3x (fast, same quality).
    image.thumbnail((side, side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return image


def poster_frame(data: bytes, side: int, server: ServerConfig) -> Image.Image:
    """The frame at the middle of a stored video, longest side at most `side`: the thumbnail of
    a video item. Decoded through the upload decoder with the server's video limits (413 / 415
    / 422 as for uploads)."""
    from PIL import Image

    limits = VideoLimits(server.max_video_bytes, server.max_video_seconds, server.max_image_pixels)
    (frame,) = decode_video_upload(data, limits, 1)  # K = 1: the centre of the video
    frame.thumbnail((side, side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return frame


def encode_jpeg(image: Image.Image, size: int, quality: int) -> bytes:
    """JPEG bytes of `image` scaled so its longest side is at most `size` (never upscaled)."""
    from PIL import Image

    if max(image.size) > size:
        image = image.copy()
        image.thumbnail((size, size), Image.Resampling.LANCZOS)  # keeps aspect
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality, optimize=True)
    return out.getvalue()


def make_thumbnail(data: bytes, size: int, max_pixels: int, quality: int) -> bytes:
    """JPEG bytes of an encoded image scaled so its longest side is at most `size`."""
    return encode_jpeg(decode_reduced(data, size, max_pixels), size, quality)


class _ImageLRU:
    """Decoded images kept by key, bounded by their pixel bytes (width * height * bands)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.size = max_bytes, 0
        self._data: OrderedDict[Any, tuple[Image.Image, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Image.Image | None:
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return None
            self._data.move_to_end(key)
            return entry[0]

    def put(self, key: Any, image: Image.Image) -> None:
        nbytes = image.width * image.height * len(image.getbands())
        if nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._data.pop(key, None)
            self.size += nbytes - (old[1] if old else 0)
            self._data[key] = (image, nbytes)
            while self.size > self.max_bytes:
                _, (_, evicted) = self._data.popitem(last=False)
                self.size -= evicted


class Thumbnails:
    """Thumbnails of the media store's images, cached in memory by (id, rounded size).

    Memory per request is bounded (issue 23, D): sizes round up to THUMB_SIZES; each item is
    decoded once, reduced while decoding to max_thumb_size (the "master", kept in a small
    LRU) and every size is resized from that; a per-item lock makes concurrent requests for
    one item wait for that decode instead of repeating it; a semaphore bounds full decodes.
    """

    def __init__(self, media: MediaStore, server: ServerConfig, config: BrowseConfig) -> None:
        self.media, self.server, self.config = media, server, config
        self.cache = ByteLRU(config.cache_bytes)
        self.masters = _ImageLRU(MASTER_BYTES)
        self.decodes = 0  # full decodes done (for tests and logs)
        self._decode_slots = threading.BoundedSemaphore(FULL_DECODES)
        # Lock striping: a fixed number of locks, so the lock table never grows with ids.
        self._item_locks = [threading.Lock() for _ in range(64)]
        self._rejected: dict[ItemId, HTTPError] = {}  # bad stored images: decoded once

    def get(self, item_id: ItemId, size: int) -> bytes:
        """JPEG bytes; KeyError when the item has no image; HTTPError for a rejected image."""
        size = self.config.rounded(size)
        cached = self.cache.get((item_id, size))
        if cached is not None:
            return cached
        if item_id in self._rejected:
            raise self._rejected[item_id]
        with self._item_locks[hash(item_id) % len(self._item_locks)]:
            cached = self.cache.get((item_id, size))  # made while this request waited
            if cached is not None:
                return cached
            if item_id in self._rejected:
                raise self._rejected[item_id]
            master = self._master(item_id)
            thumb = encode_jpeg(master, size, self.config.thumb_quality)
        self.cache.put((item_id, size), thumb)
        return thumb

    def _master(self, item_id: ItemId) -> Image.Image:
        """The item's image reduced to max_thumb_size, decoded once (caller holds its lock)."""
        master = self.masters.get(item_id)
        if master is not None:
            return master
        ref = self.media.refs[item_id]
        limit = self.server.max_video_bytes if ref.video else self.server.max_body_bytes
        try:
            if ref.size > limit:
                raise HTTPError(
                    413,
                    f"stored {'video' if ref.video else 'image'} of {ref.size} bytes exceeds "
                    f"the {limit}-byte limit",
                )
            data = self.media.read(item_id)
            with self._decode_slots:
                self.decodes += 1
                side = self.config.max_thumb_size
                master = (
                    poster_frame(data, side, self.server)
                    if ref.video
                    else decode_reduced(data, side, self.server.max_image_pixels)
                )
        except HTTPError as err:
            log.warning("image of item %r rejected: %s", item_id, err.detail)
            self._rejected[item_id] = err
            raise
        self.masters.put(item_id, master)
        return master


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
    "THUMB_SIZES",
    "BrowseConfig",
    "ItemMeta",
    "Thumbnails",
    "decode_reduced",
    "encode_jpeg",
    "make_thumbnail",
    "page_html",
]
