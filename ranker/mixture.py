"""The evidence-gated channel mixture: one dot product that contains its baselines.

Channels (each a user vector and an item vector whose inner product is a score):
  id    the ID-only two-tower model; items without training rows (cold) get the ridge map
        content -> ID vector, so this channel alone is `content_projection` (and on warm items
        exactly `id_only`)
  ws    the content warm-start model (ID residual on the content projection, ID dropout):
        `warmstart`, optionally with semantic IDs
  knn   the normalized content vector against the user's normalized mean history content:
        exactly `content_knn`
  pop   log(1 + train count) against a constant 1: exactly `popularity`

The served score is a per-item weighted sum of standardized channel scores, the weights a
function of the item's evidence n (its train interactions):
  cold items (n = 0):  w = (w_id, w_ws, w_knn)  on the simplex                (tuned on cold_val)
  warm items (n >= 1): gate g(n) = n / (n + kappa);  w_id = g(n),
                       w_ws = (1 - g(n)) * rho,  w_knn = (1 - g(n)) * (1 - rho),  w_pop = pi
                                                       (the whole kappa x rho x pi grid on val)
Cold and warm weights are tuned apart; one offset added to every cold item's score (chosen on
val's `all` segment, where both are ranked together) puts them on one scale.
Weights only scale item-side coordinates, so the result is still ONE user vector
[u_id, u_ws, u_knn, 1, 1] and ONE item vector [w_id v_id, w_ws v_ws, w_knn c, w_pop log1p(n),
offset if cold]:
FAISS and the API serve it unchanged. Every baseline is a grid point (a one-hot weight, or
kappa = 0 for id_only on warm items), so on the tuning parts the mixture is never below the
best of them. Tuning reads val and cold_val only, never test.

`ChannelRanker` trains the model channels side by side on the same request batches (their
losses summed; parameters disjoint, so each trains exactly as it would alone). The mixing logic
lives here, not in the ID tables: whatever tables a channel's towers use, the mixture composes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from coldstart.data.schema import RequestBatch
from coldstart.ranker.data import RankerData
from coldstart.ranker.model import Ranker

CHANNELS = ("id", "ws", "knn", "pop")
COLD_CHANNELS = ("id", "ws", "knn")  # pop is log1p(0) = 0 on cold items


class ChannelRanker(nn.Module):
    """Model channels (plain Rankers) trained on the same batches. loss = sum of their losses.

    channels: name -> Ranker. `history_len` is the longest channel history (each user tower
    keeps its own last `history_len` items of the batch's history).
    """

    def __init__(self, channels: dict[str, Ranker]) -> None:
        super().__init__()
        if not channels:
            raise ValueError("ChannelRanker needs at least one channel")
        self.channels = nn.ModuleDict(channels)

    @property
    def history_len(self) -> int:
        return max(m.history_len for m in self.channels.values())

    def loss(self, batch: RequestBatch, dedup: bool = True) -> torch.Tensor:
        """Sum of the channels' losses on the same batch (each channel's own loss config)."""
        return sum(m.loss(batch, dedup) for m in self.channels.values())

    def rankers(self) -> Iterable[tuple[str, Ranker]]:
        return self.channels.items()


@dataclass
class MixtureConfig:
    """How the mixture is tuned (method params of `ours`, see ranker.methods).

    channels: which channels may enter (a subset of id, ws, knn, pop; ws needs the warm-start
      model, so leaving it out trains one model instead of two).
    kappas: the evidence gate's grid (0: ID channel only on warm items; inf: content only).
    rhos: the warm content part's ws share (the rest goes to knn).
    pis: popularity weights (standardized units) added on warm items.
    cold_step: simplex grid step of the cold weights.
    margin_z: the best mixed point replaces the best single channel only when its paired
      per-user gain in val Recall@k exceeds this many standard errors: a small val gain is
      noise (it flipped to a loss on test), and a single channel is a baseline reproduced
      exactly.
    tune_users: at most this many val users per segment score the grid (seeded sample).
    k: the cut-off of the tuning objective, Recall@k on val / cold_val.
    """

    channels: list[str] = field(default_factory=lambda: list(CHANNELS))
    kappas: list[float] = field(
        default_factory=lambda: [0.0, 1.0, 3.0, 10.0, 30.0, 100.0, float("inf")]
    )
    rhos: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    pis: list[float] = field(default_factory=lambda: [0.0, 0.1, 0.3, 1.0, 3.0])
    cold_step: float = 0.1
    margin_z: float = 2.0
    tune_users: int = 2000
    k: int = 20
    seed: int = 0


def knn_vectors(data: RankerData) -> tuple[np.ndarray, np.ndarray]:
    """content_knn: (items (I, C) normalized content, users (U, C) normalized mean history)."""
    content = normalized_rows(data.content)
    tr = data.train
    users = np.zeros((data.num_users, content.shape[1]), dtype=np.float64)
    np.add.at(users, tr.users, content[tr.items])
    counts = np.bincount(tr.users, minlength=data.num_users)[:, None]
    return content, normalized_rows((users / np.maximum(counts, 1)).astype(np.float32))


def pop_vectors(data: RankerData) -> tuple[np.ndarray, np.ndarray]:
    """popularity: (items (I, 1) log1p(train count), users (U, 1) ones)."""
    counts = data.train_counts().astype(np.float32)
    return np.log1p(counts)[:, None], np.ones((data.num_users, 1), np.float32)


def normalized_rows(x: np.ndarray) -> np.ndarray:
    """(N, D) rows scaled to unit length (all-zero rows stay zero), float32."""
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


@dataclass
class _Grid:
    """One segment's tuning problem: standardized channel scores of sampled val users."""

    scores: dict[str, np.ndarray]  # channel -> (U, C) float32
    targets: np.ndarray  # (U, C) bool
    n_pos: np.ndarray  # (U,)
    evidence: np.ndarray  # (C,) train counts of the candidates

    def recall(self, weights: dict[str, np.ndarray | float], k: int) -> float:
        """Mean Recall@k of the weighted sum; weights: channel -> (C,) or scalar."""
        return float(self.per_user(weights, k).mean())

    def per_user(self, weights: dict[str, np.ndarray | float], k: int) -> np.ndarray:
        """(U,) Recall@k of every sampled user under the weighted sum."""
        total = None
        for name, w in weights.items():
            if np.isscalar(w) and w == 0:
                continue
            part = self.scores[name] * (np.asarray(w, np.float32)[None] if np.ndim(w) else w)
            total = part if total is None else total + part
        if total is None:
            return np.zeros(len(self.n_pos))
        kk = min(k, total.shape[1])
        top = np.argpartition(-total, kk - 1, axis=1)[:, :kk]
        hits = np.take_along_axis(self.targets, top, axis=1).sum(1)
        return hits / self.n_pos


