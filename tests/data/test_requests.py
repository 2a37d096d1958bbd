"""Request grouping: time windows, size cap, existing ids kept, against a brute-force reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from coldstart.data.movielens import load_movielens
from coldstart.data.requests import group_requests, request_sizes, request_stats
from coldstart.data.schema import ITEM_ID, REQUEST_ID, TIMESTAMP, USER_ID


def reference(df: pd.DataFrame, window: int, cap: int) -> list[frozenset[int]]:
    """Requests as sets of row positions, by a plain loop over each user's events in time order."""
    groups: list[frozenset[int]] = []
    ordered = df.reset_index(drop=True).sort_values([USER_ID, TIMESTAMP], kind="stable")
    current: list[int] = []
    last_user, last_time = None, None
    for pos, row in zip(ordered.index, ordered.itertuples(index=False), strict=True):
        user, time = getattr(row, USER_ID), getattr(row, TIMESTAMP)
        if current and (user != last_user or time - last_time > window or len(current) == cap):
            groups.append(frozenset(current))
            current = []
        current.append(pos)
        last_user, last_time = user, time
    if current:
        groups.append(frozenset(current))
    return groups


def as_sets(df: pd.DataFrame) -> set[frozenset[int]]:
    ids = df[REQUEST_ID].to_numpy()
    return {frozenset(np.flatnonzero(ids == r).tolist()) for r in np.unique(ids)}


def test_window_and_cap_by_hand():
    times = [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 2000, 2005]
    df = pd.DataFrame({USER_ID: 1, ITEM_ID: range(12), TIMESTAMP: times})
    other = pd.DataFrame({USER_ID: 2, ITEM_ID: range(3), TIMESTAMP: [5, 15, 25]})
    log = pd.concat([df, other], ignore_index=True).sample(frac=1.0, random_state=0)
    out = group_requests(log, window_seconds=60, max_size=8)
    assert list(out.index) == list(log.index)  # row order kept
    sizes = sorted(request_sizes(out).tolist())
    assert sizes == [2, 2, 3, 8]  # user 1: 8 + 2 (cap), then 2 after the gap; user 2: 3
    by_item = out[out[USER_ID] == 1].set_index(ITEM_ID)[REQUEST_ID]
    assert by_item[0] == by_item[7] != by_item[8] == by_item[9] != by_item[10] == by_item[11]
    assert out[REQUEST_ID].dtype == np.int64


@pytest.mark.parametrize("window,cap", [(0, 8), (30, 3), (100, 8), (10_000, 5)])
def test_matches_reference(window, cap):
    rng = np.random.default_rng(window + cap)
    n = 600
    log = pd.DataFrame(
        {
            USER_ID: rng.integers(0, 15, n),
            ITEM_ID: rng.integers(0, 50, n),
            TIMESTAMP: rng.integers(0, 3000, n),
        }
    )
    out = group_requests(log, window_seconds=window, max_size=cap)
    assert as_sets(out) == set(reference(log, window, cap))
    assert request_sizes(out).max() <= cap
    assert out.groupby(REQUEST_ID)[USER_ID].nunique().max() == 1


def test_existing_ids_kept_and_missing_filled():
    log = pd.DataFrame(
        {
            USER_ID: [1, 1, 1, 2, 2, 3],
            ITEM_ID: [1, 2, 3, 4, 5, 6],
            TIMESTAMP: [0, 1, 2, 3, 4, 5],
            REQUEST_ID: [7, 7, 9, None, None, 8],
        }
    )
    out = group_requests(log)
    assert out[REQUEST_ID].tolist()[:3] == [7, 7, 9] and out[REQUEST_ID].iloc[5] == 8
    assert out[REQUEST_ID].iloc[3] == out[REQUEST_ID].iloc[4] == 10  # after the largest id
    strings = log.assign(**{REQUEST_ID: ["a", "a", "b", "c", "c", "d"]})
    out = group_requests(strings)
    assert sorted(request_sizes(out).tolist()) == [1, 1, 2, 2]
    ignored = group_requests(log, keep_existing=False, max_size=2)
    assert sorted(request_sizes(ignored).tolist()) == [1, 1, 2, 2]


def test_movielens_requests():
    inter = load_movielens().interactions
    out = group_requests(inter)
    stats = request_stats(out)
    assert stats["rows"] == len(inter) and stats["max_size"] == 8
    assert stats["multi_user_requests"] == 0
    assert 3.0 < stats["mean_size"] <= 8.0  # users rate in bursts: requests hold several items
    with pytest.raises(ValueError):
        group_requests(inter, max_size=0)
