"""Warming up online: a cold item's served vector moves from its content-derived value towards
an ID row estimated from the users who engaged with it, against the fixed user vectors.

For an item with content-derived vector v0 (the method's cold-item path), n engagement events
(weights summing to n) and the weighted sum s of the engaging users' vectors (all in the
method's served space, where score = user . item):

    m      = s / n                       the mean engaging user
    v_id   = t * m / |m|^2               the minimum-norm item row on which the mean engaging
                                         user scores t, a typical positive's score (the
                                         ridge-regression limit of "engaged users score t")
    g(n)   = n / (n + kappa)             the mixture's evidence gate (ranker.mixture)
    v(n)   = (1 - g) * v0 + g * v_id

n = 0 gives v0 exactly, so an item with no events is served as the offline cold evaluation
scores it. The state (v0, s, n) is all an update needs: events add to s and n, so the result
does not depend on how events were batched, and a server rebuilds it from stored state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WarmupConfig:
    """kappa: the gate's half-evidence point (events at which v_id and v0 weigh the same).
    target: the score the mean engaging user gives the ID-row estimate (None: estimate it from
    the artifact's known positives, `positive_score`)."""

    kappa: float = 2.0
    target: float | None = None


def warm_vectors(
    base: np.ndarray, user_sum: np.ndarray, n: np.ndarray, kappa: float, target: float
) -> np.ndarray:
    """(N, D) served vectors of N items from their state.

    base: (N, D) content-derived vectors v0; user_sum: (N, D) weighted sums of engaging users'
    vectors; n: (N,) summed event weights (0: no events, v0 is returned unchanged).
    """
    base = np.asarray(base, np.float32)
    n = np.asarray(n, np.float64).reshape(-1)
    out = base.copy()
    live = n > 0
    if not np.any(live):
        return out
    mean = np.asarray(user_sum, np.float64)[live] / n[live, None]  # (L, D)
    sq = np.maximum((mean * mean).sum(axis=1, keepdims=True), 1e-12)
    v_id = target * mean / sq  # (L, D): mean . v_id = target
    g = (n[live] / (n[live] + kappa))[:, None] if kappa > 0 else np.ones((int(live.sum()), 1))
    out[live] = ((1.0 - g) * base[live] + g * v_id).astype(np.float32)
    return out


def positive_score(
    users: np.ndarray, items: np.ndarray, user_rows: np.ndarray, item_rows: np.ndarray
) -> float:
    """Mean score users (U, D) . items (I, D) over known positive pairs (P,) x (P,): the target
    of `warm_vectors` (what a trained item row scores for its own users)."""
    if len(user_rows) == 0:
        return 1.0
    scores = np.einsum("pd,pd->p", users[user_rows], items[item_rows])
    return float(np.mean(scores))


def warmup_fn(config: WarmupConfig, target: float) -> Callable[..., np.ndarray]:
    """`warm_vectors` with kappa and target bound: the callable the index server receives,
    f(base (N, D), user_sum (N, D), n (N,)) -> (N, D)."""
    t = float(config.target if config.target is not None else target)

    def fn(base: np.ndarray, user_sum: np.ndarray, n: np.ndarray) -> np.ndarray:
        return warm_vectors(base, user_sum, n, config.kappa, t)

    return fn
