"""Small synthetic videos for tests, benchmarks and synthetic data: moving coloured patterns
written by PyAV (which bundles FFmpeg and libx264 / libvpx), a few KB each; nothing committed."""

from __future__ import annotations

import io
from fractions import Fraction

import numpy as np


def moving_pattern_video(
    seed: int = 0,
    *,
    width: int = 64,
    height: int = 64,
    seconds: float = 1.0,
    fps: int = 12,
    container: str = "mp4",
    frame_seconds: float | None = None,
) -> bytes:
    """Encoded video of a colour gradient (hue from `seed`) with a bar moving down the frame.

    container: "mp4" (H.264) or "webm" (VP9). frame_seconds: show each frame this long instead
    of 1/fps (timestamps only: a 3-frame "10-hour" video is a few KB, and its container states
    its real duration).
    """
    import av

    codec = {"mp4": "libx264", "webm": "libvpx-vp9"}[container]
    frame_seconds = frame_seconds if frame_seconds is not None else 1.0 / fps
    n = max(1, round(seconds / frame_seconds))
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=3)
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, 1000)
        xs = np.arange(width)[None, :]
        ys = np.arange(height)[:, None]
        for i in range(n):
            pixels = np.zeros((height, width, 3), np.uint8)  # (H, W, 3)
            pixels[..., 0] = (base[0] + xs * 3 + i * 7) % 256
            pixels[..., 1] = (base[1] + ys * 3) % 256
            pixels[..., 2] = base[2]
            bar = (i * 5) % height
            pixels[bar : bar + max(2, height // 8)] = 255
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = round(i * frame_seconds * 1000), Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def frames_video(frames: list[np.ndarray], fps: int = 4, container: str = "mp4") -> bytes:
    """Encoded video (H.264 MP4 or VP9 WebM) of given (H, W, 3) uint8 frames (even H and W),
    e.g. rendered images of a class, one per frame."""
    import av

    codec = {"mp4": "libx264", "webm": "libvpx-vp9"}[container]
    height, width = frames[0].shape[:2]
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for pixels in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def frame_bomb_video(side: int = 20_000) -> bytes:
    """A WebM (Matroska) of two tiny MJPEG frames whose JPEG headers claim side x side pixels:
    the container states 16x16, each frame would decode to `side`**2 pixels (a decompression
    bomb inside a frame), a few hundred bytes in all."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        stream = out.add_stream("mjpeg", rate=4)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuvj420p"
        for i in range(2):
            pixels = np.full((16, 16, 3), 80 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    data = bytearray(buf.getvalue())
    at = data.find(b"\xff\xc0")  # each frame's SOF0 marker: length(2) precision(1) H(2) W(2)
    while at >= 0:
        data[at + 5 : at + 9] = side.to_bytes(2, "big") * 2
        at = data.find(b"\xff\xc0", at + 2)
    return bytes(data)


__all__ = ["frame_bomb_video", "frames_video", "moving_pattern_video"]
