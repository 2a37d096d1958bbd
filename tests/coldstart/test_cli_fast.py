"""`coldstart --help` and `coldstart experiment --help` are fast and import no torch."""

from __future__ import annotations

import subprocess
import sys
import time

PROBE = """
import sys
from coldstart.cli import main
code = main({argv!r})
heavy = sorted(m for m in ("torch", "transformers", "faiss", "open_clip", "lightning", "matplotlib") if m in sys.modules)
print("HEAVY=" + ",".join(heavy))
"""


def _probe(argv: list[str]) -> tuple[str, float]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True, text=True, timeout=60
    )
    return proc.stdout + proc.stderr, time.perf_counter() - start


def test_top_level_help_is_fast_and_light():
    out, seconds = _probe(["--help"])
    assert "experiment" in out and "demo" in out
    assert "HEAVY=\n" in out, out
    assert seconds < 10, seconds


def test_experiment_help_imports_no_torch():
    # argparse exits with SystemExit(0) after --help; catch it inside the probe.
    probe = PROBE.replace("code = main", "try:\n    code = main").replace(
        "\nheavy", "\nexcept SystemExit:\n    pass\nheavy"
    )
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", probe.format(argv=["experiment", "--help"])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = proc.stdout + proc.stderr
    assert "--config" in out and "--posters" in out
    assert "HEAVY=\n" in out, out
    assert time.perf_counter() - start < 10
