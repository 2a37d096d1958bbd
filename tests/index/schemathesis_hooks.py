"""Schemathesis hooks for the contract test: image uploads are real images, video uploads real
videos (small moving patterns written by PyAV, data.video_synth).

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


def _videos(container: str) -> st.SearchStrategy[bytes]:
    from coldstart.data.video_synth import moving_pattern_video

    sides = st.integers(2, 24).map(lambda n: 2 * n)  # H.264 / VP9 want even sides
    return st.builds(
        lambda seed, w, h: moving_pattern_video(seed, width=w, height=h, seconds=0.5,
                                                container=container),
        st.integers(0, 1000), sides, sides,
    )  # fmt: skip


for media_type, container in (("video/mp4", "mp4"), ("video/webm", "webm")):
    schemathesis.openapi.media_type(media_type, _videos(container))
