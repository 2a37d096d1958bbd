"""benchmarks/index.py runs end to end at a tiny size and prints what the README table needs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.index.conftest import REPO_ROOT
from tests.index.test_backends import needs_milvus

KEYS = {"bench", "backend", "factory", "n", "recall_at_10", "qps", "build_s", "peak_rss_mb"}


@needs_milvus
@pytest.mark.slow
def test_index_benchmark_prints_both_backends_side_by_side() -> None:
    cmd = [sys.executable, str(REPO_ROOT / "benchmarks" / "index.py"), "--n", "3000"]
    cmd += ["--milvus-n", "3000", "--queries", "60", "--clusters", "8", "--single", "3"]
    cmd += ["--specs", "Flat", "IVF{nlist},Flat:nprobe=4", "--milvus-specs", "FLAT", "HNSW"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["backend"], r["factory"]) for r in rows] == [
        ("faiss", "Flat"),
        ("faiss", "IVF192,Flat"),
        ("milvus", "FLAT"),
        ("milvus", "HNSW"),
    ]
    for row in rows:
        assert set(row) >= KEYS and row["bench"] == "index" and row["n"] == 3000
        assert row["qps"] > 0 and 0 < row["peak_rss_mb"] < 8000 and 0 <= row["recall_at_10"] <= 1
    assert rows[0]["recall_at_10"] == 1.0 and rows[2]["recall_at_10"] == 1.0  # exact indexes
    assert rows[1]["speedup_vs_flat"] == round(rows[1]["qps"] / rows[0]["qps"], 2)
