"""`coldstart index`: build a store from an embedding export (a FAISS index directory, or a
Milvus collection with --backend milvus), inspect one, repair a FAISS write-ahead log."""

from __future__ import annotations

import argparse
import json
import sys

FACTORY_HELP = (
    'FAISS index_factory string, e.g. "Flat" (exact), "IVF1024,Flat", "HNSW32", "IVF256,PQ16"'
)
MILVUS_EPILOG = (
    "Milvus (needs `pip install 'coldstart[milvus]'`): --backend milvus --uri runs/idx/items.db "
    "is a Milvus Lite file, --uri http://host:19530 a Milvus server or cluster (token in "
    "$MILVUS_TOKEN); --config configs/index/milvus.yaml holds the rest (`backend: milvus` and a "
    "`milvus:` section)."
)


def add_store_arguments(p: argparse.ArgumentParser) -> None:
    """--backend / --uri / --collection: which store (shared by `index` and `serve`)."""
    p.add_argument(
        "--backend",
        choices=["faiss", "milvus"],
        help="faiss (an index directory, the default) or milvus (a collection at --uri); "
        "default: the --config file's `backend:`",
    )
    p.add_argument("--uri", help="milvus: a Lite file (*.db) or http://host:19530")
    p.add_argument("--collection", help="milvus: collection name (default: items)")


def store_choice(args: argparse.Namespace, raw: dict) -> tuple[str, dict]:
    """(backend, the `milvus:` section with --uri/--collection applied) from args + YAML."""
    backend = args.backend or raw.get("backend", "faiss")
    if backend not in ("faiss", "milvus"):
        raise ValueError(f"backend must be faiss or milvus, got {backend!r}")
    milvus = dict(raw.get("milvus", {}))
    for key, value in (("uri", args.uri), ("collection", args.collection)):
        if value is not None:
            milvus[key] = value
    if backend == "milvus" and not milvus.get("uri"):
        raise ValueError("--backend milvus needs --uri (a *.db file or http://host:19530)")
    if backend == "faiss" and (args.uri or args.collection):
        raise ValueError("--uri and --collection are for --backend milvus")
    return backend, milvus


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coldstart index",
        description="Build and inspect stores: FAISS index directories (the default) or Milvus "
        "collections.",
        epilog=MILVUS_EPILOG,
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    build = sub.add_parser(
        "build",
        help="build a store from an embedding export; prints recall@10 vs exact search (JSON)",
        epilog=MILVUS_EPILOG,
    )
    build.add_argument("--embeddings", required=True, help="embedding export directory")
    build.add_argument("--out", help="faiss: new index directory (must not hold one)")
    build.add_argument(
        "--config", help="YAML with an `index:` (faiss) or `milvus:` section (configs/index/)"
    )
    add_store_arguments(build)
    build.add_argument("--factory", help=FACTORY_HELP + " (overrides --config)")
    build.add_argument(
        "--index-type", choices=["FLAT", "IVF_FLAT", "HNSW"], help="milvus: the vector index"
    )
    build.add_argument("--metric", choices=["ip", "l2"], help="inner product (default) or L2")
    build.add_argument("--modality", help="rows of this modality only (fused, image, text...)")
    build.add_argument("--nprobe", type=int, help="IVF cells visited per query")
    build.add_argument("--ef-search", type=int, help="HNSW search beam width")
    build.add_argument("--no-normalize", action="store_true", help="keep vectors as they are")
    build.add_argument("--recall-queries", type=int, default=1000, help="queries for recall@10")
    info = sub.add_parser(
        "info", help="print a store's manifest, schema and live item count (JSON)"
    )
    info.add_argument("--index", help="faiss: index directory")
    info.add_argument("--config", help="YAML with `backend:` and a `milvus:` section")
    add_store_arguments(info)
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
    from coldstart.index.backend import BackendUnavailable, InvalidInput
    from coldstart.index.build import build_index
    from coldstart.index.config import IndexConfig, load_yaml

    try:
        raw_all = load_yaml(args.config) if args.config else {}
        backend, milvus = store_choice(args, raw_all)
        if backend == "faiss":
            if not args.out:
                raise ValueError("--out DIR is needed for the faiss backend")
            if args.index_type:
                raise ValueError("--index-type is for --backend milvus (faiss: --factory)")
            raw = dict(raw_all.get("index", {}))
            keys = (("factory", args.factory),)
        else:
            if args.factory or args.out:
                raise ValueError(
                    "--factory and --out are for the faiss backend (milvus: --index-type, --uri)"
                )
            raw, keys = milvus, (("index_type", args.index_type),)
        for key, value in (
            *keys,
            ("metric", args.metric),
            ("nprobe", args.nprobe),
            ("ef_search", args.ef_search),
        ):
            if value is not None:
                raw[key] = value
        if args.no_normalize:
            raw["normalize"] = False
        if backend == "faiss":
            config: object = IndexConfig.from_dict(raw)
            out = args.out
        else:
            from coldstart.index.milvus_store import MilvusConfig

            config = MilvusConfig.from_dict(raw)
            out = config.uri
        report = build_index(
            args.embeddings,
            out,
            config,
            modality=args.modality,
            recall_queries=args.recall_queries,
        )
    except (
        InvalidInput,
        BackendUnavailable,
        FileNotFoundError,
        FileExistsError,
        ValueError,
    ) as err:
        print(f"coldstart index build: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report))
    return 0


def _repair(args: argparse.Namespace) -> int:
    from coldstart.index.store import repair_index

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
    from coldstart.index.backend import BackendUnavailable, InvalidInput, open_store
    from coldstart.index.config import load_yaml
    from coldstart.index.store import IndexCorrupt

    try:
        backend, milvus = store_choice(args, load_yaml(args.config) if args.config else {})
        if backend == "faiss":
            if not args.index:
                raise ValueError("--index DIR is needed for the faiss backend")
            store = open_store("faiss", args.index)
        else:
            store = open_store("milvus", milvus["uri"], config=milvus)
    except (
        FileNotFoundError,
        ValueError,
        IndexCorrupt,
        BackendUnavailable,
        InvalidInput,
    ) as err:
        print(f"coldstart index info: {err}", file=sys.stderr)
        return 2
    try:
        info = store.info()
    finally:
        # info only looks: a FAISS store keeps its log as it was (no snapshot on close)
        store.close(snapshot=False) if backend == "faiss" else store.close()  # type: ignore[call-arg]
    print(json.dumps(info, indent=2, default=str))
    return 0
