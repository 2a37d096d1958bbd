"""Recommendations in a trained ranker's space, over vector stores: what the HTTP routes of
index.routes_recs serve. This module knows no ranker: the app layer (coldstart.ranker_serving)
hands it stores, user vectors and the method's cold-item function as plain callables.

score(user, item) = user_vector . item_vector (inner product, unnormalized), so a store with
metric "ip", normalize off and an exact factory ("Flat") answers exactly the offline ranking.

Two stores, one per segment, so either segment is searched without an id filter:
  warm: the items the method trained on (their vectors from the artifact)
  cold: items served through the cold-item path: uploads (and the artifact's non-warm items
        when loaded); an upload is acknowledged once the store has it durably.
Warming up online (`record_events`, POST /v1/events): an engagement event on a cold item
updates that item's state in a third store, `events` (one row per item: [v0 (D), sum of the
engaging users' vectors (D), summed event weight n (1)], dimension 2D + 1), then the item's
served vector in the cold store becomes warmup(v0, sum, n) (the app layer's function, e.g.
ranker.warmup.warm_vectors). Both writes are durable before the answer; a crash between them
is repaired when the service opens (`rebuild_warmup` recomputes every item from its state).
An upload (re-)sets an item's state; a delete removes it.

Ties: results are ordered by score, then warm before cold, then by the store's order; scores
are returned unrounded (float32 values) so a client can apply its own tie rule.

Excluded ids (a user's seen items, a history) never come back and never cost a result: a
store is asked for k plus the excluded items it holds. A store whose searches are capped
(Milvus: 16,384) answers a longer exclude list with one capped search when enough of it
survives, else by searching the rest of the store (its ids minus the excluded, in id filters of
MAX_FILTER_IDS): exact, and as slow as the store is big (only for a history that fills more
than the cap's top minus k).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coldstart.data.schema import media_codes
from coldstart.index.backend import (
    MAX_FILTER_IDS,
    InvalidInput,
    ItemId,
    VectorStore,
    list_ids,
    search_cap,
)

SEGMENTS = ("all", "warm", "cold")


class UnknownUser(KeyError):
    """A user id the ranker has no vector for (404)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown user"


class Conflict(ValueError):
    """A write that contradicts what is stored (409), e.g. uploading a trained item's id."""


def top_excluding(
    store: VectorStore, query: np.ndarray, k: int, skip: set[ItemId]
) -> list[tuple[ItemId, float]]:
    """The store's best items for one query (1, D), none of them in `skip`: (id, score) pairs,
    best first, at least the top k of what the store would rank without `skip` (fewer only
    when the store holds fewer, or an approximate index finds fewer).

    One search of k + (excluded items the store holds), when that is within the store's
    search cap; beyond it, one capped search, and when excluded items fill more than cap - k
    of it, filtered searches over the rest of the store (exact; see the module docstring).
    """
    n = store.count()
    if n == 0:
        return []
    cap = search_cap(store)
    want = min(n, k + len(skip))
    if skip and cap is not None and want > cap:
        # Only excluded items this store holds can take a place in its answer.
        ids = [i for i in skip if _valid_id(store, i)]  # others cannot be stored
        held = [i for i, there in zip(ids, store.contains(ids)) if there]
        want = min(n, k + len(held))
    ask = want if cap is None else min(want, cap)
    result = store.search(query, ask)
    hits = [(i, float(s)) for i, s in zip(result.ids[0], result.scores[0]) if i not in skip]
    if ask == want or len(hits) >= k:
        return hits
    # The capped search was mostly excluded items: search the rest of the store. Its best k
    # lie among the top k of some chunk of it.
    rest = [i for i in list_ids(store, "recommending past a long exclude list") if i not in skip]
    found: list[tuple[float, int, int, ItemId]] = []
    assert cap is not None  # only a capped search stops short of `want`
    size = min(MAX_FILTER_IDS, cap)  # a chunk's whole top k fits in one search
    for c, start in enumerate(range(0, len(rest), size)):
        chunk = rest[start : start + size]
        part = store.search(query, min(k, len(chunk)), ids=chunk)
        found.extend(
            (-float(s), c, p, i) for p, (i, s) in enumerate(zip(part.ids[0], part.scores[0]))
        )
    found.sort(key=lambda t: t[:3])
    return [(t[3], -t[0]) for t in found[:k]]


