"""Embedding throughput: full pipeline vs bare forward vs a naive per-sample loop.

Prints one JSON line:
  {"bench": "embed", "batch_size", "pipeline_sps", "forward_sps", "naive_sps",
   "pipeline_vs_forward", ...}
measured in one run with the same encoder (image tower) and batch size:
- pipeline: `build_embeddings` (shard read -> JPEG decode -> preprocess in DataLoader workers ->
  encode -> Parquet parts + manifest), timed end to end after the encoder is built;
- forward: `encode_image` on pre-made (B, 3, H, W) tensors, nothing else;
- naive: one sample at a time: decode, preprocess, encode with batch 1, collect.
Target: pipeline >= 0.85 x forward (decoding hidden behind compute by the workers).

Uses the real posters (../shared/data/movielens-small-posters) when present, else synthetic
shards written to a temp dir.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
POSTERS = REPO.parent / "shared" / "data" / "movielens-small-posters"


def synthetic_shards(directory: Path, n: int, size: int = 256) -> list[str]:
    from data.shards import write_shards
    from data.synthetic import make_synthetic

    syn = make_synthetic(n_items=n, n_classes=16, image_size=size, seed=0)
    samples = [
        {"key": k, "image": syn.images[k], "json": {"item_id": int(i)}}
        for k, i in zip(syn.dataset.items["media_key"], syn.dataset.items["item_id"])
    ]
    return write_shards(samples, str(directory / "synthetic-%03d.tar"), maxcount=max(1, n // 4))


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--encoder", default="small-clip")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument(
        "--shards", default=None, help="shard spec (default: real posters, else synthetic)"
    )
    p.add_argument("--max-shards", type=int, default=2, help="pipeline on the first N shards")
    p.add_argument("--forward-batches", type=int, default=8)
    p.add_argument("--naive-samples", type=int, default=128)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = p.parse_args()

    import torch

    from data.shards import expand_urls, iter_shard
    from encoders import create_encoder
    from encoders.embed import EmbedConfig, build_embeddings

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="embed-bench-"))
    if args.shards:
        shards, source = expand_urls(args.shards), "given"
    elif sorted(POSTERS.glob("posters-*.tar")):
        shards, source = sorted(str(s) for s in POSTERS.glob("posters-*.tar")), "posters"
    else:
        shards, source = synthetic_shards(tmp, 1024), "synthetic"
    shards = shards[: args.max_shards]

    torch.manual_seed(0)
    encoder = create_encoder(args.encoder)
    pre = encoder.preprocessor()
    bs = args.batch_size

    # Pre-made tensors for the bare forward (and a warm-up so no one-off cost is timed).
    images = []
    for sample in iter_shard(shards[0]):
        images.append(pre.image(sample["image"]))
        if len(images) == bs:
            break
    batch = torch.stack(images)
    encoder.encode_image(batch)

    def forward() -> float:
        start = time.perf_counter()
        for _ in range(args.forward_batches):
            encoder.encode_image(batch)
        return args.forward_batches * batch.shape[0] / (time.perf_counter() - start)

    # Measured before and after the pipeline and averaged: on a shared machine the load drifts.
    forward_before = forward()

    # Full pipeline, end to end.
    config = EmbedConfig(
        encoder=args.encoder, inputs=shards, out=str(tmp / "out"), batch_size=bs,
        num_workers=args.num_workers, progress=False,
    )  # fmt: skip
    start = time.perf_counter()
    manifest = build_embeddings(config, encoder=encoder)
    pipeline_s = time.perf_counter() - start
    n_pipeline = int(manifest.extra["rows_per_modality"].get("image", 0))
    pipeline_sps = n_pipeline / pipeline_s
    forward_sps = 0.5 * (forward_before + forward())

    # Naive: per sample, no batching, no workers.
    start = time.perf_counter()
    n_naive = 0
    out = []
    for sample in iter_shard(shards[0]):
        out.append(encoder.encode_image(pre.image(sample["image"]).unsqueeze(0)).numpy())
        n_naive += 1
        if n_naive >= args.naive_samples:
            break
    naive_sps = n_naive / (time.perf_counter() - start)

    print(
        json.dumps(
            {
                "bench": "embed",
                "batch_size": bs,
                "pipeline_sps": round(pipeline_sps, 1),
                "forward_sps": round(forward_sps, 1),
                "naive_sps": round(naive_sps, 1),
                "pipeline_vs_forward": round(pipeline_sps / forward_sps, 3),
                "pipeline_vs_naive": round(pipeline_sps / naive_sps, 2),
                "encoder": args.encoder,
                "image_size": int(batch.shape[-1]),
                "samples": n_pipeline,
                "shards": len(shards),
                "data": source,
                "num_workers": args.num_workers,
                "torch_threads": torch.get_num_threads(),
                "machine": f"{platform.machine()} {os.cpu_count()} cpu, {'cuda' if torch.cuda.is_available() else 'no gpu'}",
            }
        )
    )


if __name__ == "__main__":
    main()
