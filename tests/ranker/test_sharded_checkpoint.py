"""Issue 20, part 1: sharded checkpoints with torch.distributed.checkpoint (ranker.sharding).

Every rank writes only its shards (one .distcp file per rank); loading reshards: 2 processes to
1, 1 to 2, and 2 to 2 under a different plan, tables and TorchRec's fused row-wise Adagrad
state alike; `read_whole` reads whole tables in one process with no process group. Real gloo
processes (run_distributed); per-rank code in tests/ranker/checkpoint_checks.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from coldstart.ranker.sharding import read_whole, run_distributed
from tests.ranker import checkpoint_checks

PLAN_A = {"item_id": "row_wise", "user_id": "column_wise", "user_history": "table_wise"}
PLAN_B = {"item_id": "column_wise", "user_id": "row_wise", "user_history": "column_wise"}


def _read_whole_equals_reference(root: Path) -> None:
    whole = read_whole(root / "ck")
    reference = torch.load(root / "reference.pt", weights_only=False)["tables"]
    assert set(whole) == set(reference) and len(reference) == 4  # the 4 tables
    for key, value in reference.items():
        assert torch.equal(whole[key], value), key


@pytest.mark.slow
def test_two_processes_reshard_to_one_and_to_another_plan(tmp_path: Path) -> None:
    run_distributed(checkpoint_checks.save, 2, args=(str(tmp_path), PLAN_A), timeout=240)
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [
        ".metadata",
        "__0_0.distcp",
        "__1_0.distcp",
    ]
    _read_whole_equals_reference(tmp_path)
    run_distributed(checkpoint_checks.load, 1, args=(str(tmp_path), {}), timeout=240)
    run_distributed(checkpoint_checks.load, 2, args=(str(tmp_path), PLAN_B), timeout=240)


@pytest.mark.slow
def test_one_process_reshards_to_two(tmp_path: Path) -> None:
    run_distributed(checkpoint_checks.save, 1, args=(str(tmp_path), {}), timeout=240)
    _read_whole_equals_reference(tmp_path)
    run_distributed(checkpoint_checks.load, 2, args=(str(tmp_path), PLAN_A), timeout=240)
