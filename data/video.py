"""One video decoder for media shards, the embedding job and the HTTP server: encoded MP4 / WebM
bytes -> K frames sampled uniformly in time (PIL RGB images), or a `VideoRejected` that says why
not. Torch-free (PyAV, which bundles FFmpeg; chosen over torchcodec by measurement, see
docs/benchmarks.md).

Guards, cheapest first, so a hostile file costs a header parse, never hours of decoding:

- more bytes than `max_bytes` -> `OversizedVideo` (before FFmpeg sees a byte);
- bytes that are not an MP4/MOV (`ftyp` box) or a WebM/Matroska (EBML magic) -> `NotAVideo`.
  Only those two demuxers are ever opened, so FFmpeg's playlist demuxers (HLS, concat), which
  open further URLs and files, can never be reached through an upload;
- a duration over `max_seconds` stated by the container -> `VideoTooLong`, read from the header
  (a 10-hour video is refused without decoding a frame); a container that lies is caught while
  decoding, by the timestamps of the frames;
- a frame size over `max_pixels` or PIL's Image.MAX_IMAGE_PIXELS (data.images.check_pixels, the
  image decoder's own guard) -> `FrameBomb`, from the stream header before any frame is decoded,
  again per decoded frame (a stream may change size mid-way), and FFmpeg's own `max_pixels`
  decoder option refuses to allocate bigger pictures;
- truncated files, no video stream, zero decodable frames -> `CorruptVideo`.

`reason` on each exception is the counter key the shard readers use; the server maps the
classes onto HTTP statuses (413 / 415 / 422, index.api.decode_video_upload).
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from PIL import Image

from coldstart.data import images

VIDEO_EXTENSIONS = ("mp4", "webm")
SUPPORTED = "MP4 (H.264, MPEG-4, ...) or WebM (VP8, VP9, AV1)"
DEFAULT_MAX_VIDEO_BYTES = 64 << 20
DEFAULT_MAX_SECONDS = 600.0  # ten minutes: a catalogue's short video, not a film
DEFAULT_FRAMES = 8
# Decoding stops at this many frames whatever the timestamps say (a guard for containers that
# state no duration): 10 minutes at 60 fps.
MAX_DECODED_FRAMES = 36_000


class VideoRejected(ValueError):
    """Bytes the decoder refuses; `reason` is the skip-counter key."""

    reason: ClassVar[str] = "bad_video"


class OversizedVideo(VideoRejected):
    reason = "oversized_video"


class VideoTooLong(VideoRejected):
    reason = "video_too_long"


class FrameBomb(VideoRejected):
    """A frame size over the pixel limit (the image decoder's decompression-bomb guard)."""

    reason = "decompression_bomb"


class CorruptVideo(VideoRejected):
    """Truncated or undecodable bytes, no video stream, or no decodable frame."""

    reason = "corrupt_video"


class NotAVideo(CorruptVideo):
    """Bytes in no container we read (counted as corrupt by the shard readers)."""


@dataclass
class VideoLimits:
    """What a readable video is. max_pixels: frame width x height, on top of PIL's limit."""

    max_bytes: int | None = DEFAULT_MAX_VIDEO_BYTES
    max_seconds: float | None = DEFAULT_MAX_SECONDS
    max_pixels: int | None = None


@dataclass
class VideoInfo:
    """What the container states, nothing decoded: format ("mp4" | "webm"), codec name,
    width, height, seconds (None when unstated), frames (None when unstated), fps."""

    format: str
    codec: str
    width: int
    height: int
    seconds: float | None
    frames: int | None
    fps: float | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def sniff_format(payload: bytes) -> str | None:
    """ "mp4" (ISO-BMFF `ftyp` box), "webm" (EBML magic, WebM or Matroska), or None."""
    if len(payload) >= 12 and payload[4:8] == b"ftyp":
        return "mp4"
    if payload[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    return None


def _open(payload: bytes, limits: VideoLimits) -> tuple[Any, str]:
    """-> (open PyAV container, format). Raises OversizedVideo, NotAVideo, CorruptVideo."""
    import av

    if limits.max_bytes is not None and len(payload) > limits.max_bytes:
        raise OversizedVideo(
            f"video of {len(payload)} bytes exceeds the {limits.max_bytes}-byte limit"
        )
    if not payload:
        raise CorruptVideo("empty video")
    fmt = sniff_format(payload)
    if fmt is None:
        raise NotAVideo(f"not a supported video ({SUPPORTED})")
    demuxer = "mov,mp4,m4a,3gp,3g2,mj2" if fmt == "mp4" else "matroska,webm"
    # Stream probing may decode a frame: FFmpeg's own pixel cap applies to it as well.
    pixel_cap = min(n for n in (limits.max_pixels, Image.MAX_IMAGE_PIXELS) if n is not None)
    try:
        container = av.open(
            io.BytesIO(payload),
            format=demuxer.split(",")[0] if fmt == "mp4" else "matroska",
            options={"max_pixels": str(pixel_cap)},
        )
    except av.FFmpegError as err:
        raise CorruptVideo(f"corrupt or truncated video: {err}") from err
    return container, fmt


def _info(container: Any, fmt: str) -> VideoInfo:
    if not container.streams.video:
        container.close()
        raise CorruptVideo("no video stream")
    stream = container.streams.video[0]
    seconds = None
    if container.duration is not None and container.duration > 0:
        seconds = container.duration / 1_000_000  # AV_TIME_BASE
    elif stream.duration is not None and stream.time_base is not None:
        seconds = float(stream.duration * stream.time_base)
    rate = stream.average_rate or stream.base_rate
    ctx = stream.codec_context
    return VideoInfo(
        format=fmt,
        codec=ctx.name,
        width=int(ctx.width or 0),
        height=int(ctx.height or 0),
        seconds=seconds,
        frames=int(stream.frames) or None,
        fps=float(rate) if rate else None,
    )


def _check(info: VideoInfo, limits: VideoLimits) -> None:
    seconds, limit = info.seconds, limits.max_seconds
    if limit is not None and seconds is not None and seconds > limit:
        raise VideoTooLong(f"video of {seconds:.0f} s exceeds the {limit:g}-second limit")
    try:
        images.check_pixels(info.width, info.height, limits.max_pixels)
    except images.DecompressionBomb as err:
        raise FrameBomb(f"video frame rejected as a decompression bomb: {err}") from err


def probe_video(payload: bytes, limits: VideoLimits | None = None) -> VideoInfo:
    """The container's statement (format, codec, size, duration), checked against `limits`;
    no frame is decoded. Raises VideoRejected."""
    limits = limits or VideoLimits()
    container, fmt = _open(payload, limits)
    try:
        info = _info(container, fmt)
        _check(info, limits)
        return info
    finally:
        container.close()


def sample_times(seconds: float, k: int) -> list[float]:
    """K timestamps spread uniformly over [0, seconds): the centre of each of K equal segments."""
    return [(i + 0.5) * seconds / k for i in range(k)]


def _frames(container: Any, limits: VideoLimits) -> Iterator[Any]:
    """Decoded frames of the first video stream, each checked (size, timestamp)."""
    import av
    import av.logging

    stream = container.streams.video[0]
    stream.thread_count = 1  # one core per worker: DataLoader workers are the parallelism
    if av.logging.get_level() is None:  # FFmpeg's messages say why a frame was refused
        av.logging.set_level(av.logging.ERROR)
    decoded = 0
    with av.logging.Capture(local=True) as logs:
        try:
            for frame in container.decode(stream):
                _check_frame(frame, limits)
                decoded += 1
                if decoded > MAX_DECODED_FRAMES:
                    raise VideoTooLong(f"video has more than {MAX_DECODED_FRAMES} frames")
                yield frame
        except av.FFmpegError as err:
            said = [line[2].strip() for line in logs] + [str(err)]
            refusal = next((line for line in said if "Picture size" in line), None)
            if refusal is not None:  # FFmpeg's max_pixels / image size check
                refusal = refusal[refusal.index("Picture size") :]
                raise FrameBomb(
                    f"video frame rejected as a decompression bomb: {refusal} (over the pixel "
                    "limit)"
                ) from err
            if decoded == 0:
                raise CorruptVideo(f"corrupt or truncated video: {err}") from err
            # A truncated tail: the frames before the damage are kept.


def _check_frame(frame: Any, limits: VideoLimits) -> None:
    try:
        images.check_pixels(frame.width, frame.height, limits.max_pixels)
    except images.DecompressionBomb as err:
        raise FrameBomb(f"video frame rejected as a decompression bomb: {err}") from err
    time = frame.time
    if limits.max_seconds is not None and time is not None and time > limits.max_seconds:
        raise VideoTooLong(
            f"video runs past the {limits.max_seconds:g}-second limit (a frame at "
            f"{time:.0f} s; the container understated its duration)"
        )


def decode_video(
    payload: bytes, k: int = DEFAULT_FRAMES, limits: VideoLimits | None = None
) -> tuple[list[Image.Image], VideoInfo]:
    """Encoded bytes -> (K RGB frames sampled uniformly in time, the container's info).

    Frame i is the first decoded frame at or after the centre of the i-th of K equal segments
    of the stated duration; a video with fewer than K frames gives each of its frames once.
    Decoding stops after the last wanted frame. Raises VideoRejected (see module).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    limits = limits or VideoLimits()
    container, fmt = _open(payload, limits)
    try:
        info = _info(container, fmt)
        _check(info, limits)
        if info.seconds:
            out = _pick_by_time(_frames(container, limits), sample_times(info.seconds, k))
        else:  # no stated duration: keep every frame's time, then pick K of them
            out = _pick_uniform(list(_frames(container, limits)), k)
    finally:
        container.close()
    if not out:
        raise CorruptVideo("no decodable frame")
    return out, info


def _pick_by_time(frames: Iterator[Any], targets: list[float]) -> list[Image.Image]:
    """For each target time the frame on screen then (the last frame starting at or before it);
    a frame on screen at several targets (a video with fewer frames than targets) counts once."""
    from av.video.reformatter import VideoReformatter

    out: list[Image.Image] = []
    j, prev, picked = 0, None, None
    rgb = VideoReformatter()  # one conversion context per video, not one per frame

    def pick(frame: Any) -> None:
        nonlocal picked
        if frame is not picked:
            out.append(Image.fromarray(rgb.reformat(frame, format="rgb24").to_ndarray()))
            picked = frame  # (H, W, 3) uint8 -> RGB

    for frame in frames:
        time = frame.time if frame.time is not None else 0.0
        while j < len(targets) and time > targets[j] + 1e-6:
            pick(prev if prev is not None else frame)
            j += 1
        if j == len(targets):
            return out
        prev = frame
    if prev is not None and j < len(targets):
        pick(prev)  # targets after the last frame's start: the last frame is on screen
    return out


def _pick_uniform(frames: list[Any], k: int) -> list[Image.Image]:
    if not frames:
        return []
    n = len(frames)
    picks = sorted({min(n - 1, math.floor((i + 0.5) * n / k)) for i in range(k)})
    return [frames[i].to_image() for i in picks]


__all__ = [
    "VIDEO_EXTENSIONS",
    "CorruptVideo",
    "FrameBomb",
    "NotAVideo",
    "OversizedVideo",
    "VideoInfo",
    "VideoLimits",
    "VideoRejected",
    "VideoTooLong",
    "decode_video",
    "probe_video",
    "sample_times",
]
