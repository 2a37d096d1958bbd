"""`coldstart data`: split a dataset, pack media shards, inspect datasets and shards."""

from __future__ import annotations

import argparse
import json
import sys


def _add_dataset_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        default="movielens",
        help="dataset name: 'movielens' (embedded copy unless --root), 'synthetic', or a YAML "
        "dataset config path (same as --config). Default: movielens",
    )
    parser.add_argument(
        "--root", default=None, help="another ml-latest-small directory for movielens"
    )
    parser.add_argument(
        "--config",
        default=None,
        help="YAML config of a generic CSV/Parquet dataset (see configs/datasets/example.yaml); "
        "overrides --dataset",
    )


def _load(args: argparse.Namespace):  # noqa: ANN202 - data.schema.Dataset
    from coldstart.data.generic import load_dataset

    return load_dataset(args.config or args.dataset, root=args.root)


def _split(args: argparse.Namespace) -> int:
    from coldstart.commands.options import config_kwargs
    from coldstart.data.split import SplitConfig, cold_start_split, write_split

    dataset = _load(args)
    split = cold_start_split(dataset, **config_kwargs(SplitConfig, args))
    manifest = write_split(split, args.out)
    manifest = dict(manifest, load_reports={k: r.as_dict() for k, r in dataset.reports.items()})
    print(json.dumps(manifest, indent=2, sort_keys=False))
    return 0


def _pack(args: argparse.Namespace) -> int:
    from coldstart.data.shards import pack_folder

    stats = pack_folder(
        images=args.images,
        texts=args.texts,
        pattern=args.out,
        maxcount=args.maxcount,
        key_column=args.key_column,
    )
    print(json.dumps(stats, indent=2))
    return 0


def _no_time_warning(inter, requests: dict, max_size: int) -> str | None:  # noqa: ANN001
    """A warning when requests cannot come from the log: no request ids and no usable time."""
    from coldstart.data.schema import REQUEST_ID, TIMESTAMP

    if REQUEST_ID in inter.columns and inter[REQUEST_ID].notna().all():
        return None
    if TIMESTAMP in inter.columns and inter[TIMESTAMP].nunique(dropna=True) > 1:
        return None
    full = requests["size_histogram"].get(max_size, 0)
    return (
        "the interactions have no timestamps (and no request ids): requests are grouped "
        f"arbitrarily, each user's rows in file order cut every {max_size} rows "
        f"({full} of {requests['requests']} requests hold exactly {max_size} rows). Request "
        "grouping, sessions and time-based hold-outs mean nothing on this data."
    )


def _inspect(args: argparse.Namespace) -> int:
    if args.shards:
        from coldstart.data.shards import media_summary

        print(json.dumps(media_summary(args.shards, decode=not args.no_decode), indent=2))
        return 0
    dataset = _load(args)
    inter, items = dataset.interactions, dataset.items
    summary = {
        "dataset": dataset.name,
        "items": len(items),
        "interactions": len(inter),
        "users": int(inter["user_id"].nunique()) if len(inter) else 0,
        "interacted_items": int(inter["item_id"].nunique()) if len(inter) else 0,
        "events": {str(k): int(v) for k, v in inter["event"].value_counts().items()}
        if "event" in inter
        else {},
        "item_columns": list(items.columns),
        "interaction_columns": list(inter.columns),
        "reports": {k: r.as_dict() for k, r in dataset.reports.items()},
        "source_sha256": dataset.source_sha256,
    }
    if len(inter):
        from coldstart.data.requests import group_requests, request_stats
        from coldstart.data.sampling import rare_id_sweep

        grouped = group_requests(inter, window_seconds=args.window_seconds, max_size=args.max_size)
        summary["requests"] = {
            "window_seconds": args.window_seconds,
            "max_size": args.max_size,
            **request_stats(grouped),
        }
        summary["rare_item_ids"] = rare_id_sweep(
            inter["item_id"].to_numpy(), tuple(args.rare_thresholds)
        )
        warning = _no_time_warning(inter, summary["requests"], args.max_size)
        if warning:
            summary["warnings"] = [warning]
            print(f"warning: {warning}", file=sys.stderr)
    print(json.dumps(summary, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from coldstart.commands.options import add_config_options
    from coldstart.data.split import SplitConfig

    parser = argparse.ArgumentParser(
        prog="coldstart data", description="Datasets: cold-start split, media shards, inspection."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    split = sub.add_parser(
        "split",
        help="seeded cold-start split (cold items, warm train/val/test, cold val/test) to "
        "Parquet + manifest",
        description="Seeded cold-start split (ColdRec/ALDI protocol). Writes train/val/test/"
        "cold_val/cold_test.parquet, items.parquet and manifest.json to --out and prints the "
        "manifest as JSON.",
    )
    _add_dataset_args(split)
    split.add_argument("--out", required=True, help="output directory")
    add_config_options(split, SplitConfig)
    split.set_defaults(func=_split)

    pack = sub.add_parser(
        "pack",
        help="write webdataset shards from a folder of media plus a CSV of texts/ids",
        description="Pack the media of --images with the rows of --texts (columns: key or "
        "item_id, text, any extra columns -> <key>.json) into tar shards. Media per key: "
        "<key>.jpg|png|webp (a photo), <key>.<n>.jpg or a folder <key>/ of images (a carousel, "
        "in order), <key>.mp4|webm (a video).",
    )
    pack.add_argument(
        "--images", required=True, help="folder of media: <key>.<ext>, <key>.<n>.<ext>, <key>/"
    )
    pack.add_argument(
        "--texts", default=None, help="CSV with key (or item_id), text, extra columns"
    )
    pack.add_argument("--out", required=True, help="shard pattern, e.g. out/shard-%%05d.tar")
    pack.add_argument("--maxcount", type=int, default=1000, help="samples per shard")
    pack.add_argument(
        "--key-column", default=None, help="CSV column with the key (default: key, else item_id)"
    )
    pack.set_defaults(func=_pack)

    inspect = sub.add_parser(
        "inspect",
        help="summarize a dataset (counts, load reports, requests, rare ids), or shards (samples, "
        "media types, carousel sizes, video formats and durations)",
    )
    _add_dataset_args(inspect)
    inspect.add_argument(
        "--shards", default=None, help="shard pattern, e.g. 'posters-{000..003}.tar'"
    )
    inspect.add_argument("--no-decode", action="store_true", help="do not decode images (faster)")
    inspect.add_argument(
        "--window-seconds", type=int, default=60, help="request grouping: max gap inside a request"
    )
    inspect.add_argument(
        "--max-size", type=int, default=8, help="request grouping: items per request cap"
    )
    inspect.add_argument(
        "--rare-thresholds",
        type=int,
        nargs="+",
        default=[1, 2, 5, 10, 20],
        help="item-id frequency thresholds to report (ids below -> shared rare bucket)",
    )
    inspect.set_defaults(func=_inspect)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return int(args.func(args) or 0)