def _significant(new: np.ndarray, old: np.ndarray, z: float) -> bool:
    """Is the paired per-user gain new - old above z standard errors (and positive)?"""
    d = np.asarray(new, np.float64) - np.asarray(old, np.float64)
    if len(d) < 2 or d.mean() <= 0:
        return False
    return bool(d.mean() > z * d.std(ddof=1) / np.sqrt(len(d)))


def _grid(
    data: RankerData,
    segment: str,
    vectors: dict[str, tuple[np.ndarray, np.ndarray]],
    scale: dict[str, float],
    cfg: MixtureConfig,
) -> _Grid | None:
    task = data.task(segment, "val")
    if len(task.users) == 0:
        return None
    rng = np.random.default_rng(cfg.seed)
    pick = np.arange(len(task.users))
    if len(pick) > cfg.tune_users:
        pick = np.sort(rng.choice(pick, cfg.tune_users, replace=False))
    users = task.users[pick]
    cand = task.candidates
    col = np.full(data.num_items, -1, dtype=np.int64)
    col[cand] = np.arange(len(cand))
    targets = np.zeros((len(users), len(cand)), dtype=bool)
    seen_mask = np.zeros((len(users), len(cand)), dtype=bool)
    for r, p in enumerate(pick):
        targets[r, col[task.targets[p]]] = True
        s = col[task.seen[p]]
        seen_mask[r, s[s >= 0]] = True
    scores = {}
    for name, (items, user_vecs) in vectors.items():
        s = (user_vecs[users] @ items[cand].T).astype(np.float32) / scale[name]
        s[seen_mask] = -1e9  # known positives never rank (finite: weights may be 0)
        scores[name] = s
    return _Grid(scores, targets, targets.sum(1), data.train_counts()[cand])


