"""Choosing the video decoder: K frames sampled uniformly from short clips, PyAV vs torchcodec.

Prints one JSON object per decoder: {"bench": "video_decode", "decoder", "videos", "frames",
"videos_per_s", "ms_per_video"}, and a last one with the ratio. torchcodec needs FFmpeg's
shared libraries (Debian's `ffmpeg`); without them it is reported as unavailable.

    python benchmarks/video_decode.py --videos 32 --frames 8 --size 320x240 --seconds 4
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from coldstart.data.video import decode_video, sample_times
from coldstart.data.video_synth import moving_pattern_video


def _pyav(payload: bytes, k: int) -> int:
    frames, _ = decode_video(payload, k)
    return len(frames)


def _torchcodec(payload: bytes, k: int) -> int:
    from torchcodec.decoders import VideoDecoder

    decoder = VideoDecoder(payload, seek_mode="exact", num_ffmpeg_threads=1)
    seconds = float(decoder.metadata.duration_seconds)
    batch = decoder.get_frames_played_at(sample_times(seconds, k))  # (K, 3, H, W) uint8
    return int(batch.data.shape[0])


def _time(fn: Callable[[bytes, int], int], videos: list[bytes], k: int) -> dict:
    fn(videos[0], k)  # warm-up (library loading)
    start = time.perf_counter()
    frames = sum(fn(v, k) for v in videos)
    wall = time.perf_counter() - start
    return {"videos": len(videos), "frames": frames, "videos_per_s": round(len(videos) / wall, 1),
            "ms_per_video": round(1000 * wall / len(videos), 2)}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=32)
    parser.add_argument("--frames", type=int, default=8, help="K frames sampled per video")
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--fps", type=int, default=24)
    args = parser.parse_args(argv)
    width, height = (int(x) for x in args.size.split("x"))
    videos = [
        moving_pattern_video(i, width=width, height=height, seconds=args.seconds, fps=args.fps)
        for i in range(args.videos)
    ]
    results = {}
    for name, fn in (("pyav", _pyav), ("torchcodec", _torchcodec)):
        try:
            results[name] = _time(fn, videos, args.frames)
        except Exception as err:  # noqa: BLE001 - report why a decoder could not run
            print(json.dumps({"bench": "video_decode", "decoder": name, "error": str(err)[:200]}))
            continue
        print(json.dumps({"bench": "video_decode", "decoder": name, "size": args.size,
                          "seconds": args.seconds, "fps": args.fps, **results[name]}))  # fmt: skip
    if len(results) == 2:
        ratio = results["pyav"]["videos_per_s"] / results["torchcodec"]["videos_per_s"]
        print(json.dumps({"bench": "video_decode", "pyav_vs_torchcodec": round(ratio, 2)}))


if __name__ == "__main__":
    main()
