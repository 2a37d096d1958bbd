"""`coldstart index`: build an index directory from an embedding export, inspect one."""

from __future__ import annotations

import argparse
import json
import sys

FACTORY_HELP = (
    'FAISS index_factory string, e.g. "Flat" (exact), "IVF1024,Flat", "HNSW32", "IVF256,PQ16"'
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coldstart index", description="Build and inspect FAISS index directories."
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    build = sub.add_parser(
        "build",
        help="build an index from an embedding export; prints recall@10 vs exact search (JSON)",
    )
    build.add_argument("--embeddings", required=True, help="embedding export directory")
    build.add_argument("--out", required=True, help="new index directory (must not hold one)")
    build.add_argument("--config", help="YAML with an `index:` section (configs/index/*.yaml)")
    build.add_argument("--factory", help=FACTORY_HELP + " (overrides --config)")
    build.add_argument("--metric", choices=["ip", "l2"], help="inner product (default) or L2")
    build.add_argument("--modality", help="rows of this modality only (fused, image, text...)")
    build.add_argument("--nprobe", type=int, help="IVF cells visited per query")
    build.add_argument("--ef-search", type=int, help="HNSW search beam width")
    build.add_argument("--no-normalize", action="store_true", help="keep vectors as they are")
    build.add_argument("--recall-queries", type=int, default=1000, help="queries for recall@10")
    info = sub.add_parser("info", help="print an index directory's manifest and live item count")
    info.add_argument("--index", required=True)
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "build":
        return _build(args)
    return _info(args)


def _build(args: argparse.Namespace) -> int:
    from index.build import build_index
    from index.config import IndexConfig, load_yaml
    from index.vector_index import InvalidInput

    raw = load_yaml(args.config).get("index", {}) if args.config else {}
    for key, value in (
        ("factory", args.factory),
        ("metric", args.metric),
        ("nprobe", args.nprobe),
        ("ef_search", args.ef_search),
    ):
        if value is not None:
            raw[key] = value
    if args.no_normalize:
        raw["normalize"] = False
    try:
        config = IndexConfig.from_dict(raw)
        report = build_index(
            args.embeddings,
            args.out,
            config,
            modality=args.modality,
            recall_queries=args.recall_queries,
        )
    except (InvalidInput, FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"coldstart index build: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report))
    return 0


def _info(args: argparse.Namespace) -> int:
    from index.store import DurableIndex, read_manifest

    try:
        manifest = read_manifest(args.index)
    except (FileNotFoundError, ValueError) as err:
        print(f"coldstart index info: {err}", file=sys.stderr)
        return 2
    durable = DurableIndex.open(args.index)
    try:
        manifest["live_items"] = len(durable)
        manifest["wal_records_replayed"] = durable.replayed
        manifest["device"] = durable.index.device
    finally:
        durable.close(snapshot=False)
    print(json.dumps(manifest, indent=2))
    return 0
