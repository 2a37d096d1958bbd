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
Modalities: image (a carousel's images pooled), video (K frames through the image tower, pooled
over time), text, tags (with --tags), fused (when a run has two or more).
Rerunning the same command resumes: finished parts are kept, the rest is embedded.
Each shard is cut into chunks so every DataLoader worker has work, even with fewer shards
than workers; its part is still written once, whole, in file order.
"""


# EmbedConfig fields offered as flags (defaults and help from the dataclass); --input and
# --fusion-weights are parsed here, text_chunk stays a library knob.
OPTIONS = (
    "encoder",
    "pretrained",
    "out",
    "batch_size",
    "num_workers",
    "devices",
    "accelerator",
    "precision",
    "decode",
    "text_fields",
    "with_tags",
    "fusion",
    "init_seed",
    "progress",
    "video_frames",
    "video_pooling",
    "video_pooling_state",
    "max_video_seconds",
)
FLAGS = {"with_tags": "--tags"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    from coldstart.commands.options import add_config_options
    from coldstart.encoders.config import EmbedConfig

    p = argparse.ArgumentParser(
        prog="coldstart embed",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--input",
        dest="inputs",
        metavar="INPUT",
        nargs="+",
        action="extend",
        required=True,
        help="shard specs (brace pattern, glob, directory) and/or one catalogue: movielens, "
        "movielens:<root>, items.parquet / items.csv",
    )
    add_config_options(p, EmbedConfig, OPTIONS, flags=FLAGS)
    p.add_argument(
        "--fusion-weights", default="", help="weighted fusion, e.g. image=1,text=2,tags=0.5"
    )
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from coldstart.commands.options import config_kwargs
    from coldstart.encoders.config import EmbedConfig
    from coldstart.encoders.embed import build_embeddings

    weights = {}
    for pair in filter(None, args.fusion_weights.split(",")):
        name, _, value = pair.partition("=")
        weights[name.strip()] = float(value)
    config = EmbedConfig(
        inputs=args.inputs,
        fusion_weights=weights,
        **config_kwargs(EmbedConfig, args, OPTIONS),
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
