"""index.recommend over real stores of every backend (FAISS, Milvus Lite), no ranker needed:
recommendations past long exclude lists and search caps, and the warm-up rebuild at open
through the stores' listing (VectorStore.ids), including more items than one Milvus search
window and a third-party store without a listing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from coldstart.index import recommend as rec
from coldstart.index.backend import Unsupported, VectorStore
from coldstart.index.recommend import RankerService
from tests.index.test_backends import _param, make_store, reopen

D = 8


def _warmup(base: np.ndarray, user_sum: np.ndarray, n: np.ndarray) -> np.ndarray:
    return base + user_sum / (n[:, None] + 1.0)  # (N, D): any deterministic function will do


def _store(kind: str, root: Path, ids: list, vectors: np.ndarray) -> VectorStore:
    """An exact inner-product store of raw vectors, as the ranker's (ranker_serving)."""
    return make_store(kind, root, ids, vectors, normalize=False)


def _service(warm: VectorStore, cold: VectorStore, events: VectorStore | None = None) -> Any:
    users = np.random.default_rng(9).standard_normal((5, D)).astype(np.float32)
    return RankerService(
        warm=warm,
        cold=cold,
        user_vector=lambda u: users[u] if 0 <= u < len(users) else None,
        seen=lambda u: [],
        cold_item=None,
        content_dim=0,
        events=events,
        warmup=_warmup if events is not None else None,
    )


def _truth(ids: np.ndarray, vectors: np.ndarray, user: np.ndarray, skip: set, k: int) -> list:
    keep = np.asarray([i not in skip for i in ids.tolist()])
    scores = vectors[keep] @ user
    order = np.argsort(-scores, kind="stable")[:k]
    return ids[keep][order].tolist()


