"""Training requests: grouping, leave-request-out history, upsampling weights."""

from __future__ import annotations

import numpy as np
import pytest

from coldstart.ranker.train import RequestBatches, TrainConfig


@pytest.mark.parametrize("requests", ["pages", "sessions"])
def test_requests_are_one_user_each_and_cover_the_train_part(syn_data, requests: str) -> None:
    batches = RequestBatches(
        syn_data, 10, TrainConfig(batch_requests=16, items_per_request=4, requests=requests)
    )
    rows, n_batches = 0, 0
    for batch in batches:
        n_batches += 1
        sizes = np.bincount(batch.request_index.numpy())
        assert sizes.max() <= 4 and sizes.min() >= 1
        assert len(batch.user_ids) == len(sizes) <= 16
        # The request's own items never appear in its history (they are the targets).
        for r in range(len(sizes)):
            own = batch.item_ids[batch.request_index == r].numpy()
            assert not np.isin(own, batch.history[r].numpy()).any()
        rows += len(batch.item_ids)
    assert rows == len(syn_data.train.items) and n_batches == len(batches)


def test_upsampling_weights_favour_tail_items(syn_data) -> None:
    plain = RequestBatches(syn_data, 10, TrainConfig())
    assert np.allclose(plain.row_weight, 1.0)
    up = RequestBatches(syn_data, 10, TrainConfig(upsample_alpha=1.0))
    counts = syn_data.train_counts()[syn_data.train.items]
    assert up.row_weight.mean() == pytest.approx(1.0, rel=1e-5)
    assert up.row_weight[counts == counts.min()].min() > up.row_weight[counts == counts.max()].max()
    with pytest.raises(ValueError, match="pages or sessions"):
        RequestBatches(syn_data, 10, TrainConfig(requests="nope"))


def test_event_weights_from_data_sampling(syn_data) -> None:
    import dataclasses

    tr = syn_data.train
    events = np.where(np.arange(len(tr.items)) % 2 == 0, "click", "buy")
    parts = {**syn_data.parts, "train": dataclasses.replace(tr, events=events)}
    data = dataclasses.replace(syn_data, parts=parts)
    batches = RequestBatches(data, 10, TrainConfig(event_weights={"buy": 3.0}))
    w = batches.row_weight
    assert np.allclose(w[events == "buy"], 3.0 * w[events == "click"][0])  # unknown events: 1
    assert w.mean() == pytest.approx(1.0, rel=1e-5)
    with pytest.raises(ValueError, match="weight 0"):
        RequestBatches(syn_data, 10, TrainConfig(event_weights={"click": 0.0}))
