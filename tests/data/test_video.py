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


def test_pack_and_inspect_videos_and_carousels(tmp_path, capsys):
    import json

    from PIL import Image

    from coldstart.commands.data import main as data_main

    folder = tmp_path / "media"
    (folder / "3").mkdir(parents=True)
    Image.new("RGB", (8, 8), "red").save(folder / "1.jpg")  # a photo
    for n, colour in enumerate(("red", "green", "blue")):  # carousel by index ...
        Image.new("RGB", (8, 8), colour).save(folder / f"2.{n}.png")
        Image.new("RGB", (8, 8), colour).save(folder / "3" / f"{n}.jpg")  # ... and by folder
    (folder / "4.mp4").write_bytes(moving_pattern_video(4, seconds=2.0))
    (folder / "5.webm").write_bytes(moving_pattern_video(5, seconds=1.0, container="webm"))
    long = moving_pattern_video(6, seconds=54_000, frame_seconds=18_000)
    (folder / "6.mp4").write_bytes(long)  # 10 hours: refused by the pack check
    (folder / "7.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom not really")
    (tmp_path / "t.csv").write_text("key,text\n4,a moving bar\n2,three colours\n")
    out = str(tmp_path / "shards" / "s-%03d.tar")
    args = ["pack", "--images", str(folder), "--texts", str(tmp_path / "t.csv"), "--out", out]
    assert data_main(args) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["written"], stats["photos"], stats["carousels"], stats["videos"]) == (5, 1, 2, 2)
    assert stats["skipped"] == {"video_too_long": 1, "corrupt_video": 1}
    assert data_main(["inspect", "--shards", str(tmp_path / "shards")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["samples"] == 5 and report["skipped"] == {}
    assert report["media"] == {"photo": 1, "carousel": 2, "video": 2, "none": 0}
    assert report["carousel_images"] == {"min": 3, "max": 3, "mean": 3.0}
    videos = report["videos"]
    assert videos["formats"] == {"mp4": 1, "webm": 1} and videos["codecs"] == {"h264": 1, "vp9": 1}
    assert videos["seconds"]["max"] == pytest.approx(2.0, abs=0.1)
    assert videos["seconds"]["total"] == pytest.approx(3.0, abs=0.2)
