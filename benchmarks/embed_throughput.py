"""Embedding throughput: the full `coldstart embed` pipeline vs the bare forward, with a breakdown.

Prints one JSON object per run (`--repeat`), then, with --repeat > 1, one summary object:
  {"bench": "embed", "pipeline_sps", "forward_sps", "pipeline_vs_forward", "naive_sps",
   "breakdown": {...}, "target", ...}
all measured in one process with the same encoder, batch size, precision and device:
- pipeline: `build_embeddings` end to end after the encoder is built (plan, shard read, decode,
  preprocess in DataLoader workers, copy, forward, Parquet parts + manifest); `steady_sps`
  leaves out the start-up (workers starting, first batch);
- forward: `encode_image` on a pre-made (B, 3, H, W) float batch already on the device, at the
  run's precision: the ceiling the pipeline is measured against (measured before and after
  each pipeline run and averaged, the load drifts on a shared machine);
- naive: one sample at a time, decode + preprocess + forward with batch 1 (CPU only);
- breakdown, per batch of `--batch-size` on one core / the device: `read_decode_preprocess`
  (one DataLoader worker's share: tar read, JPEG decode, resize + crop to uint8; with
  `--decode device` only the header check and byte packing), `device_decode` (`--decode device`:
  batched decode_jpeg + resize on the device), `host_to_device` (pinned copy of the batch),
  `forward` (normalize + encode at the precision), `write` (one part: Parquet + sidecar +
  manifest, per part of the first shard's size).

Data: the real posters (../shared/data/movielens-small-posters) when present, else synthetic
shards; `--copies K` repacks the chosen shards K times under new keys for volume on fast devices.

Video (`--media video`): synthetic clips (moving patterns, `--video-seconds` at `--video-size`,
24 fps, H.264), `--frames` K sampled per video, one JSON object per run:
  {"bench": "embed_video", "frames_per_video", "videos_per_s", "frames_per_s",
   "forward_frames_per_s", "pipeline_vs_forward", ...}
where forward is `encode_image` on a pre-made batch of those videos' frames (batch-size x K
frames, as the pipeline forwards them) and the pipeline is `build_embeddings` end to end
(workers decode K frames per video with PyAV, preprocess, forward, mean pooling, parts).

CPU (the README's figures):  python benchmarks/embed_throughput.py --max-shards 1 --repeat 3
CPU video:  python benchmarks/embed_throughput.py --media video --repeat 3
GPU (one H100/H200, both targets in one command):
  python benchmarks/embed_throughput.py --suite gpu
which runs ViT-B-32 at 224 px, batch 256, 16 shards (4 posters x 4 copies), workers = cores - 2:
CPU decode at fp32 (target >= 3,000 samples/s) and device decode at bf16-mixed (>= 8,000).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("COLDSTART_SHARED_DATA", REPO.parent / "shared" / "data"))
POSTERS = SHARED / "movielens-small-posters"
GPU_SUITE = [
    {"decode": "cpu", "precision": "32", "target_sps": 3000},
    {"decode": "device", "precision": "bf16-mixed", "target_sps": 8000},
]


def synthetic_shards(directory: Path, n: int, size: int = 256) -> list[str]:
    from coldstart.data.shards import write_shards
    from coldstart.data.synthetic import make_synthetic

    syn = make_synthetic(n_items=n, n_classes=16, image_size=size, seed=0)
    samples = [
        {"key": k, "image": syn.images[k], "json": {"item_id": int(i)}}
        for k, i in zip(syn.dataset.items["media_key"], syn.dataset.items["item_id"])
    ]
    return write_shards(samples, str(directory / "synthetic-%03d.tar"), maxcount=max(1, n // 4))


def expand_urls_or_none(spec: str | None) -> list[str] | None:
    if not spec:
        return None
    from coldstart.data.shards import expand_urls

    return expand_urls(spec)


def copy_shards(shards: list[str], copies: int, directory: Path) -> list[str]:
    """Each shard written `copies` times, keys and item ids made unique per copy (bytes as-is)."""
    from coldstart.data.shards import DecodeConfig, iter_shard, write_shards

    out: list[str] = []
    raw = DecodeConfig(decode_images=False)
    for c in range(copies):
        for s, shard in enumerate(shards):
            samples = []
            for i, sample in enumerate(iter_shard(shard, raw)):
                item = sample["item_id"]
                item = c * 10_000_000 + item if isinstance(item, int) else f"{item}-c{c}"
                samples.append(
                    {
                        "key": f"c{c}s{s}i{i}",
                        "image": sample["image_bytes"],
                        "json": {"item_id": item},
                    }
                )
            out += write_shards(samples, str(directory / f"copy{c}-{s:03d}-%d.tar"), maxcount=10**9)
    return out


def autocast(precision: str, device: Any) -> Any:
    """The forward's autocast context for a Lightning precision name (as Lightning sets it)."""
    import torch

    if precision in ("32", "32-true"):
        return contextlib.nullcontext()
    half = precision.startswith("16") and device.type == "cuda"  # 16-mixed on CPU runs bf16
    return torch.autocast(device.type, dtype=torch.float16 if half else torch.bfloat16)


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Any, device: Any, repeat: int) -> float:
    """Mean seconds of fn() over `repeat` calls, device work included."""
    fn()  # warm-up: allocator, kernels, caches
    sync(device)
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeat


