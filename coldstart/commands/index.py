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
    repair = sub.add_parser(
        "repair",
        help="cut a corrupt write-ahead log at its first bad record; reports what it drops",
        description="A torn tail (an incomplete last record left by a crash during an append) "
        "is cut off automatically when the index opens: it was never acknowledged. Any other "
        "damage (a bad checksum, garbage followed by intact records) makes the index refuse to "
        "open, because replaying only the records before it would silently drop acknowledged "
        "writes. This command cuts the log at the first bad byte, saves the cut bytes beside "
        "the log (wal.log.cut-<offset>-<time>) and prints a JSON report: "
        "dropped_acknowledged_records, dropped_items, dropped_lsns. Exit code 0 when the log "
        "was clean or repaired.",
    )
    repair.add_argument("--index", required=True)
    repair.add_argument(
        "--dry-run", action="store_true", help="report what would be cut, change nothing"
    )
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "build":
        return _build(args)
    if args.cmd == "repair":
        return _repair(args)
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


def _repair(args: argparse.Namespace) -> int:
    from index.store import repair_index

    try:
        report = repair_index(args.index, dry_run=args.dry_run)
    except (FileNotFoundError, ValueError, OSError) as err:
        print(f"coldstart index repair: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    if report["dropped_acknowledged_records"]:
        verb = "would drop" if args.dry_run else "dropped"
        print(
            f"coldstart index repair: {verb} {report['dropped_acknowledged_records']} "
            f"acknowledged record(s) ({report['dropped_items']} item(s) in the intact ones)",
            file=sys.stderr,
        )
    return 0


def _info(args: argparse.Namespace) -> int:
    from index.store import DurableIndex, IndexCorrupt, read_manifest

    try:
        manifest = read_manifest(args.index)
        durable = DurableIndex.open(args.index)
    except (FileNotFoundError, ValueError, IndexCorrupt) as err:
        print(f"coldstart index info: {err}", file=sys.stderr)
        return 2
    try:
        manifest["live_items"] = len(durable)
        manifest["wal_records_replayed"] = durable.replayed
        manifest["device"] = durable.index.device
    finally:
        durable.close(snapshot=False)
    print(json.dumps(manifest, indent=2))
    return 0