def _valid_id(store: VectorStore, item_id: ItemId) -> bool:
    try:
        store.schema.normalize_id(item_id)
    except InvalidInput:
        return False
    return True


@dataclass
class RankerService:
    """A ranker served from vector stores.

    warm / cold: stores of (D,) item vectors (see the module docstring).
    user_vector(user_id) -> (D,) float32, or None for a user the model never saw.
    seen(user_id) -> the item ids the user is known to have engaged with (masked on request).
    cold_item(content (N, C)) -> (N, D): the method's cold-item path; None: it has none.
    history_user(item_ids) -> (D,): a new user's vector from the ids of a history (oldest
        first), or None when the method cannot compute one.
    user_id_type: "int" or "str" (how a path parameter is read).
    info: what /v1/ranker reports (method, dims, artifact).
    events: the warm-up state store (dimension 2 D + 1, see the module docstring), or None.
    warmup(base (N, D), user_sum (N, D), n (N,)) -> (N, D): served vectors from state.
    """

    warm: VectorStore
    cold: VectorStore
    user_vector: Callable[[ItemId], np.ndarray | None]
    seen: Callable[[ItemId], Sequence[ItemId]]
    cold_item: Callable[[np.ndarray], np.ndarray] | None
    content_dim: int
    history_user: Callable[[list[ItemId]], np.ndarray] | None = None
    user_id_type: str = "int"
    info: dict[str, Any] = field(default_factory=dict)
    events: VectorStore | None = None
    warmup: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None
    # The ids of the users the model knows, in a stable order (GET /v1/users); None: none listed.
    users: Callable[[], Sequence[ItemId]] | None = None
    # Events read-modify-write an item's state: one writer at a time.
    _events_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def dim(self) -> int:
        return int(self.warm.dim)

    def user_id(self, raw: str | int) -> ItemId:
        """A path or body user id in the ranker's id type; InvalidInput when it cannot be."""
        if self.user_id_type == "str":
            return str(raw)
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise InvalidInput(f"user ids are integers, got {str(raw)[:60]!r}") from None

    def vector_of_user(self, user_id: ItemId) -> np.ndarray:
        """(D,) vector of a known user; UnknownUser otherwise."""
        vector = self.user_vector(user_id)
        if vector is None:
            raise UnknownUser(f"unknown user {user_id!r}")
        return np.asarray(vector, np.float32)

    def history_vector(self, item_ids: Sequence[Any]) -> np.ndarray:
        """(D,) vector of a user the model never saw, from the items of their history.

        InvalidInput (422) on an empty history, ids no store holds (deleted or never added),
        or a method without a user path.
        """
        if self.history_user is None:
            raise InvalidInput(
                f"method {self.info.get('method')!r} has no user path over a history"
            )
        if not item_ids:
            raise InvalidInput("the history is empty: send at least one item id")
        ids = [self.warm.schema.normalize_id(i) for i in item_ids]
        warm, cold = self.warm.contains(ids), self.cold.contains(ids)
        missing = [i for i, w, c in zip(ids, warm, cold) if not (w or c)]
        if missing:
            raise InvalidInput(
                f"unknown (deleted or never added) item ids in the history: {missing[:20]}"
            )
        return np.asarray(self.history_user(ids), np.float32)

    def recommend(
        self, user: np.ndarray, k: int, exclude: Sequence[ItemId] = (), segment: str = "all"
    ) -> tuple[list[ItemId], list[float], list[str]]:
        """Top-k items for a (D,) user vector: (ids, scores, segment of each), best first.

        exclude: ids never returned (e.g. the user's seen items); segment: all | warm | cold.
        """
        if segment not in SEGMENTS:
            raise InvalidInput(f"segment must be one of {SEGMENTS}, got {segment!r}")
        query = np.asarray(user, np.float32).reshape(1, -1)
        if query.shape[1] != self.dim:
            raise InvalidInput(f"user vector has {query.shape[1]} values, items have {self.dim}")
        skip = set(exclude)
        found: list[tuple[float, int, int, ItemId, str]] = []
        for order, (name, store) in enumerate((("warm", self.warm), ("cold", self.cold))):
            if segment not in ("all", name):
                continue
            for pos, (i, s) in enumerate(top_excluding(store, query, k, skip)):
                found.append((-s, order, pos, i, name))
        found.sort(key=lambda t: t[:3])
        top = found[:k]
        return [t[3] for t in top], [-t[0] for t in top], [t[4] for t in top]

    def add_items(
        self, ids: Sequence[Any], content: np.ndarray, media: Sequence[str] | None = None
    ) -> int:
        """Serve new items from their (N, C) content through the cold-item path; returns the
        write's lsn once the cold store holds them durably. Conflict for a trained item's id.
        media: each item's media type (data.schema.MEDIA_TYPES names; None: "none"), read by
        a cold-item path that has the ranker's media-type feature (`reads_media`)."""
        if self.cold_item is None:
            raise InvalidInput(
                f"method {self.info.get('method')!r} has no cold-item path (no content -> "
                "vector function): new items cannot be served from content"
            )
        norm = [self.warm.schema.normalize_id(i) for i in ids]
        trained = [i for i, w in zip(norm, self.warm.contains(norm)) if w]
        if trained:
            raise Conflict(f"items {trained[:20]} are trained (warm) items; they are not uploads")
        x = np.asarray(content, np.float32).reshape(len(norm), -1)
        if x.shape[1] != self.content_dim:
            raise InvalidInput(
                f"content has {x.shape[1]} values, the method reads {self.content_dim}"
            )
        if getattr(self.cold_item, "reads_media", False):
            codes = media_codes(media if media is not None else ["none"] * len(norm))
            if len(codes) != len(norm):
                raise InvalidInput(f"{len(codes)} media types for {len(norm)} items")
            vectors = self.cold_item(x, codes)  # (N, D)
        else:
            vectors = self.cold_item(x)  # (N, D)
        if self.events is None:
            return self.cold.upsert(norm, vectors)
        with self._events_lock:  # new content: the item starts again from v0, no events
            self.events.delete(norm)
            return self.cold.upsert(norm, vectors)

    # ----------------------------------------------------------------- warming up online
    def record_events(self, events: Sequence[tuple[Any, Any, float]]) -> dict[str, Any]:
        """Apply engagement events (user id, item id, weight >= 0) to cold items; answers
        once the state and the served vectors are durable: {lsn, applied, ignored}.

        Events on trained (warm) items are ignored (they learn at the next retrain). Nothing
        is written when any event names an unknown user (UnknownUser) or an item no store
        holds, or has a bad weight (InvalidInput)."""
        if self.events is None or self.warmup is None:
            raise InvalidInput(f"method {self.info.get('method')!r} does not warm up online")
        users = [self.user_id(u) for u, _, _ in events]
        items = [self.warm.schema.normalize_id(i) for _, i, _ in events]
        weights = np.asarray([w for _, _, w in events], np.float64)
        if not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise InvalidInput("event values (weights) must be finite and >= 0")
        rows = [self.user_vector(u) for u in users]
        unknown = sorted({str(u) for u, r in zip(users, rows) if r is None})
        if unknown:
            raise UnknownUser(f"unknown users {unknown[:20]}")
        with self._events_lock:
            cold = self.cold.contains(items)
            warm = self.warm.contains(items)
            missing = sorted({str(i) for i, c, w in zip(items, cold, warm) if not (c or w)})
            if missing:
                raise InvalidInput(f"unknown (deleted or never added) items: {missing[:20]}")
            live = [j for j, c in enumerate(cold) if c and weights[j] > 0]
            if not live:
                return {"lsn": self.cold.lsn, "applied": 0, "ignored": len(events)}
            order = list(dict.fromkeys(items[j] for j in live))  # distinct, first-seen order
            pos = {i: r for r, i in enumerate(order)}
            base, user_sum, n = self._state(order)
            for j in live:
                r = pos[items[j]]
                user_sum[r] += weights[j] * np.asarray(rows[j], np.float64)
                n[r] += weights[j]
            d = self.dim
            state = np.concatenate([base, user_sum, n[:, None]], axis=1).astype(np.float32)
            self.events.upsert(order, state)  # durable first: a crash after it is rebuilt
            vectors = self.warmup(state[:, :d], state[:, d : 2 * d], state[:, 2 * d])
            lsn = self.cold.upsert(order, vectors)
        return {"lsn": int(lsn), "applied": len(live), "ignored": len(events) - len(live)}

    def _state(self, ids: list[ItemId]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(base (N, D), user_sum (N, D) float64, n (N,) float64) of cold items; an item
        without state starts from its served vector (its content-derived v0)."""
        assert self.events is not None
        d = self.dim
        base = np.zeros((len(ids), d), np.float32)
        user_sum = np.zeros((len(ids), d), np.float64)
        n = np.zeros(len(ids), np.float64)
        has = self.events.contains(ids)
        old = [i for i, h in zip(ids, has) if h]
        if old:
            state = self.events.get(old)  # (M, 2D + 1)
            rows = [r for r, h in enumerate(has) if h]
            base[rows], user_sum[rows], n[rows] = state[:, :d], state[:, d : 2 * d], state[:, 2 * d]
        new = [r for r, h in enumerate(has) if not h]
        if new:
            base[new] = self.cold.get([ids[r] for r in new])
        return base, user_sum, n

    def rebuild_warmup(self, batch: int = 10_000) -> int:
        """Recompute every warmed item's served vector from its stored state and rewrite
        those that differ (a crash between the two writes of `record_events`); returns how
        many were rewritten. Runs when the service opens, `batch` items at a time.
        Needs the events store's listing (VectorStore.ids; Unsupported without one)."""
        if self.events is None or self.warmup is None or self.events.count() == 0:
            return 0
        d, rewritten = self.dim, 0
        every = list_ids(self.events, "rebuilding warmed-up items at start (rebuild_warmup)")
        for start in range(0, len(every), batch):
            ids = every[start : start + batch]
            ids = [i for i, c in zip(ids, self.cold.contains(ids)) if c]
            if not ids:
                continue
            state = self.events.get(ids)  # (N, 2D + 1)
            want = self.warmup(state[:, :d], state[:, d : 2 * d], state[:, 2 * d])
            served = self.cold.get(ids)
            stale = [r for r, v in enumerate(served) if not np.array_equal(v, want[r])]
            if stale:
                self.cold.upsert([ids[r] for r in stale], want[stale])
            rewritten += len(stale)
        return rewritten

    def delete_item(self, item_id: Any) -> tuple[int, int]:
        """Remove an item from whichever store holds it: (removed, lsn)."""
        norm = self.warm.schema.normalize_id(item_id)
        if self.events is not None:
            with self._events_lock:
                self.events.delete([norm])
        removed, lsn = self.cold.delete([norm])
        if not removed:
            removed, lsn = self.warm.delete([norm])
        return removed, lsn

    def close(self) -> None:
        for store in (self.warm, self.cold, self.events):
            if store is not None:
                store.close()
