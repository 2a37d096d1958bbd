"""Cold-start ranking metrics: full ranking over the catalogue, known positives masked.

Protocol (the cold-start literature's, e.g. DropoutNet / ALDI / ColdRec): for every user with at
least one held-out positive in a segment, score *every* candidate item of that segment, mask the
user's known positives (training positives; when scoring test, validation positives too), take
the top K and compare with the held-out positives.

Segments: "warm" ranks the warm items only (cold masked) against the warm held-out part;
"cold" ranks the cold items of the evaluated cold part only (warm masked); "all" ranks both
together against the union of the two parts.

Recall@K = hits@K / #positives, as ColdRec and RecBole compute it (a user with more than K
positives cannot reach 1.0). The variant that divides by min(K, #positives) is reported only
under its own name, `capped_recall@K`; it reads 10-30% higher on MovieLens. NDCG@K uses binary
gains with the ideal DCG of min(K, #positives) hits. All are averaged over users.

Ties: candidates with equal scores are ranked in every order with equal probability, and the
metric is that expectation, computed exactly (no random draw): a tie group of g candidates
holding t positives that straddles the cut-off contributes t/g of a hit to every position it
occupies. So an uninformative scorer (all scores equal) gets exactly the random-ranking value,
and figures never depend on a sort's tie order or on the numpy build.
AUC (where labels exist) is the per-user ROC AUC of labelled impressions, averaged.
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
    """Build a SegmentTask from (user row, item row) pairs of the held-out and known parts.

    train_users/train_items: every positive known before the evaluated part (train; for test
    also validation), masked from the ranking. Held-out positives outside `candidates` are
    dropped (they belong to another segment).
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


def expected_hits(scores: np.ndarray, is_target: np.ndarray, k: int) -> np.ndarray:
    """(k,) expected hit indicator of positions 0..k-1 under uniformly random tie-breaking.

    scores: (C,) candidate scores (-inf = masked, never ranked); is_target: (C,) bool.
    Position p of the ranking is held by a target with probability t/g, where g is the size of
    the tie group covering p and t its number of targets. Deterministic and order-free.
    """
    out = np.zeros(k, dtype=np.float64)
    finite = np.isfinite(scores)
    n = int(finite.sum())
    if n == 0:
        return out
    scores, is_target = scores[finite], is_target[finite]
    kk = min(k, n)
    # Every candidate scoring at least the kk-th best value (ties included), best first.
    kth = np.partition(scores, n - kk)[n - kk]
    sel = np.flatnonzero(scores >= kth)
    order = np.argsort(-scores[sel], kind="stable")
    s, t = scores[sel][order], is_target[sel][order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ends = np.r_[starts[1:], len(s)]
    for lo, hi in zip(starts.tolist(), ends.tolist()):
        if lo >= kk:
            break
        out[lo : min(hi, kk)] = t[lo:hi].sum() / (hi - lo)
    return out


def ranking_metrics(
    score_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
    task: SegmentTask,
    ks: tuple[int, ...] = KS,
    batch_users: int = 256,
) -> dict[str, float]:
    """recall@K, capped_recall@K and ndcg@K for a task (see the module docstring), plus
    "users": the number of users evaluated.

    score_fn(user_rows (B,), candidate_rows (C,)) -> (B, C) float scores; higher is better.
    """
    names = [f"{m}@{k}" for m in ("recall", "capped_recall", "ndcg") for k in ks]
    if len(task.users) == 0:
        return {**{n: float("nan") for n in names}, "users": 0}
    cand = task.candidates
    col = {int(c): j for j, c in enumerate(cand.tolist())}
    kmax = min(max(ks), len(cand))
    discounts = 1.0 / np.log2(np.arange(2, kmax + 2))
    sums = dict.fromkeys(names, 0.0)
    for start in range(0, len(task.users), batch_users):
        users = task.users[start : start + batch_users]
        scores = np.asarray(score_fn(users, cand), dtype=np.float64).copy()  # (B, C)
        for b in range(len(users)):
            seen_cols = [col[s] for s in task.seen[start + b].tolist() if s in col]
            if seen_cols:
                scores[b, seen_cols] = -np.inf
            target_cols = [col[t] for t in task.targets[start + b].tolist()]
            is_target = np.zeros(len(cand), dtype=bool)
            is_target[target_cols] = True
            hits = expected_hits(scores[b], is_target, kmax)  # (kmax,)
            n_pos = len(target_cols)
            for k in ks:
                kk = min(k, kmax)
                found = hits[:kk].sum()
                sums[f"recall@{k}"] += found / n_pos
                sums[f"capped_recall@{k}"] += found / min(k, n_pos)
                idcg = discounts[: min(k, n_pos, kmax)].sum()
                sums[f"ndcg@{k}"] += (hits[:kk] * discounts[:kk]).sum() / idcg
    out = {n: float(v / len(task.users)) for n, v in sums.items()}
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
