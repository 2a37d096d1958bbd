"""`coldstart serve`: the index HTTP API (FastAPI + uvicorn)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

log = logging.getLogger("coldstart.serve")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="coldstart serve",
        description="Serve an index directory over HTTP: search by vector, id or media; "
        "live upsert/delete (bearer token); /health, /ready, /metrics, OpenAPI docs at /docs; "
        "a browsing page at / (titles from --catalogue, thumbnails from --media shards).",
    )
    p.add_argument("--index", required=True, help="index directory (coldstart index build)")
    p.add_argument("--encoder", help="encoder name for media queries (encoders registry)")
    p.add_argument("--pretrained", help="encoder weights: open_clip tag, file or .ckpt")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument(
        "--config", help="YAML with `index:`, `store:`, `server:` and `browse:` sections"
    )
    p.add_argument("--no-batching", action="store_true", help="one FAISS call per request")
    p.add_argument("--max-batch-size", type=int, help="query rows per FAISS call")
    p.add_argument("--max-wait-ms", type=float, help="wait for a batch to fill (ms)")
    p.add_argument("--batch-workers", type=int, help="batches searched at once (threads)")
    p.add_argument(
        "--faiss-threads",
        type=int,
        help="OpenMP threads per search, set in the search threads (0: FAISS default)",
    )
    p.add_argument("--nprobe", type=int, help="IVF cells visited per query")
    p.add_argument("--ef-search", type=int, help="HNSW search beam width")
    p.add_argument("--replica", choices=["auto", "gpu", "clone", "none"], help="GPU replicas")
    p.add_argument("--token-file", help="file holding the bearer token for writes")
    p.add_argument(
        "--token-env", help="environment variable holding the token (COLDSTART_API_TOKEN)"
    )
    p.add_argument("--auth-reads", action="store_true", help="require the token for reads too")
    p.add_argument(
        "--insecure-writes",
        action="store_true",
        help="allow writes with no token configured (logged as a warning: trusted hosts only)",
    )
    p.add_argument(
        "--catalogue",
        help="item catalogue for the page and /v1/items/{id}/meta: items.parquet (e.g. the "
        "split artifact), a CSV/TSV with an item_id column, a dataset YAML config, or movielens",
    )
    p.add_argument(
        "--media",
        action="append",
        help="webdataset shards (uncompressed tar) holding item images, read in place for "
        "/v1/items/{id}/image, e.g. 'posters-{000..003}.tar' (repeatable)",
    )
    p.add_argument("--id-rows", help="embedding export of ID-embedding rows (cold-start estimates)")
    p.add_argument("--id-rows-modality", help="modality of the --id-rows export to read")
    p.add_argument("--no-fsync", action="store_true", help="skip fsync on writes (unsafe)")
    p.add_argument("--snapshot-every", type=int, help="items written between snapshots")
    p.add_argument("--log-level", default="info")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    from index.browse import BrowseConfig
    from index.config import IndexConfig, ServerConfig, StoreConfig, load_yaml
    from index.server import create_app, run_server
    from index.store import DurableIndex, IndexCorrupt, check_wal, read_manifest

    raw = load_yaml(args.config) if args.config else {}
    try:
        read_manifest(args.index)
        check_wal(args.index)  # a corrupt log: refuse to start, before binding the port
    except (FileNotFoundError, ValueError, IndexCorrupt) as err:
        print(f"coldstart serve: {err}", file=sys.stderr)
        return 2
    overrides = {
        k: v for k, v in raw.get("index", {}).items() if k not in IndexConfig.__dataclass_fields__
    }
    if overrides:
        print(f"coldstart serve: unknown index keys {sorted(overrides)}", file=sys.stderr)
        return 2
    overrides = {
        k: v
        for k, v in raw.get("index", {}).items()
        if k not in ("factory", "metric", "dim", "id_type", "normalize")
    }
    for key, value in (
        ("nprobe", args.nprobe),
        ("ef_search", args.ef_search),
        ("replica", args.replica),
    ):
        if value is not None:
            overrides[key] = value
    store = StoreConfig.from_dict(raw.get("store", {}))
    if args.no_fsync:
        store.fsync = False
    if args.snapshot_every is not None:
        store.snapshot_every_ops = args.snapshot_every
    server = ServerConfig.from_dict(raw.get("server", {}))
    if args.no_batching:
        server.batching = False
    for key, value in (
        ("max_batch_size", args.max_batch_size),
        ("max_wait_ms", args.max_wait_ms),
        ("batch_workers", args.batch_workers),
        ("faiss_threads", args.faiss_threads),
        ("token_file", args.token_file),
        ("token_env", args.token_env),
        ("id_rows", args.id_rows),
        ("id_rows_modality", args.id_rows_modality),
    ):
        if value is not None:
            setattr(server, key, value)
    server.auth_reads = server.auth_reads or args.auth_reads
    server.insecure_writes = server.insecure_writes or args.insecure_writes

    encode = None
    if args.encoder:
        from coldstart.serving import make_encode

        encode, enc_dim = make_encode(args.encoder, args.pretrained)
        index_dim = read_manifest(args.index)["dim"]
        if enc_dim != index_dim:
            print(
                f"coldstart serve: encoder {args.encoder!r} has dim {enc_dim}, "
                f"the index has {index_dim}",
                file=sys.stderr,
            )
            return 2

    try:
        browse = BrowseConfig.from_dict(raw.get("browse", {}))
        catalogue, media = _load_browse(args, read_manifest(args.index))
    except (FileNotFoundError, ValueError, OSError) as err:
        print(f"coldstart serve: {err}", file=sys.stderr)
        return 2

    def load() -> DurableIndex:
        return DurableIndex.open(args.index, store, overrides)

    from index.api import Contract

    contract = Contract.from_manifest(read_manifest(args.index))  # the document's vector/id shape
    app = create_app(
        load,
        server,
        encode=encode,
        contract=contract,
        catalogue=catalogue,
        media=media,
        browse=browse,
    )
    try:
        run_server(app, args.host, args.port, log_level=args.log_level)
    finally:
        if media is not None:
            media.close()
    return 0


def _load_browse(args: argparse.Namespace, manifest: dict) -> tuple[Any, Any]:
    """(Catalogue | None, MediaStore | None) keyed in the index's id type, loaded at start."""
    from index.catalogue import Catalogue, MediaStore

    id_type = manifest.get("config", {}).get("id_type", "int")
    catalogue = media = None
    if args.catalogue:
        start = time.perf_counter()
        catalogue = Catalogue.load(args.catalogue, id_type)
        log.info(
            "catalogue %s: %d items in %.2f s%s",
            args.catalogue,
            len(catalogue),
            time.perf_counter() - start,
            f", skipped {dict(catalogue.skipped)}" if catalogue.skipped else "",
        )
    if args.media:
        import data.shards  # noqa: F401 - imports torch; kept out of the logged mapping time

        start = time.perf_counter()
        keys = catalogue.media_keys() if catalogue is not None else None
        media = MediaStore.scan(args.media, id_type, keys)
        log.info("media: %s in %.2f s", json.dumps(media.report), time.perf_counter() - start)
    return catalogue, media
