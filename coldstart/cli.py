"""The one `coldstart` command. Subcommands live in their own modules and are imported only
when called, so `coldstart --help` stays fast (no torch, faiss or transformers at start-up).

Each entry maps a subcommand to "module:function"; the function takes the remaining argv
(list[str]) and returns an exit code. LightningCLI-driven subcommands (`encoder`, `ranker`)
hand their argv straight to LightningCLI.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("coldstart.commands.data:main", "datasets: split, pack shards, inspect"),
    "encoder": (
        "coldstart.commands.encoder:main",
        "contrastive fine-tuning (LightningCLI: fit/validate/test)",
    ),
    "embed": ("coldstart.commands.embed:main", "batch-embed media shards and/or a catalogue"),
    "index": ("coldstart.commands.index:main", "build, inspect and repair FAISS indexes"),
    "serve": ("coldstart.commands.serve:main", "serve an index over HTTP"),
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
        "Multimodal cold-start representations: encoders, warm-started ranker, FAISS index.",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `coldstart <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"coldstart: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, func_name = COMMANDS[name][0].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    code = func(rest)
    return int(code or 0)


if __name__ == "__main__":
    raise SystemExit(main())
