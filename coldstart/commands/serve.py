"""`coldstart serve`: the index HTTP API (FastAPI + uvicorn) over a store of any registered
backend (index.registry): a FAISS index directory or a Milvus collection (--backend milvus
--uri ...): the same routes, errors and auth."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from coldstart.commands.index import (
    STORE_ERRORS,
    add_store_arguments,
    backends_epilog,
    store_choice,
    wrap,
)

log = logging.getLogger("coldstart.serve")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="coldstart serve",
        description=wrap(
            "Serve a store of any registered backend over HTTP (a FAISS index "
            "directory with --index DIR, or a Milvus collection with --backend milvus --uri ...): "
            "search by vector, id or media; live upsert/delete (bearer token); /health, /ready, "
            "/metrics, OpenAPI docs at /docs; a browsing page at / (titles from --catalogue, "
            "thumbnails from --media shards). The same routes, errors and auth on every backend. "
            "With --ranker, recommendations from a trained method; --ranker alone (no --index) "
            "serves only those (and /health, /ready, /metrics)."
        ),
        epilog=backends_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_store_arguments(p, "serve")
    p.add_argument("--encoder", help="encoder name for media queries (encoders registry)")
    p.add_argument("--pretrained", help="encoder weights: open_clip tag, file or .ckpt")
    p.add_argument(
        "--embeddings",
        metavar="DIR",
        help="the embedding export the index / ranker content came from: uploads with several "
        "parts are fused, and videos sampled and pooled, as it did (its manifest: fusion, "
        "weights, video frames and pooling). Default: the FAISS index's source export, else the "
        "export the --ranker method read (its content.json), when still there; else mean "
        "fusion and mean pooling",
    )
    p.add_argument(
        "--video-frames",
        type=int,
        help="frames sampled per uploaded video (default: the export's; else 8; "
        "server.video_frames)",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument(
        "--config",
        help="YAML with `index:`, `store:`, `server:` and `browse:` sections (and `backend:` "
        "+ `milvus:` for a Milvus collection)",
    )
    p.add_argument("--no-batching", action="store_true", help="one store search per request")
    p.add_argument("--max-batch-size", type=int, help="query rows per store search")
    p.add_argument("--max-wait-ms", type=float, help="wait for a batch to fill (ms)")
    p.add_argument("--batch-workers", type=int, help="batches searched at once (threads)")
    p.add_argument(
        "--faiss-threads",
        type=int,
        help="OpenMP threads per search, set in the search threads (0: FAISS default)",
    )
    p.add_argument(
        "--body-timeout-s",
        type=float,
        help="seconds a request body may take to arrive in full; slower clients get 408 and "
        "are disconnected (default 30; server.body_timeout_s)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        help="connections and requests served at once; beyond it new requests get 503 "
        "(default 1000; server.max_connections)",
    )
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
    from coldstart.ranker_serving import add_ranker_arguments

    add_ranker_arguments(p)
    p.add_argument("--log-level", default="info")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    from coldstart.index.browse import BrowseConfig
    from coldstart.index.config import ServerConfig, load_yaml
    from coldstart.index.server import create_app, run_server

    try:
        raw = load_yaml(args.config) if args.config else {}
        server = _server_config(args, ServerConfig.from_dict(raw.get("server", {})))
        load = schema = choice = None  # --ranker alone: no content index (no search routes)
        if not args.ranker or _content_store_given(args, raw):
            choice = store_choice(args, raw, "serve")
            # An open store, or (faiss) a function that opens it in the server's loader thread.
            load, schema = choice.backend.serving(choice.location, choice.settings)
    except STORE_ERRORS as err:
        print(f"coldstart serve: {err}", file=sys.stderr)
        return 2
    opened = None if callable(load) else load  # opened before binding the port: close on error
    ranker = None

    try:
        encode = None
        if args.encoder:
            from coldstart.serving import export_fusion, make_encode

            fusion = export_fusion(_export_of(args, choice))
            _video_frames(server, fusion.video_frames, args, raw)
            encode, enc_dim = make_encode(args.encoder, args.pretrained, fusion=fusion)
            if schema is not None and enc_dim != schema.dim:
                raise ValueError(
                    f"encoder {args.encoder!r} has dim {enc_dim}, the index has {schema.dim}"
                )
        browse = BrowseConfig.from_dict(raw.get("browse", {}))
        from coldstart.ranker_serving import ranker_from_args

        ranker = ranker_from_args(args, enc_dim if args.encoder else None)
        id_type = schema.id_type if schema is not None else ranker.warm.schema.id_type
        catalogue, media = _load_browse(args, id_type)
    except (FileNotFoundError, ValueError, OSError) as err:
        print(f"coldstart serve: {err}", file=sys.stderr)
        if opened is not None:
            opened.close()
        if ranker is not None:
            ranker.close()
        return 2

    from coldstart.index.api import Contract

    app = create_app(
        load,
        server,
        encode=encode,
        contract=Contract.from_schema(schema) if schema is not None else None,
        catalogue=catalogue,
        media=media,
        browse=browse,
        ranker=ranker,
    )
    try:
        run_server(
            app,
            args.host,
            args.port,
            log_level=args.log_level,
            limit_concurrency=server.max_connections,
        )
    finally:
        if media is not None:
            media.close()
    return 0


def _content_store_given(args: argparse.Namespace, raw: dict) -> bool:
    """Whether the flags or the --config YAML name a content store (its location)."""
    from coldstart.index.registry import backends

    for backend in backends():
        for opt in backend.options:
            if opt.key is None and "serve" in opt.commands and getattr(args, opt.dest, None):
                return True
        if backend.location_key and (raw.get(backend.sections[0]) or {}).get(backend.location_key):
            return True
    return False


def _export_of(args: argparse.Namespace, choice: Any) -> str | None:
    """The embedding export whose fusion and pooling the server follows: --embeddings, else
    the source export a FAISS index directory records, else the one the --ranker method read
    (each when it still exists)."""
    if args.embeddings:
        return args.embeddings
    location = getattr(choice, "location", None)
    manifest = Path(str(location)) / "manifest.json" if location is not None else None
    if manifest is not None and manifest.is_file():
        try:
            export = (json.loads(manifest.read_text()).get("source") or {}).get("embeddings")
        except (OSError, ValueError):
            export = None
        if export and (Path(export) / "manifest.json").exists():
            return str(export)
        if export:
            log.warning("the index's source export %s is gone: uploads fused by the mean", export)
    if getattr(args, "ranker", None):
        from coldstart.ranker_serving import ranker_export

        return ranker_export(args.ranker, getattr(args, "ranker_method", None))
    return None


def _video_frames(server: Any, recorded: int | None, args: argparse.Namespace, raw: dict) -> None:
    """server.video_frames: the operator's (--video-frames, server.video_frames in --config),
    with a warning when it differs from the export's; else the export's; else the default."""
    given = args.video_frames or (raw.get("server") or {}).get("video_frames")
    if given is None:
        if recorded is not None:
            server.video_frames = int(recorded)
        return
    server.video_frames = int(given)
    if recorded is not None and int(given) != recorded:
        log.warning(
            "video frames: %d (operator) but the export sampled %d per video: uploaded videos "
            "will not get the vectors the evaluation computed",
            int(given),
            recorded,
        )


def _server_config(args: argparse.Namespace, server: Any) -> Any:
    if args.no_batching:
        server.batching = False
    for key, value in (
        ("max_batch_size", args.max_batch_size),
        ("max_wait_ms", args.max_wait_ms),
        ("batch_workers", args.batch_workers),
        ("faiss_threads", args.faiss_threads),
        ("body_timeout_s", args.body_timeout_s),
        ("max_connections", args.max_connections),
        ("video_frames", args.video_frames),
        ("token_file", args.token_file),
        ("token_env", args.token_env),
        ("id_rows", args.id_rows),
        ("id_rows_modality", args.id_rows_modality),
    ):
        if value is not None:
            setattr(server, key, value)
    server.auth_reads = server.auth_reads or args.auth_reads
    server.insecure_writes = server.insecure_writes or args.insecure_writes
    server.__post_init__()  # flags go through the same checks as YAML values
    return server


def _load_browse(args: argparse.Namespace, id_type: str) -> tuple[Any, Any]:
    """(Catalogue | None, MediaStore | None) keyed in the index's id type, loaded at start."""
    from coldstart.index.catalogue import Catalogue, MediaStore

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
        import coldstart.data.shards  # noqa: F401 - imports torch; kept out of the logged mapping time

        start = time.perf_counter()
        keys = catalogue.media_keys() if catalogue is not None else None
        media = MediaStore.scan(args.media, id_type, keys)
        log.info("media: %s in %.2f s", json.dumps(media.report), time.perf_counter() - start)
    return catalogue, media
