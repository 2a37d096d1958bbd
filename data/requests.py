"""Request grouping: one user, several items served together.

A ranker request shows k items (5-8 in practice) to one user, so the user side (features,
history) can be computed once per request instead of once per row. Logs that record a request id
keep it. Logs without one (MovieLens) are grouped per user by time: consecutive events of a user
at most `window_seconds` apart form a session, and a session is cut, in time order, into requests
of at most `max_size` events. The rule is vectorized (no Python loop over rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from coldstart.data.schema import ITEM_ID, REQUEST_ID, TIMESTAMP, USER_ID


@dataclass
class RequestConfig:
    """How to group a log without request ids."""

    window_seconds: int = 60  # max gap between consecutive events of one request
    max_size: int = 8  # cap on events per request (a session longer than this is cut)
    keep_existing: bool = True  # keep request_id values already present in the log

    def validate(self) -> None:
        if self.max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {self.max_size}")
        if self.window_seconds < 0:
            raise ValueError(f"window_seconds must be >= 0, got {self.window_seconds}")


def _time_groups(df: pd.DataFrame, window_seconds: int, max_size: int) -> np.ndarray:
    """(N,) int64 request number per row of `df` (0..R-1), numbered in (user, time) order."""
    n = len(df)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    sort_keys = [USER_ID, TIMESTAMP] if TIMESTAMP in df.columns else [USER_ID]
    # Positions in (user, time) order; stable, so ties keep their log order.
    order = np.asarray(df.reset_index(drop=True).sort_values(sort_keys, kind="stable").index)
    users = df[USER_ID].to_numpy()[order]
    new_user = np.ones(n, dtype=bool)
    new_user[1:] = users[1:] != users[:-1]
    new_session = new_user.copy()
    if TIMESTAMP in df.columns:
        times = df[TIMESTAMP].to_numpy().astype(np.int64)[order]
        gap = np.zeros(n, dtype=np.int64)
        gap[1:] = times[1:] - times[:-1]
        new_session |= gap > window_seconds
    session = np.cumsum(new_session) - 1  # (N,) session number in sorted order
    # Position inside the session; a new request every max_size events.
    starts = np.flatnonzero(new_session)
    position = np.arange(n) - starts[session]
    new_request = new_session | (position % max_size == 0)
    request_sorted = np.cumsum(new_request) - 1
    request = np.empty(n, dtype=np.int64)
    request[order] = request_sorted
    return request


def group_requests(
    interactions: pd.DataFrame,
    window_seconds: int = 60,
    max_size: int = 8,
    keep_existing: bool = True,
) -> pd.DataFrame:
    """Return a copy of `interactions` with REQUEST_ID (int64) filled on every row.

    Rows that already carry a request id keep it (non-integer ids are mapped to integers in
    order of first appearance) when `keep_existing`; the others are grouped per user by time
    (see the module docstring) and numbered after the largest existing id. Row order is kept.
    """
    RequestConfig(window_seconds, max_size, keep_existing).validate()
    out = interactions.copy()
    n = len(out)
    request = np.full(n, -1, dtype=np.int64)
    has = np.zeros(n, dtype=bool)
    if keep_existing and REQUEST_ID in out.columns:
        column = out[REQUEST_ID]
        has = column.notna().to_numpy()
        if has.any():
            values = column[has]
            numeric = pd.to_numeric(values, errors="coerce")
            if numeric.notna().all() and (numeric == numeric.round()).all():
                request[has] = numeric.to_numpy().astype(np.int64)
            else:
                codes, _ = pd.factorize(values.astype(str), sort=False)
                request[has] = codes.astype(np.int64)
    missing = ~has
    if missing.any():
        offset = int(request[has].max()) + 1 if has.any() else 0
        rest = out.loc[missing, [c for c in (USER_ID, TIMESTAMP) if c in out.columns]]
        request[missing] = offset + _time_groups(rest, window_seconds, max_size)
    out[REQUEST_ID] = request
    return out


def request_sizes(interactions: pd.DataFrame) -> np.ndarray:
    """(R,) number of rows per request id."""
    return interactions.groupby(REQUEST_ID, sort=True).size().to_numpy()


def request_stats(interactions: pd.DataFrame) -> dict[str, Any]:
    """Counts for a report: requests, rows, mean / max size, size histogram, users per request."""
    sizes = request_sizes(interactions)
    users_per_request = interactions.groupby(REQUEST_ID)[USER_ID].nunique()
    histogram = np.bincount(sizes) if len(sizes) else np.zeros(1, dtype=np.int64)
    return {
        "rows": int(len(interactions)),
        "requests": int(len(sizes)),
        "mean_size": float(sizes.mean()) if len(sizes) else 0.0,
        "max_size": int(sizes.max()) if len(sizes) else 0,
        "size_histogram": {int(k): int(v) for k, v in enumerate(histogram) if v},
        "multi_user_requests": int((users_per_request > 1).sum()),
        "distinct_items_per_request": float(
            interactions.groupby(REQUEST_ID)[ITEM_ID].nunique().mean()
        )
        if len(sizes)
        else 0.0,
    }
