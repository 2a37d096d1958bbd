"""The one `coldstart` command. Subcommands live in their own modules and are imported only
when called, so `coldstart --help` stays fast (no torch, faiss or transformers at start-up).

Each entry maps a subcommand to "module:function"; the function takes the remaining argv
(list[str]) and returns an exit code. LightningCLI-driven subcommands (`encoder`, `ranker`)
hand their argv straight to LightningCLI.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import TextIO

COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("coldstart.commands.data:main", "datasets: split, pack shards, inspect"),
    "encoder": (
        "coldstart.commands.encoder:main",
        "contrastive fine-tuning (LightningCLI: fit/validate/test)",
    ),
    "embed": ("coldstart.commands.embed:main", "batch-embed media shards and/or a catalogue"),
    "index": (
        "coldstart.commands.index:main",
        "build and inspect FAISS indexes and Milvus collections; repair a FAISS log",
    ),
    "serve": (
        "coldstart.commands.serve:main",
        "serve a FAISS index or a Milvus collection over HTTP",
    ),
    "ranker": (
        "coldstart.commands.ranker:main",
        "ranker training (LightningCLI: fit/validate/test/predict)",
    ),
    "experiment": (
        "coldstart.commands.experiment:main",
        "run the whole cycle from one YAML config",
    ),
    "suite": (
        "coldstart.commands.suite:main",
        "experiments x split seeds x variants -> mean ± std tables (sweeps, reports)",
    ),
    "demo": ("coldstart.commands.experiment:demo", "the MovieLens experiment on the embedded data"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: coldstart <command> [args...]",
        "",
        "Multimodal cold-start representations: encoders, warm-started ranker, FAISS or Milvus index.",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `coldstart <command> --help` for a command's options."]
    return "\n".join(lines)


def _print(text: str, file: TextIO | None = None) -> bool:
    """Print `text`; False when the reader has gone (`coldstart --help | head -1`)."""
    stream = sys.stdout if file is None else file
    try:
        print(text, file=stream)
        stream.flush()
    except BrokenPipeError:
        _quiet(stream)
        return False
    return True


def _quiet(stream: TextIO) -> None:
    """Point a stream whose reader has gone at devnull, so that the interpreter's exit-time
    flush cannot raise BrokenPipeError again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, stream.fileno())
    except (OSError, ValueError):  # not a real file descriptor (captured in tests)
        pass
    finally:
        os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        _print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        _print(f"coldstart: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, func_name = COMMANDS[name][0].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    try:
        code = func(rest)
    except BrokenPipeError:  # the reader went away (`coldstart index info ... | head -1`)
        _quiet(sys.stdout)
        return 1
    return int(code or 0)


if __name__ == "__main__":
    raise SystemExit(main())
