"""TorchRec sharding over 2 real gloo processes (ranker.sharding).

Each check runs in 2 fresh processes with a process group on a free loopback port and a time
limit (tests/ranker/sharded_checks.py holds the per-rank code).
"""

from __future__ import annotations

import pytest

from coldstart.ranker.sharding import run_distributed
from tests.ranker import sharded_checks


@pytest.mark.slow
def test_sharded_ranker_over_two_processes() -> None:
    """sharded_checks.dedup_equals_plain_and_unsharded: scores, loss and gradients of the
    sharded ranker (row-, column- and table-wise tables) equal the unsharded torch model's, with
    and without request dedup (variable-batch user lookups), and dedup moves about k times fewer
    user-feature bytes; sharded_checks.fused_state_survives_a_checkpoint: whole tables and
    row-wise Adagrad state gathered from 2 processes resume training exactly."""
    run_distributed(sharded_checks.all_checks, 2, timeout=240)