def channel_scales(
    data: RankerData, vectors: dict[str, tuple[np.ndarray, np.ndarray]], seed: int = 0
) -> dict[str, float]:
    """Each channel's score standard deviation over a fixed sample of (user, item) pairs, so
    grid weights compare channels on one scale."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, data.num_users, size=min(256, data.num_users))
    items = rng.integers(0, data.num_items, size=min(2048, data.num_items))
    out = {}
    for name, (iv, uv) in vectors.items():
        std = float((uv[users] @ iv[items].T).std())
        out[name] = std if std > 1e-12 else 1.0
    return out


def _simplex(names: list[str], step: float) -> list[dict[str, float]]:
    """Every weight vector on the simplex over `names` with the given step, one-hots first."""
    n = int(round(1 / step))
    points = []

    def rec(i: int, left: int, acc: list[int]) -> None:
        if i == len(names) - 1:
            points.append([*acc, left])
            return
        for a in range(left, -1, -1):
            rec(i + 1, left - a, [*acc, a])

    rec(0, n, [])
    points.sort(key=lambda p: (sum(1 for x in p if x) != 1, [-x for x in p]))
    return [{name: a / n for name, a in zip(names, p)} for p in points]


def _gate(evidence: np.ndarray, kappa: float) -> np.ndarray:
    """g(n) = n / (n + kappa) for n >= 1: 1 at kappa 0, 0 at kappa inf."""
    n = evidence.astype(np.float64)
    if kappa == 0:
        return np.ones_like(n, dtype=np.float32)
    if np.isinf(kappa):
        return np.zeros_like(n, dtype=np.float32)
    return (n / (n + kappa)).astype(np.float32)


def _warm_weights(
    evidence: np.ndarray, kappa: float, rho: float, pi: float, names: list[str]
) -> dict[str, Any]:
    g = _gate(evidence, kappa)
    w: dict[str, Any] = {}
    content = [c for c in ("ws", "knn") if c in names]
    share = {"ws": rho, "knn": 1.0 - rho} if len(content) == 2 else {c: 1.0 for c in content}
    if "id" in names:
        w["id"] = g
    else:
        g = np.zeros_like(g)  # no ID channel: the content part carries every item
    for c in content:
        w[c] = (1.0 - g) * share[c]
    if "pop" in names:
        w["pop"] = pi
    return w


def tune_mixture(
    data: RankerData, vectors: dict[str, tuple[np.ndarray, np.ndarray]], cfg: MixtureConfig
) -> dict[str, Any]:
    """Choose the cold weights on cold_val and (kappa, rho, pi) on val; see the module doc.

    vectors: channel -> (items (I, D_c), users (U, D_c)). Returns the chosen parameters, the
    per-channel scales and the val Recall@k of every single channel and of the mixture.
    """
    names = [c for c in cfg.channels if c in vectors]
    scale = channel_scales(data, {c: vectors[c] for c in names}, cfg.seed)
    out: dict[str, Any] = {"scales": scale, "channels": names}

    cold_names = [c for c in COLD_CHANNELS if c in names]
    cold = _grid(data, "cold", {c: vectors[c] for c in cold_names}, scale, cfg)
    if cold is None or not cold_names:
        out["cold"] = {c: float(i == 0) for i, c in enumerate(cold_names)}
        out["cold_val_recall"] = None
    else:
        single = {c: cold.recall({c: 1.0}, cfg.k) for c in cold_names}
        top = max(cold_names, key=lambda c: single[c])  # first of equals: registry order
        best_w = {c: float(c == top) for c in cold_names}
        mixed, mixed_best = best_w, -1.0
        for w in _simplex(cold_names, cfg.cold_step):
            r = cold.recall(w, cfg.k)
            if r > mixed_best + 1e-12:
                mixed_best, mixed = r, w
        if _significant(cold.per_user(mixed, cfg.k), cold.per_user(best_w, cfg.k), cfg.margin_z):
            best_w = mixed
        best = cold.recall(best_w, cfg.k)
        out["cold"] = best_w
        out["cold_val_recall"] = best
        out["cold_val_single"] = single
        del cold

    warm = _grid(data, "warm", {c: vectors[c] for c in names}, scale, cfg)
    inf = float("inf")
    # Each single channel as a grid point: id = kappa 0; ws / knn = kappa inf with rho 1 / 0;
    # popularity = a weight that dwarfs the rest (ties among equal counts broken by the others).
    points = {
        "id": {"kappa": 0.0, "rho": 1.0, "pi": 0.0},
        "ws": {"kappa": inf, "rho": 1.0, "pi": 0.0},
        "knn": {"kappa": inf, "rho": 0.0, "pi": 0.0},
        "pop": {"kappa": 0.0, "rho": 1.0, "pi": 1e3},
    }
    params = points["id" if "id" in names else "ws" if "ws" in names else "knn"]
    if warm is not None:

        def _w(p: dict[str, float]) -> dict[str, Any]:
            return _warm_weights(warm.evidence, p["kappa"], p["rho"], p["pi"], names)

        def score(p: dict[str, float]) -> float:
            return warm.recall(_w(p), cfg.k)

        single = {c: warm.recall({c: 1.0}, cfg.k) for c in names}
        top = max(names, key=lambda c: single[c])  # first of equals: channel order
        params = points[top]
        best = score(params)  # (the pop point breaks count ties with the id channel)
        # The whole grid kappa x rho x pi (a greedy path misses optima inside a face of it);
        # the best mixed point replaces the best single channel only if it wins significantly.
        kappas = cfg.kappas if "id" in names else [inf]
        rhos = cfg.rhos if {"ws", "knn"} <= set(names) else [1.0]
        pis = cfg.pis if "pop" in names else [0.0]
        mixed, mixed_best = params, -1.0
        for kappa in kappas:
            for rho in rhos:
                for pi in pis:
                    p = {"kappa": kappa, "rho": rho, "pi": pi}
                    r = score(p)
                    if r > mixed_best + 1e-12:
                        mixed_best, mixed = r, p
        if _significant(*(warm.per_user(_w(p), cfg.k) for p in (mixed, params)), cfg.margin_z):
            params, best = mixed, mixed_best
        out["warm_val_recall"] = best
        out["warm_val_single"] = single
    out["warm"] = params
    out["cold_offset"] = _tune_cold_offset(data, vectors, out, cfg)
    return out


def _tune_cold_offset(
    data: RankerData,
    vectors: dict[str, tuple[np.ndarray, np.ndarray]],
    tuned: dict[str, Any],
    cfg: MixtureConfig,
) -> float:
    """Cold and warm weights are tuned apart, so their scores are on no common scale: one
    constant added to every cold item's score (an item coordinate against the user's 1),
    chosen on val's `all` segment (warm and cold items ranked together)."""
    items, users = mix_vectors(data, vectors, {**tuned, "cold_offset": 0.0})
    grid = _grid(data, "all", {"mix": (items, users)}, {"mix": 1.0}, cfg)
    if grid is None:
        return 0.0
    finite = grid.scores["mix"][grid.scores["mix"] > -1e8]
    spread = float(finite.std()) if finite.size else 1.0
    cold_cols = (grid.evidence == 0).astype(np.float32)
    mask = grid.scores["mix"] <= -1e8
    best, best_offset = grid.recall({"mix": 1.0}, cfg.k), 0.0
    for f in (-4.0, -2.0, -1.0, -0.5, -0.25, 0.25, 0.5, 1.0, 2.0, 4.0):
        shifted = np.where(mask, -1e9, grid.scores["mix"] + f * spread * cold_cols[None])
        r = _Grid({"mix": shifted}, grid.targets, grid.n_pos, grid.evidence).recall(
            {"mix": 1.0}, cfg.k
        )
        if r > best + 1e-12:
            best, best_offset = r, f * spread
    tuned["all_val_recall"] = best
    return best_offset


