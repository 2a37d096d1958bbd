"""Recommendations in a trained ranker's space, over vector stores: what the HTTP routes of
index.routes_recs serve. This module knows no ranker: the app layer (coldstart.ranker_serving)
hands it stores, user vectors and the method's cold-item function as plain callables.

score(user, item) = user_vector . item_vector (inner product, unnormalized), so a store with
metric "ip", normalize off and an exact factory ("Flat") answers exactly the offline ranking.

Two stores, one per segment, so either segment is searched without an id filter:
  warm: the items the method trained on (their vectors from the artifact)
  cold: items served through the cold-item path: uploads (and the artifact's non-warm items
        when loaded); an upload is acknowledged once the store has it durably.
Ties: results are ordered by score, then warm before cold, then by the store's order; scores
are returned unrounded (float32 values) so a client can apply its own tie rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coldstart.index.backend import InvalidInput, ItemId, VectorStore

SEGMENTS = ("all", "warm", "cold")


class UnknownUser(KeyError):
    """A user id the ranker has no vector for (404)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown user"


class Conflict(ValueError):
    """A write that contradicts what is stored (409), e.g. uploading a trained item's id."""


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
            n = store.count()
            if n == 0:
                continue
            # Excluded ids may fill the top: ask for enough to drop them all and keep k.
            kk = min(n, k + len(skip))
            result = store.search(query, kk)
            for pos, (i, s) in enumerate(zip(result.ids[0], result.scores[0])):
                if i not in skip:
                    found.append((-float(s), order, pos, i, name))
        found.sort(key=lambda t: t[:3])
        top = found[:k]
        return [t[3] for t in top], [-t[0] for t in top], [t[4] for t in top]

    def add_items(self, ids: Sequence[Any], content: np.ndarray) -> int:
        """Serve new items from their (N, C) content through the cold-item path; returns the
        write's lsn once the cold store holds them durably. Conflict for a trained item's id."""
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
        vectors = self.cold_item(x)  # (N, D)
        return self.cold.upsert(norm, vectors)

    def delete_item(self, item_id: Any) -> tuple[int, int]:
        """Remove an item from whichever store holds it: (removed, lsn)."""
        norm = self.warm.schema.normalize_id(item_id)
        removed, lsn = self.cold.delete([norm])
        if not removed:
            removed, lsn = self.warm.delete([norm])
        return removed, lsn

    def close(self) -> None:
        for store in (self.warm, self.cold):
            store.close()
