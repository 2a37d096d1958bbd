"""Ranking metrics on hand-checked examples."""

from __future__ import annotations

import numpy as np
import pytest

from ranker.metrics import make_task, ranking_metrics, user_auc


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


def test_recall_normalizes_by_min_k_positives() -> None:
    scores = np.arange(100, dtype=float)[::-1][None]  # item 0 best
    targets = np.arange(30)  # 30 positives, the top 30 items
    task = make_task(
        np.zeros(30, int), targets, np.arange(100), np.array([], int), np.array([], int)
    )
    out = ranking_metrics(lambda u, c: scores[:, c], task, ks=(10, 20))
    assert out["recall@10"] == pytest.approx(1.0) and out["ndcg@20"] == pytest.approx(1.0)


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
