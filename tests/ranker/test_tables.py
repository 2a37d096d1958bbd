"""Hashed ID tables, collision rates and the row-wise optimizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coldstart.ranker.tables import (
    HashedEmbedding,
    HashedTableConfig,
    RowWiseAdagrad,
    collision_rate,
    expected_collision_rate,
    hash_ids,
    state_bytes,
)


def test_hash_is_deterministic_in_range_and_salted() -> None:
    ids = torch.arange(0, 10_000_000, 997, dtype=torch.int64)
    rows = hash_ids(ids, 1000)
    assert rows.min() >= 0 and rows.max() < 1000
    torch.testing.assert_close(rows, hash_ids(ids.clone(), 1000))
    assert (rows != hash_ids(ids, 1000, salt=1)).float().mean() > 0.9
    # Strided ids (all multiples of 1000) must still spread: modulo would put them in one row.
    strided = hash_ids(torch.arange(0, 1_000_000, 1000), 1000)
    assert len(torch.unique(strided)) > 500


def test_collision_rate_matches_uniform_hashing() -> None:
    ids = np.arange(20_000) * 7919
    measured = collision_rate(ids, 50_000)
    expected = expected_collision_rate(20_000, 50_000)
    assert abs(measured - expected) < 0.03
    assert collision_rate(np.arange(10), 10**9) == 0.0


def test_sparse_lookup_touches_only_used_rows() -> None:
    table = HashedEmbedding(HashedTableConfig(dim=4, hash_size=1000, sparse=True))
    ids = torch.tensor([5, 123456789, 5])
    table(ids).sum().backward()
    grad = table.weight.grad
    assert grad.is_sparse
    assert set(grad.coalesce().indices()[0].tolist()) == set(table.row_of(ids).tolist())


def test_rowwise_adagrad_sparse_equals_dense_and_keeps_one_float_per_row() -> None:
    torch.manual_seed(0)
    rows, dim = 100, 8
    init = torch.randn(rows, dim)
    ids = torch.tensor([1, 7, 7, 42])
    weights = []
    for sparse in (True, False):
        w = torch.nn.Parameter(init.clone())
        opt = RowWiseAdagrad([w], lr=0.1)
        for _ in range(3):
            opt.zero_grad()
            torch.nn.functional.embedding(ids, w, sparse=sparse).pow(2).sum().backward()
            opt.step()
        weights.append(w.detach())
        assert state_bytes(opt) == rows * 4  # one float32 per row, not 2 x table like Adam
    torch.testing.assert_close(weights[0], weights[1])
    untouched = torch.ones(rows, dtype=torch.bool)
    untouched[ids] = False
    torch.testing.assert_close(weights[0][untouched], init[untouched])
    assert not torch.allclose(weights[0][ids], init[ids])


def test_rowwise_adagrad_minimizes() -> None:
    w = torch.nn.Parameter(torch.full((3, 2), 5.0))
    b = torch.nn.Parameter(torch.full((2,), 5.0))
    opt = RowWiseAdagrad([w, b], lr=1.0)
    for _ in range(200):
        opt.zero_grad()
        (w.pow(2).sum() + b.pow(2).sum()).backward()
        opt.step()
    assert float(w.detach().abs().max()) < 0.5 and float(b.detach().abs().max()) < 0.5


def test_bad_table_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="num_ids"):
        HashedEmbedding(HashedTableConfig(num_ids=0, hash_size=None))
