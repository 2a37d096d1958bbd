"""`coldstart embed`: batch-embed images from webdataset shards and/or texts from a catalogue."""

from __future__ import annotations

import argparse
import json
import sys
import time

EPILOG = """examples:
  coldstart embed --encoder small-clip+minilm \\
      --input '../shared/data/movielens-small-posters/posters-{000..003}.tar' movielens --out runs/emb
  coldstart embed --encoder minilm --input items.parquet --out runs/emb-text
  coldstart embed --encoder tiny-clip --pretrained runs/encoders/tiny-clip/checkpoints/last.ckpt \\
      --input 'shards/train-{000..003}.tar' --out runs/emb-ft --devices 2
  coldstart embed --encoder ViT-B-32 --input 'shards/{000..015}.tar' --out runs/emb-gpu \\
      --accelerator gpu --precision bf16-mixed --decode device --batch-size 256 --num-workers 14

Output: part-*.parquet (item_id, modality, vector) + manifest.json (data/embeddings.py).
Modalities: image, text, tags (with --tags), fused (when a run has two or more).
Rerunning the same command resumes: finished parts are kept, the rest is embedded.
Each shard is cut into chunks so every DataLoader worker has work, even with fewer shards
than workers; its part is still written once, whole, in file order.
"""


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="coldstart embed",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--encoder", required=True, help="registry name, e.g. tiny-clip, minilm, small-clip+minilm"
    )
    p.add_argument(
        "--pretrained", default=None, help="open_clip tag / weights file, or a fine-tuned .ckpt"
    )
    p.add_argument(
        "--input",
        nargs="+",
        action="extend",
        required=True,
        help="shard specs (brace pattern, glob, directory) and/or one catalogue: movielens, "
        "movielens:<root>, items.parquet / items.csv",
    )
    p.add_argument("--out", required=True, help="output directory (created; reruns resume)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-workers", type=int, default=2, help="DataLoader workers per device")
    p.add_argument(
        "--devices", type=int, default=1, help="devices (processes); work split by shard"
    )
    p.add_argument("--accelerator", default="cpu", help="cpu, gpu, auto")
    p.add_argument(
        "--precision",
        choices=("32", "bf16-mixed", "16-mixed"),
        default="32",
        help="forward precision (Lightning's names; 16-mixed runs as bf16-mixed on a CPU); "
        "vectors are stored float32 either way, and one export keeps one precision",
    )
    p.add_argument(
        "--decode",
        choices=("cpu", "device"),
        default="cpu",
        help="cpu: workers decode images (PIL); device: JPEGs decoded in batches on the model's "
        "device (torchvision decode_jpeg, nvjpeg on a GPU), other formats and files it cannot "
        "decode on the CPU",
    )
    p.add_argument(
        "--text-fields", default="title,genres,text", help="catalogue fields joined into the text"
    )
    p.add_argument(
        "--tags",
        action="store_true",
        help="also embed user tags as a 'tags' modality (interaction-derived: leaks for cold items)",
    )
    p.add_argument("--fusion", choices=("mean", "weighted"), default="mean")
    p.add_argument(
        "--fusion-weights", default="", help="weighted fusion, e.g. image=1,text=2,tags=0.5"
    )
    p.add_argument(
        "--init-seed",
        type=int,
        default=0,
        help="seed for towers without pretrained weights (random init): a rerun with the same "
        "seed draws the same weights, so it resumes",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from coldstart.encoders.embed import EmbedConfig, build_embeddings

    weights = {}
    for pair in filter(None, args.fusion_weights.split(",")):
        name, _, value = pair.partition("=")
        weights[name.strip()] = float(value)
    config = EmbedConfig(
        encoder=args.encoder,
        inputs=args.input,
        out=args.out,
        pretrained=args.pretrained,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        devices=args.devices,
        accelerator=args.accelerator,
        precision=args.precision,
        decode=args.decode,
        text_fields=tuple(f.strip() for f in args.text_fields.split(",") if f.strip()),
        with_tags=args.tags,
        fusion=args.fusion,
        fusion_weights=weights,
        progress=not args.no_progress,
        init_seed=args.init_seed,
    )
    start = time.perf_counter()
    try:
        manifest = build_embeddings(config)
    except (ValueError, FileNotFoundError) as error:
        print(f"coldstart embed: error: {error}", file=sys.stderr)
        return 2
    summary = {
        "out": args.out,
        "encoder": manifest.encoder,
        "dim": manifest.dim,
        "parts": len(manifest.parts),
        "rows": manifest.count,
        "rows_per_modality": manifest.extra.get("rows_per_modality"),
        "input_samples": manifest.extra.get("input_samples"),
        "skipped": manifest.skipped,
        "complete": manifest.extra.get("complete"),
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(summary))
    return 0