def mixture_weights(data: RankerData, tuned: dict[str, Any]) -> list[tuple[str, np.ndarray]]:
    """(channel, (I,) weight) of every channel the served vector keeps, in its column order.

    Channels whose weight is zero for every item are left out (shorter vectors); cold items
    (no train interactions) take the tuned cold weight.
    """
    names = tuned["channels"]
    evidence = data.train_counts()
    warm = evidence > 0
    p = tuned["warm"]
    ww = _warm_weights(evidence, p["kappa"], p["rho"], p["pi"], names)
    out = []
    for c in names:
        w = np.zeros(data.num_items, dtype=np.float32)
        wc = ww.get(c, 0.0)
        w[warm] = (wc[warm] if np.ndim(wc) else wc) if c in ww else 0.0
        w[~warm] = tuned["cold"].get(c, 0.0)
        if np.any(w):
            out.append((c, w))
    if not out:
        raise ValueError("the tuned mixture gives every channel weight 0")
    return out


def mix_vectors(
    data: RankerData,
    vectors: dict[str, tuple[np.ndarray, np.ndarray]],
    tuned: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray]:
    """(items (I, D), users (U, D)): the tuned per-item weights folded into one item vector.

    Channels whose weight is zero for every item are left out (shorter vectors).
    """
    warm = data.train_counts() > 0
    item_parts, user_parts = [], []
    for c, w in mixture_weights(data, tuned):
        items, users = vectors[c]
        item_parts.append(items * (w / tuned["scales"][c])[:, None])
        user_parts.append(users)
    offset = float(tuned.get("cold_offset") or 0.0)
    if offset:  # one coordinate: the cold items' offset against a constant 1 on the user side
        item_parts.append(np.where(warm, 0.0, offset).astype(np.float32)[:, None])
        user_parts.append(np.ones((data.num_users, 1), np.float32))
    return (
        np.concatenate(item_parts, axis=1).astype(np.float32),
        np.concatenate(user_parts, axis=1).astype(np.float32),
    )