@pytest.mark.parametrize("kind", [_param("faiss-flat"), _param("milvus-flat")])
def test_recommend_past_long_exclude_lists_and_search_caps(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(4)
    warm_ids, cold_ids = np.arange(3000), np.arange(10_000, 10_500)
    warm_x = rng.standard_normal((3000, D)).astype(np.float32)
    cold_x = rng.standard_normal((500, D)).astype(np.float32)
    service = _service(
        _store(kind, tmp_path / "w", warm_ids.tolist(), warm_x),
        _store(kind, tmp_path / "c", cold_ids.tolist(), cold_x),
    )
    ids, x = np.concatenate([warm_ids, cold_ids]), np.concatenate([warm_x, cold_x])
    user = rng.standard_normal(D).astype(np.float32)
    ranked = _truth(ids, x, user, set(), len(ids))
    k = 20
    listed: list[int] = []  # listings: recommendations that searched past the cap
    monkeypatch.setattr(rec, "list_ids", lambda s, why: listed.append(1) or s.ids())
    # Excluded: nothing; a few of the top; the top 40 (more than cap - k); most of the store;
    # the top 25 plus 1,000 low-ranked items; ids no store holds and one of the wrong type.
    cases = [
        [],
        ranked[:10],
        ranked[:40],
        ranked[:2500],
        ranked[:25] + ranked[-1000:],
        [*ranked[:30], 99_999, -5, "not-an-int"],
    ]
    try:
        for cap in ("the store's own", 50):
            if cap == 50:
                for store in (service.warm, service.cold):
                    monkeypatch.setattr(store, "max_k", cap, raising=False)
                monkeypatch.setattr(rec, "MAX_FILTER_IDS", 700)  # several filter chunks
            for exclude in cases:
                got, scores, segments = service.recommend(user, k, exclude)
                want = _truth(ids, x, user, set(exclude), k)
                assert got == want, (cap, len(exclude))
                np.testing.assert_allclose(scores, x[np.searchsorted(ids, want)] @ user, rtol=1e-5)
                assert segments == ["cold" if i >= 10_000 else "warm" for i in got]
            assert len(listed) == (0 if cap != 50 else 3)  # the top 40 (warm), 2500 (both)
            # k beyond the cap, one segment: still the exact top k
            got, _, _ = service.recommend(user, 120, ranked[:10], "warm")
            assert got == _truth(warm_ids, warm_x, user, set(ranked[:10]), 120)
    finally:
        service.close()


@pytest.mark.parametrize("kind", [_param("faiss-flat"), _param("milvus-flat")])
def test_warmup_state_is_rebuilt_after_a_restart(kind: str, tmp_path: Path) -> None:
    """A crash between the state write and the served vector's (simulated), then a restart:
    the reopened service rewrites exactly the stale item, found through events.ids()."""
    rng = np.random.default_rng(5)
    cold_x = rng.standard_normal((40, D)).astype(np.float32)
    warm = _store(kind, tmp_path / "w", [0], cold_x[:1])
    cold = _store(kind, tmp_path / "c", list(range(100, 140)), cold_x)
    events = _store(kind, tmp_path / "e", [], np.zeros((0, 2 * D + 1), np.float32))
    service = _service(warm, cold, events)
    got = service.record_events([(0, 100, 1.0), (1, 100, 2.0), (2, 101, 1.0), (3, 0, 1.0)])
    assert (got["applied"], got["ignored"]) == (3, 1)
    moved = service.cold.get([100, 101])
    assert sorted(service.events.ids()) == [100, 101]
    service.cold.upsert([100], cold_x[:1])  # the crash: state written, served vector not
    service.delete_item(101)  # a deleted item leaves no state behind
    assert service.events.ids() == [100]
    stores = [reopen(s) for s in (service.warm, service.cold, service.events)]
    again = _service(*stores)
    try:
        assert again.rebuild_warmup() == 1
        np.testing.assert_array_equal(again.cold.get([100])[0], moved[0])
        assert again.rebuild_warmup() == 0
    finally:
        again.close()


@pytest.mark.parametrize("kind", [_param("faiss-flat"), _param("milvus-flat")])
def test_rebuild_lists_more_warmed_items_than_one_milvus_search(kind: str, tmp_path: Path):
    n, d = 16_500, 2  # past Milvus' 16,384 search window (the old k = count search)
    rng = np.random.default_rng(6)
    base = rng.standard_normal((n, d)).astype(np.float32)
    state = np.concatenate([base, rng.standard_normal((n, d)), np.ones((n, 1))], axis=1)
    state = state.astype(np.float32)
    ids = list(range(n))
    warm = _store(kind, tmp_path / "w", [-1], base[:1])
    events = _store(kind, tmp_path / "e", ids, state)
    cold = _store(kind, tmp_path / "c", ids, base)  # every served vector stale
    service = _service(warm, cold, events)
    service.warmup = _warmup
    try:
        assert service.rebuild_warmup(batch=7_000) == n
        want = _warmup(state[:, :d], state[:, d : 2 * d], state[:, 2 * d])
        np.testing.assert_array_equal(service.cold.get([0, n // 2, n - 1]), want[[0, n // 2, -1]])
        assert service.rebuild_warmup() == 0
    finally:
        service.close()


class _NoListing:
    """A third-party store written before VectorStore.ids existed (everything else
    delegated)."""

    def __init__(self, inner: VectorStore) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name == "ids":
            raise AttributeError(name)
        return getattr(self._inner, name)


def test_a_store_without_a_listing_serves_and_fails_clearly_where_one_is_needed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from coldstart.index.api import Contract
    from coldstart.index.config import ServerConfig
    from coldstart.index.server import create_app

    x = np.random.default_rng(7).standard_normal((30, D)).astype(np.float32)
    warm = _store("faiss-flat", tmp_path / "w", list(range(20)), x[:20])
    cold = _store("faiss-flat", tmp_path / "c", list(range(100, 110)), x[20:])
    events = _store("faiss-flat", tmp_path / "e", [], np.zeros((0, 2 * D + 1), np.float32))
    service = _service(_NoListing(warm), _NoListing(cold), _NoListing(events))
    try:
        assert service.rebuild_warmup() == 0  # no state: no listing needed
        assert service.record_events([(0, 100, 1.0)])["applied"] == 1
        assert len(service.recommend(x[0], 5, exclude=[1, 2, 3])[0]) == 5
        with pytest.raises(Unsupported, match=r"has no ids\(\) listing.*rebuild_warmup"):
            service.rebuild_warmup()
        # Such a store is still a store to the server: its schema gives the API contract.
        app = create_app(_NoListing(warm), ServerConfig(insecure_writes=True))
        assert app.state.contract == Contract.from_schema(warm.schema)
        # A capped store whose whole capped answer is excluded needs the listing: a 501 that
        # names it, over HTTP (user 0 has seen every warm item).
        monkeypatch.setattr(warm, "max_k", 5, raising=False)
        service.seen = lambda u: list(range(20))
        client = TestClient(create_app(None, ServerConfig(), ranker=service))
        url = "/v1/users/0/recommendations?k=3&segment=warm"
        r = client.get(url + "&exclude_seen=true")
        assert r.status_code == 501 and "ids()" in r.json()["detail"], r.text
        assert (
            client.get(url + "&exclude_seen=false").json()["ids"]
            == service.recommend(service.user_vector(0), 3, segment="warm")[0]
        )
    finally:
        service.close()
