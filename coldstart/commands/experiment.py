"""`coldstart experiment --config FILE` and `coldstart demo`: the whole cycle in one command.

Heavy imports (torch, transformers, faiss, matplotlib) happen inside the stages, so `--help`
stays fast. The last line on stdout is always the run directory.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from coldstart.data.resources import package_path

DEMO_CONFIG = package_path("coldstart.configs", "experiments", "movielens.yaml")


def _parser(prog: str, demo: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Run split -> embed -> index -> ranker -> evaluate -> report from one YAML config. "
            "Each stage is cached by (its config section + upstream artifact hashes): rerunning "
            "with only the ranker section changed retrains only the ranker. The last stdout line "
            "is the run directory (report.md, metrics.json, PNG plots)."
        ),
    )
    if not demo:
        parser.add_argument("--config", required=True, help="configs/experiments/<name>.yaml")
    else:
        parser.add_argument(
            "--config", default=str(DEMO_CONFIG), help=f"experiment config (default {DEMO_CONFIG})"
        )
    parser.add_argument(
        "--posters",
        default=None,
        help="webdataset shard pattern of item images, e.g. "
        "'../shared/data/movielens-small-posters/posters-{000..003}.tar': image content joins text",
    )
    parser.add_argument("--output-dir", default=None, help="override output_dir of the config")
    add_set_option(parser, "override a config key, e.g. --set ranker.params.epochs=3 (repeatable)")
    parser.add_argument(
        "--force",
        action="append",
        default=[],
        metavar="STAGE",
        help="rebuild a stage even when its cached artifact matches (repeatable)",
    )
    parser.add_argument(
        "--publish",
        default=None,
        metavar="DIR",
        help="also copy report.md and the PNG plots into DIR as <name>_* (e.g. docs/ for the "
        "README; refused for runs with posters)",
    )
    parser.add_argument(
        "--no-analysis",
        action="store_true",
        help="skip the stability and dims analyses (core stages only)",
    )
    return parser


def add_set_option(parser: argparse.ArgumentParser, help: str) -> None:
    """The repeatable `--set KEY=VALUE` config override (experiment, demo, suite)."""
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=help)


def offline_environment() -> None:
    """No model hub at run time, and no tokenizer threads fighting the embedding workers."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _run(argv: list[str], prog: str, demo: bool) -> int:
    args = _parser(prog, demo).parse_args(argv)
    offline_environment()
    from coldstart.experiment import load_config, run_experiment
    from coldstart.report import summary_table

    overrides = list(args.set)
    if args.posters:
        overrides.append(f"data.posters={args.posters}")
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    config = load_config(args.config, overrides)
    started = time.perf_counter()

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    result = run_experiment(
        config, log=log, force=set(args.force), only=set() if args.no_analysis else None
    )
    elapsed = time.perf_counter() - started
    print(summary_table(result.metrics["methods"]))
    print()
    statuses = ", ".join(
        f"{name}: {result.stage_status(name)}" for name in result.metrics["stages"]
    )
    print(f"stages ({elapsed:.1f} s): {statuses}")
    print(f"report: {result.run_dir / 'report.md'}")
    if args.publish:
        from coldstart.report import publish

        written = publish(result.run_dir, args.publish, config.name)
        print(f"published: {', '.join(str(p) for p in written)}")
    print(result.run_dir, flush=True)
    return 0


def main(argv: list[str]) -> int:
    """`coldstart experiment --config configs/experiments/<name>.yaml`."""
    return _run(argv, "coldstart experiment", demo=False)


def demo(argv: list[str]) -> int:
    """`coldstart demo [--posters PATTERN]`: the MovieLens experiment on the embedded data."""
    return _run(argv, "coldstart demo", demo=True)
