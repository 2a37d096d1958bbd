"""Item tower (warm start, ID dropout, new items), user towers, rare-ID filtering."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coldstart.ranker.model import (
    ItemTower,
    ItemTowerConfig,
    PooledHistory,
    SequenceHistory,
    UserTower,
    UserTowerConfig,
)
from coldstart.ranker.train import BuildConfig, create_ranker


def _tower(**kw) -> ItemTower:
    torch.manual_seed(0)
    cfg = ItemTowerConfig(content_hidden=16, **kw)
    avail = torch.ones(30, dtype=torch.bool)
    avail[20:] = False  # rows 20..29 are cold
    return ItemTower(cfg, 8, 30, content=torch.randn(30, 12), id_available=avail)


@pytest.mark.parametrize("combine", ["residual", "swap"])
def test_content_init_starts_every_item_at_its_content_projection(combine: str) -> None:
    tower = _tower(init="content", combine=combine).eval()
    rows = torch.arange(30)
    torch.testing.assert_close(tower(rows), tower.content_vectors(rows))


def test_random_init_differs_from_content() -> None:
    tower = _tower(init="random", combine="residual").eval()
    warm = torch.arange(20)
    assert not torch.allclose(tower(warm), tower.content_vectors(warm))
    cold = torch.arange(20, 30)  # no ID row: content only, whatever the init
    torch.testing.assert_close(tower(cold), tower.content_vectors(cold))


def test_id_dropout_only_in_training() -> None:
    tower = _tower(init="random", id_dropout=0.5)
    rows = torch.arange(20).repeat(50)
    full = tower(rows, drop_ids=False)
    content = tower.content_vectors(rows)
    tower.train()
    out = tower(rows)
    dropped = torch.isclose(out, content).all(dim=1)
    assert 0.35 < dropped.float().mean() < 0.65  # ~half the warm rows shown content-only
    torch.testing.assert_close(out[~dropped], full[~dropped])
    tower.eval()
    torch.testing.assert_close(tower(rows), full)


def test_new_item_gets_its_row_from_content_without_retraining() -> None:
    tower = _tower(init="random").eval()
    new_content = torch.randn(3, 12)
    rows = tower.add_items(new_content)
    assert rows.tolist() == [30, 31, 32] and tower.num_items == 33
    expected = tower.projection(new_content)
    torch.testing.assert_close(tower(rows), expected)


def test_pooled_history_ignores_padding_and_sequence_handles_empty_history() -> None:
    torch.manual_seed(0)
    pooled = PooledHistory(10, 4)
    a = pooled(torch.tensor([[-1, -1, 3, 5]]))
    b = pooled(torch.tensor([[3, 5, -1, -1]]))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a[0], pooled.bag.weight[[3, 5]].mean(0))
    seq = SequenceHistory(10, 8, max_len=5)
    out = seq(torch.tensor([[-1, -1, -1, -1, -1], [1, 2, 3, -1, -1]]))
    assert torch.isfinite(out).all() and out.shape == (2, 8)


def test_user_tower_appends_constant_one_for_the_bias() -> None:
    for history in ("pooled", "sequence", "none"):
        tower = UserTower(UserTowerConfig(history=history, history_len=4), 8, 5, 10)
        out = tower(torch.tensor([0, 4]), torch.tensor([[1, 2, -1, -1], [-1, -1, -1, -1]]))
        assert out.shape == (2, 9)
        torch.testing.assert_close(out[:, -1], torch.ones(2))


def test_rare_ids_lose_their_row_or_share_one(syn_data) -> None:
    from coldstart.ranker.model import RankerConfig

    counts = syn_data.train_counts()
    warm = syn_data.item_split == "warm"
    threshold = int(np.median(counts[warm]))
    rare = warm & (counts < threshold)
    assert rare.any()
    cfg = RankerConfig(dim=8, item=ItemTowerConfig(content_hidden=8))
    model, report = create_ranker(syn_data, cfg, BuildConfig(rare_threshold=threshold))
    assert report["rare_items"] == int(rare.sum())
    assert not model.item_tower.id_available[torch.as_tensor(rare)].any()
    assert model.item_tower.id_available[torch.as_tensor(warm & ~rare)].all()
    model, _ = create_ranker(
        syn_data, cfg, BuildConfig(rare_threshold=threshold, rare_mode="shared")
    )
    keys = model.item_tower.id_keys[torch.as_tensor(np.flatnonzero(rare))]
    assert (
        len(torch.unique(keys)) == 1
        and model.item_tower.id_available[torch.as_tensor(np.flatnonzero(rare))].all()
    )


def test_hashed_sparse_tables_train_with_rowwise_adagrad(syn_data) -> None:
    from coldstart.ranker.model import RankerConfig
    from coldstart.ranker.train import TrainConfig, create_optimizer, fit_ranker

    cfg = RankerConfig(
        dim=8,
        item=ItemTowerConfig(content_hidden=8, hash_size=64, sparse=True),
        user=UserTowerConfig(hash_size=32, sparse=True, history_len=10),
    )
    model, report = create_ranker(syn_data, cfg)
    assert 0.5 < report["item_hash_collision_rate"] <= 1.0  # ~240 warm items in 64 rows
    assert model.item_tower.table.weight.shape == (64, 9)
    with pytest.raises(ValueError, match="rowwise_adagrad"):
        create_optimizer(model, TrainConfig(optimizer="adam"))
    before = model.item_tower.table.weight.detach().clone()
    info = fit_ranker(
        model,
        syn_data,
        TrainConfig(epochs=2, batch_requests=32, optimizer="rowwise_adagrad", lr=0.05),
    )
    assert np.isfinite(info["loss"]) and info["steps"] > 0
    assert not torch.allclose(before, model.item_tower.table.weight)