def breakdown(args: argparse.Namespace, encoder: Any, shards: list[str], device: Any) -> dict:
    """Per-batch cost of each stage of the pipeline, measured one at a time."""
    import numpy as np
    import torch

    from coldstart.data.embeddings import EmbeddingManifest
    from coldstart.encoders.embed import (
        EmbedBatches,
        LitEmbedder,
        PartWriter,
        plan_chunks,
        plan_units,
    )

    pre = encoder.preprocessor()
    units = plan_units(shards[:1], None, 4096)
    chunks = plan_chunks(units, 0, args.batch_size)
    ds = EmbedBatches(
        chunks, {u.index: u for u in units}, pre, args.batch_size, None, False, False,
        args.decode == "device",
    )  # fmt: skip
    start = time.perf_counter()
    batches = []
    for batch in ds:  # one worker's view: read + decode + preprocess of one shard
        if batch["n"] == args.batch_size:
            batches.append(batch)
        if len(batches) == args.stage_batches:
            break
    worker_s = (time.perf_counter() - start) / max(1, len(batches))
    lit = LitEmbedder(encoder, pre).to(device)
    if device.type == "cuda":
        batches = [
            {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in b.items()}
            for b in batches
        ]
    on_device = [lit.transfer_batch_to_device(b, device, 0) for b in batches]
    it = iter(range(10**9))

    def copy() -> None:
        lit.transfer_batch_to_device(batches[next(it) % len(batches)], device, 0)

    stages: dict[str, float] = {"read_decode_preprocess": worker_s}
    if args.decode == "device":

        def decode() -> None:
            lit._pixels(on_device[next(it) % len(on_device)], Counter())

        stages["device_decode"] = timed(decode, device, len(batches))
    stages["host_to_device"] = timed(copy, device, len(batches))
    pixels = [lit._pixels(b, Counter())[0] for b in on_device]

    def forward() -> None:
        with torch.no_grad(), autocast(args.precision, device):
            encoder.encode_image(pre.finish_pixels(pixels[next(it) % len(pixels)]))

    stages["forward"] = timed(forward, device, len(batches))
    # One part of a shard's size through the real writer (Parquet, sidecar, manifest).
    n = units[0].samples
    with tempfile.TemporaryDirectory(prefix="embed-write-") as tmp:
        template = EmbeddingManifest("bench", {}, "0" * 64, encoder.dim, True, ["image"])
        writer = PartWriter(tmp, units, template, None, False)
        vectors = np.random.default_rng(0).standard_normal((n, encoder.dim)).astype(np.float32)
        prediction = {
            "unit": 0, "chunk": 0, "chunks": 1, "seq": 0, "ids": list(range(n)),
            "img_rows": list(range(n)), "txt_rows": [], "tag_rows": [], "n": n, "done": True,
            "skipped": {}, "image": vectors, "text": None, "tags": None,
        }  # fmt: skip
        start = time.perf_counter()
        writer._finish(units[0], [prediction])
        write_s = time.perf_counter() - start
    bs = args.batch_size
    out = {f"{k}_ms_per_batch": round(1000 * v, 2) for k, v in stages.items()}
    out.update({f"{k}_sps": round(bs / v, 1) for k, v in stages.items()})
    out["write_ms_per_part"] = round(1000 * write_s, 2)
    out["write_sps"] = round(n / write_s, 1)
    out["part_samples"] = n
    return out


