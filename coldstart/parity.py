"""Offline vs served: the Recall@K of a ranker measured from a live server's HTTP answers,
next to the offline evaluation's figure for the same vectors (benchmarks/serving_parity.py and
tests/coldstart/test_ranker_serving.py).

Protocol (the offline one, ranker.metrics): for every test user with a held-out positive in
the segment, rank the segment's items with the user's known positives masked (train, val,
cold_val: the server's `exclude_seen`, from the artifact's seen.parquet), Recall@K =
expected hits in the top K / positives. Segment "cold" = the server's cold store, which holds
exactly the uploaded cold_test items; "warm" = its trained items.

Ties: the offline metric is the exact expectation over random tie orders (a tie group of g
candidates holding t positives straddling the cut counts t/g per position). The server returns
its list with unrounded scores, and the served figure applies the SAME rule (ranker.metrics.
expected_hits) to the returned scores; when the tie group at position K may run past the
returned list, the list is fetched again, longer, until it is complete. So no tie-breaking
convention has to agree between the two sides.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote

import numpy as np

from coldstart.ranker.data import RankerData
from coldstart.ranker.metrics import expected_hits, ranking_metrics

K = 20


def upload_items(
    client: Any, ids: Sequence[Any], texts: Sequence[str], token: str | None = None
) -> list[int]:
    """POST each item's text (content only) to /v1/ranker/items; the acknowledged lsns."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    lsns = []
    for item_id, text in zip(ids, texts):
        r = client.post(
            "/v1/ranker/items", data={"id": str(item_id), "text": text}, headers=headers
        )
        if r.status_code != 200:
            raise RuntimeError(f"upload of {item_id!r}: {r.status_code} {r.text[:300]}")
        lsns.append(int(r.json()["lsn"]))
    return lsns


def served_hits(
    client: Any, user_id: Any, targets: set[Any], segment: str, k: int, max_k: int = 1000
) -> np.ndarray:
    """(k',) expected hits of the served ranking's top positions (k' <= k, see the module
    docstring for ties); fetches 2k first and more only when a tie group reaches the end."""
    fetch = min(2 * k, max_k)
    while True:
        r = client.get(
            f"/v1/users/{quote(str(user_id), safe='')}/recommendations",
            params={"k": fetch, "exclude_seen": "true", "segment": segment},
        )
        if r.status_code != 200:
            raise RuntimeError(f"recommendations for {user_id!r}: {r.status_code} {r.text[:300]}")
        body = r.json()
        scores = np.asarray(body["scores"], np.float64)
        complete = len(scores) < fetch or len(scores) <= k or scores[k - 1] != scores[-1]
        if complete or fetch >= max_k:
            break
        fetch = min(fetch * 4, max_k)
    is_target = np.asarray([i in targets for i in body["ids"]], bool)
    return expected_hits(scores, is_target, k)


def served_recall(
    client: Any, data: RankerData, segment: str, k: int = K, part: str = "test"
) -> tuple[float, int]:
    """(mean Recall@k over the task's users, users) from the server's answers."""
    task = data.task(segment, part)
    kmax = min(k, len(task.candidates))
    total = 0.0
    for user, targets in zip(task.users, task.targets):
        ids = {_py(i) for i in data.item_ids[targets]}
        hits = served_hits(client, _py(data.user_ids[user]), ids, segment, kmax)
        total += float(hits[:kmax].sum()) / len(targets)
    n = len(task.users)
    return (total / n if n else float("nan")), n


def parity_rows(
    client: Any,
    data: RankerData,
    items: np.ndarray,
    users: np.ndarray,
    segments: Iterable[str] = ("cold", "warm"),
    k: int = K,
) -> list[dict[str, Any]]:
    """One row per segment: offline Recall@k of (items (I, D), users (U, D)) on the test part
    and the served figure from `client` (a live server over the same method)."""

    def score(u: np.ndarray, c: np.ndarray) -> np.ndarray:
        return users[u] @ items[c].T

    rows = []
    for segment in segments:
        offline = ranking_metrics(score, data.task(segment, "test"), (k,))[f"recall@{k}"]
        served, n = served_recall(client, data, segment, k)
        rows.append(
            {
                "segment": segment,
                f"offline_recall_at_{k}": round(float(offline), 6),
                f"served_recall_at_{k}": round(float(served), 6),
                "abs_diff": float(abs(offline - served)),
                "users": n,
            }
        )
    return rows


def _py(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
