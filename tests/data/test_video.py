"""data.video: K frames sampled uniformly, and every refusal (truncated, not a video, 10 hours,
a decompression bomb in a frame, too many bytes) as its own class, from videos written here."""

from __future__ import annotations

import time

import numpy as np
import pytest

from coldstart.data import video
from coldstart.data.shards import DecodeConfig, iter_shard, scan_shard, write_shards
from coldstart.data.video_synth import frame_bomb_video, moving_pattern_video


@pytest.mark.parametrize("container", ["mp4", "webm"])
def test_k_frames_uniform_in_time(container):
    data = moving_pattern_video(3, seconds=2.0, fps=12, container=container)
    assert len(data) < 20_000  # a few KB
    frames, info = video.decode_video(data, 4)
    assert info.format == container and (info.width, info.height) == (64, 64)
    assert info.seconds == pytest.approx(2.0, abs=0.1)
    assert len(frames) == 4 and all(f.size == (64, 64) and f.mode == "RGB" for f in frames)
    # The bar moves 5 px a frame: frames at 0.25, 0.75, 1.25, 1.75 s are frames 3, 9, 15, 21.
    bars = [int(np.flatnonzero(np.asarray(f)[:, 32].min(axis=1) > 200)[0]) for f in frames]
    assert bars == pytest.approx([15, 45, 11, 41], abs=2)  # (i * 5) % 64
    assert video.sample_times(2.0, 4) == [0.25, 0.75, 1.25, 1.75]


def test_short_video_gives_each_frame_once():
    frames, _ = video.decode_video(moving_pattern_video(0, seconds=0.25, fps=12), 8)
    assert len(frames) == 3


def test_ten_hour_video_refused_from_the_header():
    data = moving_pattern_video(1, seconds=54_000, frame_seconds=18_000)  # 3 frames, 10 hours
    assert len(data) < 20_000
    start = time.perf_counter()
    with pytest.raises(video.VideoTooLong, match="36000 s exceeds the 600-second limit"):
        video.decode_video(data)
    assert time.perf_counter() - start < 0.5
    assert video.probe_video(data, video.VideoLimits(max_seconds=None)).seconds == pytest.approx(
        36_000, abs=1
    )


def test_refusals():
    good = moving_pattern_video(2)
    cases = {
        good[: len(good) // 2]: video.CorruptVideo,  # truncated: the index is lost
        b"\x00\x00\x00\x18ftypisom" + b"\x00" * 64: video.CorruptVideo,  # no stream, no frame
        b"": video.CorruptVideo,
        b"GIF89a" + b"\x00" * 100: video.NotAVideo,
        b"hello, world" * 10: video.NotAVideo,
        frame_bomb_video(): video.FrameBomb,
    }
    for data, error in cases.items():
        with pytest.raises(error) as info:
            video.decode_video(data)
        assert info.value.reason == error.reason
    with pytest.raises(video.OversizedVideo):
        video.decode_video(good, limits=video.VideoLimits(max_bytes=100))
    with pytest.raises(video.FrameBomb, match="4095-pixel limit"):  # the header's frame size
        video.probe_video(good, video.VideoLimits(max_pixels=4095))
    assert video.FrameBomb.reason == "decompression_bomb"  # the image decoder's counter key


def test_shards_carry_videos_and_carousels(tmp_path):
    from PIL import Image

    red, blue = Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")
    clip = moving_pattern_video(4, container="webm")
    samples = [
        {"key": "a", "images": [red, blue, red], "text": "three"},
        {"key": "b", "video": clip, "text": "moving"},
        {"key": "c", "image": blue, "video": moving_pattern_video(5)},
    ]
    (path,) = write_shards(samples, str(tmp_path / "m-%03d.tar"))
    import tarfile

    with tarfile.open(path) as tar:
        names = tar.getnames()
    assert names[:3] == ["a.0.jpg", "a.1.jpg", "a.2.jpg"] and "b.webm" in names and "c.mp4" in names
    scan = scan_shard(path)
    assert (scan.keys, scan.videos, scan.carousels, scan.images) == (["a", "b", "c"], 2, 1, 2)
    plain = list(iter_shard(path))  # image readers: the video-only item is skipped, counted
    assert [s["key"] for s in plain] == ["a", "c"] and len(plain[0]["images"]) == 3
    both = {s["key"]: s for s in iter_shard(path, DecodeConfig(accept_video=True))}
    assert both["b"]["video_bytes"] == clip and both["b"]["video_ext"] == "webm"
    assert both["c"]["video_ext"] == "mp4" and both["c"]["image"].size == (8, 8)
    with pytest.raises(ValueError, match="neither MP4 nor WebM"):
        write_shards([{"key": "d", "video": b"nope"}], str(tmp_path / "x-%03d.tar"))
