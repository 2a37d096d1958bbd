"""Small fixtures for ranker tests: a synthetic split with class-revealing content."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def syn_data():
    from coldstart.ranker.lit import synthetic_ranker_data

    return synthetic_ranker_data(n_items=300, n_users=120, seed=0)
