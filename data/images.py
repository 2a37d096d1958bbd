"""One image decoder for media shards, the embedding job and the HTTP server: encoded bytes ->
a fully loaded PIL image, or an `ImageRejected` that says why not. Torch-free (PIL only).

Guards, cheapest first, so a hostile file costs a few bytes of parsing, never gigabytes:

- an empty payload -> `CorruptImage`;
- more bytes than `max_bytes` -> `OversizedImage` (before PIL sees a byte);
- more pixels than `max_pixels` (read from the header, before any pixel is decoded), or than
  PIL's own `Image.MAX_IMAGE_PIXELS` -> `DecompressionBomb`. PIL only *warns* between its limit
  and twice it; here that warning is an error, so the stricter of the two limits always holds;
- bytes PIL does not recognise -> `NotAnImage`;
- truncated or corrupt pixel data -> `CorruptImage`.

`reason` on each exception is the counter key the shard readers use (`decompression_bomb`,
`oversized_image`, `corrupt_image`: a non-image counts as corrupt); the server maps the classes
onto HTTP statuses (413 / 415 / 422, index.api.decode_upload).
"""

from __future__ import annotations

import io
import warnings
from typing import ClassVar

from PIL import Image, UnidentifiedImageError

SUPPORTED = "JPEG, PNG, WebP, GIF..."


class ImageRejected(ValueError):
    """Bytes the decoder refuses; `reason` is the skip-counter key."""

    reason: ClassVar[str] = "bad_image"


class OversizedImage(ImageRejected):
    """More encoded bytes than allowed."""

    reason = "oversized_image"


class DecompressionBomb(ImageRejected):
    """More pixels than allowed (by the caller's limit or PIL's)."""

    reason = "decompression_bomb"


class CorruptImage(ImageRejected):
    """Empty, truncated or otherwise undecodable bytes."""

    reason = "corrupt_image"


class NotAnImage(CorruptImage):
    """Bytes in no format PIL reads (counted as corrupt by the shard readers)."""


def open_header(payload: bytes, max_pixels: int | None = None) -> Image.Image:
    """A lazily opened image: header parsed and size-checked, no pixel decoded yet.

    Raises CorruptImage (empty), NotAnImage, DecompressionBomb (over `max_pixels` or over PIL's
    Image.MAX_IMAGE_PIXELS). For callers that only need format, mode and size.
    """
    if not payload:
        raise CorruptImage("empty image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # see module doc
            image = Image.open(io.BytesIO(payload))
    except UnidentifiedImageError as err:
        raise NotAnImage(f"not a supported image ({SUPPORTED})") from err
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise DecompressionBomb(f"image rejected as a decompression bomb: {err}") from err
    except Exception as err:  # noqa: BLE001 - PIL raises many types for a bad header
        raise CorruptImage(f"corrupt or truncated image: {err}") from err
    check_pixels(*image.size, max_pixels)
    return image


def check_pixels(width: int, height: int, max_pixels: int | None = None) -> None:
    """Raise DecompressionBomb when width x height exceeds `max_pixels` or PIL's own
    Image.MAX_IMAGE_PIXELS: the one pixel guard, for images and for video frames (whose size
    the container states before any frame is decoded, data.video)."""
    limits = [n for n in (max_pixels, Image.MAX_IMAGE_PIXELS) if n is not None]
    limit = min(limits) if limits else None
    if limit is not None and width * height > limit:
        raise DecompressionBomb(f"image of {width}x{height} pixels exceeds the {limit}-pixel limit")


def decode_image(
    payload: bytes,
    *,
    max_pixels: int | None = None,
    max_bytes: int | None = None,
    mode: str = "RGB",
    draft_side: int | None = None,
) -> Image.Image:
    """Encoded bytes -> a fully loaded PIL image in `mode`. Raises ImageRejected (see module).

    max_pixels: width * height limit, on top of PIL's MAX_IMAGE_PIXELS (None: PIL's only).
    max_bytes: encoded size limit (None: none).
    draft_side: let JPEG decode at a reduced scale that keeps each side >= min(side, this)
        (PIL's `draft`: cheap, for callers that downscale anyway); None decodes full size.
    """
    if max_bytes is not None and len(payload) > max_bytes:
        raise OversizedImage(f"image of {len(payload)} bytes exceeds the {max_bytes}-byte limit")
    image = open_header(payload, max_pixels)
    try:
        with warnings.catch_warnings():
            # Some formats check again per frame while loading: still an error, not a warning.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if draft_side is not None:
                width, height = image.size
                image.draft(mode, (min(width, draft_side), min(height, draft_side)))
            image.load()
            return image if image.mode == mode else image.convert(mode)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise DecompressionBomb(f"image rejected as a decompression bomb: {err}") from err
    except Exception as err:  # noqa: BLE001 - PIL raises many types for bad pixel data
        raise CorruptImage(f"corrupt or truncated image: {err}") from err


__all__ = [
    "CorruptImage",
    "DecompressionBomb",
    "ImageRejected",
    "NotAnImage",
    "OversizedImage",
    "check_pixels",
    "decode_image",
    "open_header",
]
