"""`coldstart index`: build a store from an embedding export (a FAISS index directory, or a
Milvus collection with --backend milvus), inspect one, repair a FAISS write-ahead log.

The backends and their options come from index.registry (each store declares them once);
`coldstart serve` shares `add_store_arguments` and `store_choice`."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from typing import TYPE_CHECKING

from coldstart.index.backend import (
    BackendUnavailable,
    InvalidInput,
    StoreCorrupt,
)

if TYPE_CHECKING:
    from coldstart.index.backend import Option
    from coldstart.index.registry import Choice

# What a command reports as a one-line error with exit code 2 (bad input, a missing or
# damaged store, a backend that is not installed or not reachable).
STORE_ERRORS = (
    InvalidInput,
    BackendUnavailable,
    StoreCorrupt,
    FileNotFoundError,
    FileExistsError,
    ValueError,
)


def backends_epilog() -> str:
    """The registered backends, a paragraph each, for the commands' --help (the parsers use
    RawDescriptionHelpFormatter: the text is wrapped here)."""
    from coldstart.index.registry import DEFAULT, backends

    paragraphs = [
        f"Backends (--backend NAME, or `backend: NAME` in the --config YAML; default {DEFAULT}). "
        "An option marked with a backend's name is for that backend only; its YAML sections "
        "(configs/index/) hold the rest.",
        *(f"{b.name}: {b.summary}" for b in backends()),
    ]
    return "\n".join(
        textwrap.fill(text, 79, initial_indent="  " * bool(i), subsequent_indent="    " * bool(i))
        for i, text in enumerate(paragraphs)
    )


def wrap(text: str) -> str:
    """A description wrapped for RawDescriptionHelpFormatter."""
    return textwrap.fill(text, 79)


def add_store_arguments(p: argparse.ArgumentParser, command: str) -> None:
    """--backend and the options of every registered backend that `command` ("build", "info",
    "serve") takes; a flag two backends share is added once, marked with its owners' names
    unless every backend has it."""
    from coldstart.index.registry import DEFAULT, backend_names, backends

    names = backend_names()
    p.add_argument(
        "--backend",
        choices=names,
        help=f"the store: {', '.join(names)} (see below); default: the --config file's "
        f"`backend:`, else {DEFAULT}",
    )
    declared = backends()
    owners: dict[str, list[str]] = {}
    first: dict[str, Option] = {}
    for backend in declared:
        for opt in (o for o in backend.options if command in o.commands):
            seen = first.setdefault(opt.flag, opt)
            if _kind(seen) != _kind(opt):  # one argparse argument must serve both
                raise TypeError(f"backends declare {opt.flag} differently: {seen} vs {opt}")
            owners.setdefault(opt.flag, []).append(backend.name)
    for flag, opt in first.items():
        who = owners[flag]
        help_ = opt.help if len(who) == len(declared) else f"{', '.join(who)}: {opt.help}"
        if opt.const is not None:
            p.add_argument(flag, dest=opt.dest, action="store_const", const=opt.const, help=help_)
        else:
            kwargs = {"type": opt.type, "choices": opt.choices, "metavar": opt.metavar}
            p.add_argument(flag, dest=opt.dest, help=help_, **kwargs)


def _kind(opt: Option) -> tuple:
    return (opt.key is None, opt.type, opt.choices, opt.const)


def store_choice(args: argparse.Namespace, raw: dict, command: str) -> Choice:
    """The store `command` works on, from --backend, the store options and the --config YAML."""
    from coldstart.index.registry import backends, choose

    flags = {opt.flag: opt.dest for b in backends() for opt in b.options if command in opt.commands}
    given = {flag: getattr(args, dest, None) for flag, dest in flags.items()}
    return choose(raw, given, command, backend=args.backend)


def _parser() -> argparse.ArgumentParser:
    epilog = backends_epilog()
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="coldstart index",
        description=wrap(
            "Build and inspect stores of any registered backend: FAISS index directories "
            "(the default) or Milvus collections."
        ),
        epilog=epilog,
        formatter_class=formatter,
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    build = sub.add_parser(
        "build",
        help="build a store from an embedding export; prints recall@10 vs exact search (JSON)",
        epilog=epilog,
        formatter_class=formatter,
    )
    build.add_argument("--embeddings", required=True, help="embedding export directory")
    build.add_argument(
        "--config",
        help="YAML with `backend:` and the backend's sections: `index:` (faiss) or `milvus:` "
        "(configs/index/)",
    )
    add_store_arguments(build, "build")
    build.add_argument("--modality", help="rows of this modality only (fused, image, text...)")
    build.add_argument("--recall-queries", type=int, default=1000, help="queries for recall@10")
    info = sub.add_parser(
        "info",
        help="print a store's manifest, schema and live item count (JSON)",
        epilog=epilog,
        formatter_class=formatter,
    )
    info.add_argument("--config", help="YAML with `backend:` and the backend's sections")
    add_store_arguments(info, "info")
    repair = sub.add_parser(
        "repair",
        help="cut a corrupt write-ahead log at its first bad record, or accept acknowledged "
        "records lost from it; reports what it drops",
        description="A torn tail (an incomplete last record left by a crash during an append) "
        "is cut off automatically when the index opens: it was never acknowledged. Any other "
        "damage (a bad checksum, garbage followed by intact records), or a log that ends before "
        "the high-water mark of acknowledged writes (wal.mark: the log was truncated or "
        "deleted), makes the index refuse to open, because serving would silently drop "
        "acknowledged writes. This command cuts the log at the first bad byte, saves the cut "
        "bytes beside the log (wal.log.cut-<offset>-<time>), sets the high-water mark to what "
        "the log then holds and prints a JSON report: dropped_acknowledged_records, "
        "dropped_items, dropped_lsns, missing_lsns. It changes nothing that drops acknowledged "
        "records unless given --accept-loss (exit code 2 without it). Exit code 0 when the log "
        "was clean or repaired. FAISS index directories only.",
    )
    repair.add_argument("--index", required=True)
    repair.add_argument(
        "--dry-run", action="store_true", help="report what would be cut, change nothing"
    )
    repair.add_argument(
        "--accept-loss",
        action="store_true",
        help="drop acknowledged records that are damaged or missing (needed whenever a repair "
        "loses acknowledged writes)",
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
    from coldstart.index.build import build_index
    from coldstart.index.config import load_yaml

    try:
        choice = store_choice(args, load_yaml(args.config) if args.config else {}, "build")
        report = build_index(
            args.embeddings,
            choice.location,
            choice.settings,
            modality=args.modality,
            recall_queries=args.recall_queries,
            backend=choice.backend.name,
        )
    except STORE_ERRORS as err:
        print(f"coldstart index build: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report))
    return 0


def _repair(args: argparse.Namespace) -> int:
    from coldstart.index.store import repair_index

    try:
        report = repair_index(args.index, dry_run=args.dry_run, accept_loss=args.accept_loss)
    except (FileNotFoundError, ValueError, OSError, StoreCorrupt) as err:
        print(f"coldstart index repair: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    if report.get("refused"):
        print(
            f"coldstart index repair: refusing: it would drop "
            f"{report['dropped_acknowledged_records']} acknowledged record(s)"
            f"{' (' + report['mark'] + ')' if 'mark' in report else ''}; nothing was changed. "
            "Rerun with --accept-loss to drop them.",
            file=sys.stderr,
        )
        return 2
    if report["dropped_acknowledged_records"]:
        verb = "would drop" if args.dry_run else "dropped"
        print(
            f"coldstart index repair: {verb} {report['dropped_acknowledged_records']} "
            f"acknowledged record(s) ({report.get('dropped_items', 0)} item(s) in the intact ones)",
            file=sys.stderr,
        )
    return 0


def _info(args: argparse.Namespace) -> int:
    from coldstart.index.config import load_yaml

    try:
        choice = store_choice(args, load_yaml(args.config) if args.config else {}, "info")
        info = choice.backend.info(choice.location, choice.settings)
    except STORE_ERRORS as err:
        print(f"coldstart index info: {err}", file=sys.stderr)
        return 2
    print(json.dumps(info, indent=2, default=str))
    return 0
