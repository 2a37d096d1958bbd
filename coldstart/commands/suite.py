"""`coldstart suite --config configs/suites/<name>.yaml`: experiments x seeds x variants.

Runs every experiment of the suite at each of its split seeds and each variant (through the
cached experiment pipeline), then writes suite.json and suite.md (mean ± std per data set and
method, and whether the target method reaches the best baseline on cold and warm Recall@20).
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str]) -> int:
    from coldstart.commands.experiment import add_set_option, offline_environment

    parser = argparse.ArgumentParser(
        prog="coldstart suite",
        description=(
            "Run a suite of experiments (data sets x split seeds x variants) and tabulate "
            "mean ± std. `part: val` in the suite chooses defaults (sweeps), `part: test` "
            "reports. Stages are cached, so a rerun only computes what changed."
        ),
    )
    parser.add_argument("--config", required=True, help="configs/suites/<name>.yaml")
    add_set_option(parser, "override for every experiment, e.g. --set ranker.params.epochs=2")
    parser.add_argument(
        "--out", default=None, help="where suite.json and suite.md go (default: output_dir)"
    )
    parser.add_argument(
        "--part",
        choices=("val", "test"),
        default=None,
        help="score this part instead of the suite's own (the same rankers: only the "
        "evaluation reruns), e.g. a val sweep reported on test",
    )
    parser.add_argument(
        "--publish",
        default=None,
        metavar="FILE",
        help="also copy suite.md to FILE (e.g. docs/quality.md)",
    )
    args = parser.parse_args(argv)
    from coldstart.experiment.suite import load_suite, run_suite, write_suite

    offline_environment()

    suite = load_suite(args.config, args.set)
    if args.part:
        suite.part = args.part

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    result = run_suite(suite, log=log)
    json_path, md_path = write_suite(result, args.out or suite.output_dir)
    if args.publish:
        import shutil

        os.makedirs(os.path.dirname(os.path.abspath(args.publish)), exist_ok=True)
        shutil.copyfile(md_path, args.publish)
        print(f"published: {args.publish}")
    print(md_path.read_text())
    print(json_path, flush=True)
    return 0
