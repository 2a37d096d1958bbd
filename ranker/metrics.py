"""Cold-start ranking metrics: full ranking over the catalogue, training positives masked.

Protocol (the cold-start literature's, e.g. DropoutNet / ALDI): for every user with at least one
held-out positive in a segment, score *every* candidate item of that segment, mask the user's
training positives, take the top K and compare with the held-out positives.

Segments: "warm" ranks the warm items only (cold masked) against the warm held-out part;
"cold" ranks the cold items of the evaluated cold part only (warm masked); "all" ranks both
together against the union of the two parts.

Recall@K = hits@K / min(K, #positives) (so a perfect ranking scores 1.0 for every user);
NDCG@K uses binary gains with the ideal DCG of min(K, #positives) hits. Both are averaged over
users. AUC (where labels exist) is the per-user ROC AUC of labelled impressions, averaged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

KS = (10, 20)
SEGMENTS = ("cold", "warm", "all")


@dataclass
class SegmentTask:
    """One evaluation: candidates, targets and the mask, all as catalogue/user rows.

    users:       (U,) int64 user rows to evaluate.
    candidates:  (C,) int64 item rows that may be ranked (others are masked).
    targets:     list of U arrays of held-out positive item rows (subset of candidates).
    seen:        list of U arrays of training-positive item rows (masked from the ranking).
    """

    users: np.ndarray
    candidates: np.ndarray
    targets: list[np.ndarray]
    seen: list[np.ndarray]


def _group(user_rows: np.ndarray, item_rows: np.ndarray) -> dict[int, np.ndarray]:
    order = np.argsort(user_rows, kind="stable")
    u, i = user_rows[order], item_rows[order]
    cuts = np.flatnonzero(np.diff(u)) + 1
    return {
        int(us[0]): np.unique(its)
        for us, its in zip(np.split(u, cuts), np.split(i, cuts))
        if len(us)
    }


def make_task(
    target_users: np.ndarray,
    target_items: np.ndarray,
    candidates: np.ndarray,
    train_users: np.ndarray,
    train_items: np.ndarray,
) -> SegmentTask:
    """Build a SegmentTask from (user row, item row) pairs of the held-out and train parts.

    Held-out positives outside `candidates` are dropped (they belong to another segment).
    """
    candidates = np.unique(np.asarray(candidates, dtype=np.int64))
    keep = np.isin(target_items, candidates)
    targets = _group(np.asarray(target_users)[keep], np.asarray(target_items)[keep])
    seen = _group(np.asarray(train_users), np.asarray(train_items))
    users = np.array(sorted(targets), dtype=np.int64)
    empty = np.zeros(0, dtype=np.int64)
    return SegmentTask(
        users=users,
        candidates=candidates,
        targets=[targets[int(u)] for u in users],
        seen=[seen.get(int(u), empty) for u in users],
    )


def ranking_metrics(
    score_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
    task: SegmentTask,
    ks: tuple[int, ...] = KS,
    batch_users: int = 256,
) -> dict[str, float]:
    """Recall@K and NDCG@K for a task.

    score_fn(user_rows (B,), candidate_rows (C,)) -> (B, C) float scores; higher is better.
    Ties are broken by candidate order (stable), which never favours the targets.
    """
    if len(task.users) == 0:
        return {
            **{f"recall@{k}": float("nan") for k in ks},
            **{f"ndcg@{k}": float("nan") for k in ks},
            "users": 0,
        }
    cand = task.candidates
    col = {int(c): j for j, c in enumerate(cand.tolist())}
    kmax = min(max(ks), len(cand))
    discounts = 1.0 / np.log2(np.arange(2, kmax + 2))
    recall = {k: [] for k in ks}
    ndcg = {k: [] for k in ks}
    for start in range(0, len(task.users), batch_users):
        users = task.users[start : start + batch_users]
        scores = np.asarray(score_fn(users, cand), dtype=np.float64).copy()  # (B, C)
        for b in range(len(users)):
            seen_cols = [col[s] for s in task.seen[start + b].tolist() if s in col]
            if seen_cols:
                scores[b, seen_cols] = -np.inf
        top = np.argpartition(-scores, kmax - 1, axis=1)[:, :kmax]
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)  # (B, kmax) column indices, best first
        for b in range(len(users)):
            target_cols = np.array([col[t] for t in task.targets[start + b].tolist()])
            hits = np.isin(top[b], target_cols)  # (kmax,)
            n_pos = len(target_cols)
            for k in ks:
                kk = min(k, kmax)
                denom = min(k, n_pos)
                recall[k].append(hits[:kk].sum() / denom)
                idcg = discounts[:denom].sum()
                ndcg[k].append((hits[:kk] * discounts[:kk]).sum() / idcg)
    out = {f"recall@{k}": float(np.mean(recall[k])) for k in ks}
    out.update({f"ndcg@{k}": float(np.mean(ndcg[k])) for k in ks})
    out["users"] = len(task.users)
    return out


def user_auc(user_rows: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean per-user ROC AUC over users with both positive and negative labelled rows.

    user_rows, scores, labels: (N,) arrays of labelled impressions. NaN when no user qualifies.
    """
    aucs = []
    user_rows, scores, labels = map(np.asarray, (user_rows, scores, labels))
    for u in np.unique(user_rows):
        m = user_rows == u
        y, s = labels[m] > 0.5, scores[m]
        n_pos, n_neg = int(y.sum()), int((~y).sum())
        if n_pos == 0 or n_neg == 0:
            continue
        ranks = _average_ranks(s)
        aucs.append((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return float(np.mean(aucs)) if aucs else float("nan")


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties averaged (Mann-Whitney)."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    sx = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks
