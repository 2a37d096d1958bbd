"""Ranking metrics on hand-checked examples."""

from __future__ import annotations

import numpy as np
import pytest

from coldstart.ranker.metrics import make_task, ranking_metrics, user_auc


def test_recall_ndcg_with_train_masking_and_candidates() -> None:
    # 1 user, candidates 0..29; item 0 is a train positive (masked), targets 1 and 25.
    scores = -np.arange(30, dtype=float)[None]  # item 0 best, then 1, 2, ...
    task = make_task(
        np.array([0, 0, 0]), np.array([1, 25, 40]), np.arange(30), np.array([0]), np.array([0])
    )
    assert task.targets[0].tolist() == [1, 25]  # 40 is not a candidate: another segment's item
    out = ranking_metrics(lambda u, c: scores[:, c], task, ks=(10, 20))
    assert out["recall@10"] == pytest.approx(0.5)  # item 1 at rank 1 (item 0 masked), 25 at rank 25
    assert out["recall@20"] == pytest.approx(0.5)
    assert out["ndcg@10"] == pytest.approx(1.0 / (1.0 + 1.0 / np.log2(3)))
    assert out["users"] == 1


def test_recall_divides_by_all_positives_and_the_capped_variant_has_its_own_name() -> None:
    scores = np.arange(100, dtype=float)[::-1][None]  # item 0 best
    targets = np.arange(30)  # 30 positives, the top 30 items
    task = make_task(
        np.zeros(30, int), targets, np.arange(100), np.array([], int), np.array([], int)
    )
    out = ranking_metrics(lambda u, c: scores[:, c], task, ks=(10, 20))
    # ColdRec / RecBole: hits / |relevant|; a perfect ranking of 30 positives reads 10/30 at K=10.
    assert out["recall@10"] == pytest.approx(10 / 30) and out["recall@20"] == pytest.approx(20 / 30)
    assert out["capped_recall@10"] == pytest.approx(1.0) and out["ndcg@20"] == pytest.approx(1.0)


def test_ties_count_as_their_expectation_over_random_orders() -> None:
    """An all-way tie (popularity on cold items) scores exactly K/C, whatever the sort does."""
    c, k = 50, 10
    targets = np.array([3, 17, 41])
    task = make_task(np.zeros(3, int), targets, np.arange(c), np.array([], int), np.array([], int))
    flat = ranking_metrics(lambda u, cand: np.zeros((len(u), len(cand))), task, ks=(k,))
    assert flat["recall@10"] == pytest.approx(k / c)
    # Reversing the candidate order (what a different sort might do) changes nothing.
    rev = make_task(
        np.zeros(3, int), targets, np.arange(c)[::-1], np.array([], int), np.array([], int)
    )
    assert ranking_metrics(lambda u, cand: np.zeros((1, len(cand))), rev, ks=(k,)) == flat

    # Partial ties straddling the cut-off: the exact value equals the mean over random orders.
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, c).astype(float)  # 4 score levels: big tie groups
    exact = ranking_metrics(lambda u, cand: scores[cand][None], task, ks=(k,))
    draws = []
    for _ in range(2000):
        jitter = scores + 1e-6 * rng.random(c)  # one random order of every tie group
        draws.append(ranking_metrics(lambda u, cand, j=jitter: j[cand][None], task, ks=(k,)))
    for key in ("recall@10", "ndcg@10"):
        mc = np.mean([d[key] for d in draws])
        assert exact[key] == pytest.approx(mc, abs=0.01), key


def test_test_part_masks_validation_positives(syn_data) -> None:
    """Scoring test masks train and val positives (a val positive is no test negative)."""
    val = syn_data.parts["val"]
    task = syn_data.task("warm", "test")
    user = int(np.intersect1d(task.users, val.users)[0])
    seen = task.seen[int(np.flatnonzero(task.users == user)[0])]
    assert set(val.items[val.users == user].tolist()) <= set(seen.tolist())
    val_task = syn_data.task("warm", "val")
    vseen = val_task.seen[int(np.flatnonzero(val_task.users == user)[0])]
    assert not set(val.items[val.users == user].tolist()) & set(vseen.tolist())


def test_user_auc_against_brute_force() -> None:
    rng = np.random.default_rng(0)
    users = rng.integers(0, 5, 200)
    scores = rng.normal(size=200).round(1)  # ties on purpose
    labels = (rng.random(200) < 0.4).astype(float)
    expected = []
    for u in range(5):
        m = users == u
        pos, neg = scores[m][labels[m] == 1], scores[m][labels[m] == 0]
        pairs = (pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean()
        expected.append(pairs)
    assert user_auc(users, scores, labels) == pytest.approx(np.mean(expected))