def run_once(args: argparse.Namespace, encoder: Any, shards: list[str], device: Any, tmp: Path):
    import lightning as L
    import torch

    from coldstart.data.shards import iter_shard
    from coldstart.encoders.embed import EmbedConfig, build_embeddings

    pre = encoder.preprocessor()
    images = []
    for sample in iter_shard(shards[0]):
        images.append(pre.image(sample["image"]))
        if len(images) == args.batch_size:
            break
    batch = torch.stack(images).to(device)  # (B, 3, H, W) float, on the device

    def forward_sps() -> float:
        def step() -> None:
            with torch.no_grad(), autocast(args.precision, device):
                encoder.encode_image(batch)

        return batch.shape[0] / timed(step, device, args.forward_batches)

    before = forward_sps()

    class Timing(L.Callback):
        first: float | None = None

        def on_predict_batch_end(self, *a: Any, **k: Any) -> None:
            if self.first is None:
                sync(device)
                self.first = time.perf_counter()
                self.first_n = int(a[2]["n"])

    timing = Timing()
    out_dir = tmp / f"out-{time.monotonic_ns()}"
    config = EmbedConfig(
        encoder=args.encoder, inputs=shards, out=str(out_dir), batch_size=args.batch_size,
        num_workers=args.num_workers, progress=False, accelerator=args.accelerator,
        precision=args.precision, decode=args.decode,
    )  # fmt: skip
    start = time.perf_counter()
    manifest = build_embeddings(config, encoder=encoder, callbacks=[timing])
    end = time.perf_counter()
    n = int(manifest.extra["rows_per_modality"].get("image", 0))
    forward = 0.5 * (before + forward_sps())
    pipeline = n / (end - start)
    steady = (n - timing.first_n) / (end - timing.first) if timing.first else pipeline
    result = {
        "pipeline_sps": round(pipeline, 1),
        "steady_sps": round(steady, 1),
        "startup_s": round(timing.first - start, 2) if timing.first else None,
        "forward_sps": round(forward, 1),
        "pipeline_vs_forward": round(pipeline / forward, 3),
        "samples": n,
        "skipped": manifest.skipped,
        "modalities": manifest.modalities,
        "image_size": int(batch.shape[-1]),
    }
    import shutil

    shutil.rmtree(out_dir, ignore_errors=True)
    return result


