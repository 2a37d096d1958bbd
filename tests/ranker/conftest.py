"""Small fixtures for ranker tests: a synthetic split with class-revealing content."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def syn_data():
    from coldstart.ranker.lit import synthetic_ranker_data

    return synthetic_ranker_data(n_items=300, n_users=120, seed=0)


DIST_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK")


@pytest.fixture(autouse=True)
def no_leaked_process_group():
    """A test that runs a strategy in this process (a 1-process TorchRec group on a free port)
    and fails before its teardown leaves the group open and MASTER_PORT in os.environ: every
    later multi-process test would inherit that port while this process still listens on it
    (EADDRINUSE). Close the group and restore those variables after each test."""
    import os

    before = {key: os.environ.get(key) for key in DIST_ENV}
    yield
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
