"""Warming up online: a cold item's served vector moves from its content-derived value towards
an ID row estimated from the users who engaged with it, against the fixed user vectors.

For an item with content-derived vector v0 (the method's cold-item path), n engagement events
(weights summing to n) and the weighted sum s of the engaging users' vectors (all in the
method's served space, where score = user . item):

    m      = s / n                       the mean engaging user
    v_id   = c * m                       the ID-row estimate: a row aligned with the users who
                                         engaged; c = t / E|u|^2 makes a user score its own
                                         one-event estimate t on average, t the mean score of
                                         a known positive (user, trained item) pair above a
                                         random pair's (so c >= 0 for any model). Diverse
                                         engagers average out (|m| shrinks), coherent ones add up
    g(n)   = n / (n + kappa)             the mixture's evidence gate (ranker.mixture)
    v(n)   = (1 - g) * v0 + g * v_id     on the coordinates where users differ

Coordinates where every user has the same value (item biases: the mixture's popularity and
cold-offset columns, a tower's bias column) keep v0's value. Moving them would change the
item's score for every user alike, by an amount that depends on n: measured on the synthetic
warm-up benchmark, that made items with few events outrank the rest (Recall@20 at n = 20 fell
below content only); kept fixed, the curve rises with n.

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
    scale: c of v_id = c * m (None: from the artifact's known positives, `id_scale`)."""

    kappa: float = 2.0
    scale: float | None = None


def warm_vectors(
    base: np.ndarray,
    user_sum: np.ndarray,
    n: np.ndarray,
    kappa: float,
    scale: float,
    fixed: np.ndarray | None = None,
) -> np.ndarray:
    """(N, D) served vectors of N items from their state.

    base: (N, D) content-derived vectors v0; user_sum: (N, D) weighted sums of engaging users'
    vectors; n: (N,) summed event weights (0: no events, v0 is returned unchanged);
    fixed: (D,) bool, coordinates that keep v0's value (see the module docstring).
    """
    base = np.asarray(base, np.float32)
    n = np.asarray(n, np.float64).reshape(-1)
    out = base.copy()
    live = n > 0
    if not np.any(live):
        return out
    v_id = scale * np.asarray(user_sum, np.float64)[live] / n[live, None]  # (L, D)
    g = (n[live] / (n[live] + kappa))[:, None] if kappa > 0 else np.ones((int(live.sum()), 1))
    moved = (1.0 - g) * base[live] + g * v_id
    if fixed is not None:
        moved[:, fixed] = base[live][:, fixed]
    out[live] = moved.astype(np.float32)
    return out


def constant_columns(users: np.ndarray) -> np.ndarray:
    """(D,) bool: the coordinates on which every user (U, D) has the same value."""
    return np.ptp(users, axis=0) == 0 if len(users) else np.zeros(users.shape[1], bool)


def id_scale(
    users: np.ndarray, items: np.ndarray, user_rows: np.ndarray, item_rows: np.ndarray
) -> float:
    """c = t / E|u|^2 over known positive pairs (P,) x (P,) of users (U, D) and items (I, D),
    t their mean score above a random pair's (0 when not above), both on the coordinates
    where users differ: the `scale` of `warm_vectors`."""
    if len(user_rows) == 0:
        return 1.0
    free = ~constant_columns(users)
    u, v = users[user_rows][:, free], items[item_rows][:, free]
    # The positives' margin over a random (user, item) pair (whose mean score is ubar . vbar):
    # positive for any model that ranks its positives above chance, whatever its offsets.
    chance = float(users[:, free].mean(axis=0) @ items[:, free].mean(axis=0))
    t = float(np.mean(np.einsum("pd,pd->p", u, v))) - chance
    return max(t, 0.0) / max(float(np.mean((u * u).sum(axis=1))), 1e-12)


def warmup_fn(
    config: WarmupConfig,
    users: np.ndarray,
    items: np.ndarray,
    user_rows: np.ndarray,
    item_rows: np.ndarray,
) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """The callable the index server receives, f(base (N, D), user_sum (N, D), n (N,)) ->
    (N, D): `warm_vectors` with kappa, the scale (config's, else `id_scale` over the known
    positive pairs user_rows x item_rows) and the users' constant columns bound."""
    c = float(
        config.scale if config.scale is not None else id_scale(users, items, user_rows, item_rows)
    )
    fixed = constant_columns(users)

    def fn(base: np.ndarray, user_sum: np.ndarray, n: np.ndarray) -> np.ndarray:
        return warm_vectors(base, user_sum, n, config.kappa, c, fixed)

    return fn