def video_shards(args: argparse.Namespace, directory: Path) -> list[str]:
    """`--videos` synthetic clips in 2 shards (H.264 MP4, 24 fps)."""
    from coldstart.data.shards import write_shards
    from coldstart.data.video_synth import moving_pattern_video

    width, height = (int(x) for x in args.video_size.split("x"))
    samples = [
        {"key": f"v{i:05d}", "json": {"item_id": i},
         "video": moving_pattern_video(i, width=width, height=height,
                                       seconds=args.video_seconds, fps=24)}
        for i in range(args.videos)
    ]  # fmt: skip
    return write_shards(samples, str(directory / "video-%03d.tar"), maxcount=-(-args.videos // 2))


def run_video(args: argparse.Namespace, encoder: Any, shards: list[str], device: Any, tmp: Path):
    """One pipeline run on video shards, with the bare forward on the same frames."""
    import torch

    from coldstart.data.shards import DecodeConfig, iter_shard
    from coldstart.data.video import decode_video
    from coldstart.encoders.embed import EmbedConfig, build_embeddings

    pre = encoder.preprocessor()
    frames = []
    for sample in iter_shard(shards[0], DecodeConfig(accept_video=True)):
        frames += decode_video(sample["video_bytes"], args.frames)[0]
        if len(frames) >= args.batch_size * args.frames:
            break
    batch = torch.stack([pre.image(f) for f in frames]).to(device)  # (B * K, 3, H, W) float

    def forward_fps() -> float:
        def step() -> None:
            with torch.no_grad(), autocast(args.precision, device):
                encoder.encode_image(batch)

        return batch.shape[0] / timed(step, device, args.forward_batches)

    before = forward_fps()
    config = EmbedConfig(
        encoder=args.encoder, inputs=shards, out=str(tmp / f"out-{time.monotonic_ns()}"),
        batch_size=args.batch_size, num_workers=args.num_workers, progress=False,
        accelerator=args.accelerator, precision=args.precision, video_frames=args.frames,
    )  # fmt: skip
    start = time.perf_counter()
    manifest = build_embeddings(config, encoder=encoder)
    wall = time.perf_counter() - start
    forward = 0.5 * (before + forward_fps())
    videos = int(manifest.extra["rows_per_modality"].get("video", 0))
    fps = videos * args.frames / wall
    import shutil

    shutil.rmtree(config.out, ignore_errors=True)
    return {
        "frames_per_video": args.frames,
        "videos": videos,
        "videos_per_s": round(videos / wall, 2),
        "frames_per_s": round(fps, 1),
        "forward_frames_per_s": round(forward, 1),
        "pipeline_vs_forward": round(fps / forward, 3),
        "skipped": manifest.skipped,
        "video": f"{args.video_size}, {args.video_seconds:g} s, 24 fps, H.264",
        "image_size": int(batch.shape[-1]),
    }


def naive_sps(args: argparse.Namespace, encoder: Any, shards: list[str]) -> float | None:
    if args.naive_samples <= 0:
        return None
    from coldstart.data.shards import iter_shard

    pre = encoder.preprocessor()
    start = time.perf_counter()
    n = 0
    for sample in iter_shard(shards[0]):
        encoder.encode_image(pre.image(sample["image"]).unsqueeze(0).to(encoder.device)).cpu()
        n += 1
        if n >= args.naive_samples:
            break
    return n / (time.perf_counter() - start)


def bench(args: argparse.Namespace, shards: list[str], source: str, tmp: Path) -> list[dict]:
    import torch

    from coldstart.encoders import create_encoder

    use_cuda = args.accelerator in ("gpu", "cuda") or (
        args.accelerator == "auto" and torch.cuda.is_available()
    )
    device = torch.device("cuda" if use_cuda else "cpu")
    torch.manual_seed(0)
    encoder = create_encoder(args.encoder).to(device)
    if args.media == "video":
        return bench_video(args, encoder, shards, device, tmp)
    stages = breakdown(args, encoder, shards, device)
    naive = naive_sps(args, encoder, shards) if device.type == "cpu" else None
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "no gpu"
    common = {
        "bench": "embed",
        "encoder": args.encoder,
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "accelerator": args.accelerator,
        "precision": args.precision,
        "decode": args.decode,
        "shards": len(shards),
        "data": source,
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, {gpu}",
    }
    results = []
    for r in range(args.repeat):
        result = {**common, "run": r, **run_once(args, encoder, shards, device, tmp)}
        if naive:
            result["naive_sps"] = round(naive, 1)
            result["pipeline_vs_naive"] = round(result["pipeline_sps"] / naive, 2)
        result["breakdown"] = stages
        if args.target_sps:
            result["target_sps"] = args.target_sps
            result["meets_target"] = result["pipeline_sps"] >= args.target_sps
        elif device.type == "cpu":
            result["target_vs_forward"] = 0.9
            result["meets_target"] = result["pipeline_vs_forward"] >= 0.9
        result["loadavg_1m"] = round(os.getloadavg()[0], 2)
        print(json.dumps(result), flush=True)
        results.append(result)
    if len(results) > 1:
        ratios = [r["pipeline_vs_forward"] for r in results]
        print(
            json.dumps(
                {
                    "bench": "embed-summary",
                    **{k: common[k] for k in ("encoder", "precision", "decode", "accelerator")},
                    "runs": len(results),
                    "pipeline_vs_forward_median": round(statistics.median(ratios), 3),
                    "pipeline_vs_forward_min": min(ratios),
                    "pipeline_vs_forward_max": max(ratios),
                    "pipeline_sps_median": statistics.median(r["pipeline_sps"] for r in results),
                }
            ),
            flush=True,
        )
    return results


def bench_video(
    args: argparse.Namespace, encoder: Any, shards: list[str], device: Any, tmp: Path
) -> list[dict]:
    import torch

    results = []
    for r in range(args.repeat):
        result = {
            "bench": "embed_video", "encoder": args.encoder, "batch_size": args.batch_size,
            "num_workers": args.num_workers, "precision": args.precision, "run": r,
            **run_video(args, encoder, shards, device, tmp),
            "torch_threads": torch.get_num_threads(),
            "machine": f"{platform.machine()} {os.cpu_count()} cpu",
        }  # fmt: skip
        if device.type == "cpu":
            result["target_vs_forward"] = 0.8
            result["meets_target"] = result["pipeline_vs_forward"] >= 0.8
        result["loadavg_1m"] = round(os.getloadavg()[0], 2)
        print(json.dumps(result), flush=True)
        results.append(result)
    return results


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--encoder", default="small-clip")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--accelerator", default="cpu", help="cpu, gpu, auto")
    p.add_argument("--precision", default="32", choices=("32", "bf16-mixed", "16-mixed"))
    p.add_argument("--decode", default="cpu", choices=("cpu", "device"))
    p.add_argument(
        "--shards", default=None, help="shard spec (default: real posters, else synthetic)"
    )
    p.add_argument("--max-shards", type=int, default=2, help="pipeline on the first N shards")
    p.add_argument("--copies", type=int, default=1, help="repack the shards N times (volume)")
    p.add_argument("--forward-batches", type=int, default=8)
    p.add_argument("--stage-batches", type=int, default=4, help="batches per breakdown stage")
    p.add_argument("--naive-samples", type=int, default=128, help="0: skip the naive loop")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--repeat", type=int, default=1, help="pipeline runs (spread on a busy host)")
    p.add_argument("--target-sps", type=float, default=0, help="absolute target to check")
    p.add_argument(
        "--suite",
        choices=("gpu",),
        default=None,
        help="gpu: ViT-B-32 224 px, batch 256, 4 posters x 4 copies, CPU decode fp32 and "
        "device decode bf16-mixed on one GPU, with the issue's targets",
    )
    p.add_argument("--media", default="image", choices=("image", "video"))
    p.add_argument("--videos", type=int, default=64, help="--media video: synthetic clips")
    p.add_argument("--frames", type=int, default=8, help="--media video: K frames per video")
    p.add_argument("--video-seconds", type=float, default=4.0)
    p.add_argument("--video-size", default="320x240")
    args = p.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="embed-bench-"))
    if args.suite == "gpu":
        args.encoder, args.batch_size, args.accelerator = "ViT-B-32", 256, "gpu"
        args.num_workers = max(1, (os.cpu_count() or 4) - 2)
        args.max_shards, args.naive_samples = 4, 0
        args.copies = 4 if args.copies == 1 else args.copies
    if args.media == "video":
        shards = sorted(expand_urls_or_none(args.shards) or video_shards(args, tmp))
        bench(args, shards, "given" if args.shards else "synthetic videos", tmp)
        return
    if args.shards:
        from coldstart.data.shards import expand_urls

        shards, source = sorted(expand_urls(args.shards)), "given"
    elif sorted(POSTERS.glob("posters-*.tar")):
        shards, source = sorted(str(s) for s in POSTERS.glob("posters-*.tar")), "posters"
    else:
        shards, source = synthetic_shards(tmp, 1024), "synthetic"
    shards = shards[: args.max_shards]
    if args.copies > 1:
        shards, source = copy_shards(shards, args.copies, tmp), f"{source} x{args.copies}"
    if args.suite == "gpu":
        for case in GPU_SUITE:
            args.decode, args.precision, args.target_sps = (
                case["decode"],
                case["precision"],
                case["target_sps"],
            )
            bench(args, shards, source, tmp)
    else:
        bench(args, shards, source, tmp)


if __name__ == "__main__":
    main()
