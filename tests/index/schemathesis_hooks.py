"""Schemathesis hooks for the contract test: image uploads are real images.

The document says an upload is `image/png, image/jpeg, image/webp, image/gif` (an OpenAPI
`encoding`); JSON Schema cannot say "bytes that decode as an image", so without this schemathesis
would call random bytes valid and expect them to be accepted. Loaded with SCHEMATHESIS_HOOKS.
"""

from __future__ import annotations

import io

import schemathesis
from hypothesis import strategies as st
from PIL import Image


def _encode(size: tuple[int, int], color: tuple[int, int, int], fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


def _images(fmt: str) -> st.SearchStrategy[bytes]:
    sizes = st.tuples(st.integers(1, 48), st.integers(1, 48))
    colors = st.tuples(*[st.integers(0, 255)] * 3)
    return st.builds(_encode, sizes, colors, st.just(fmt))


for media_type, fmt in (
    ("image/png", "PNG"),
    ("image/jpeg", "JPEG"),
    ("image/webp", "WEBP"),
    ("image/gif", "GIF"),
):
    schemathesis.openapi.media_type(media_type, _images(fmt))
