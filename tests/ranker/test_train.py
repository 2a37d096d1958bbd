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


def _fit(syn_data, **kw):
    """A small Ranker trained two epochs; returns (state_dict, fit info)."""
    from coldstart.ranker.model import RankerConfig
    from coldstart.ranker.train import create_ranker, fit_ranker

    model, _ = create_ranker(syn_data, RankerConfig(dim=16))
    info = fit_ranker(model, syn_data, TrainConfig(epochs=2, batch_requests=32), **kw)
    return model.state_dict(), info, model


def test_fit_on_auto_cpu_is_bitwise_the_default_loop(syn_data, monkeypatch) -> None:
    import torch

    from coldstart.ranker.train import FitDevice, fit_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # auto -> the CPU anywhere
    plain, _, _ = _fit(syn_data)
    for setting in (FitDevice("auto", None), FitDevice("cpu", "32"), FitDevice("auto", "auto")):
        got, _, _ = _fit(syn_data, device=setting)
        assert all(torch.equal(plain[k], got[k]) for k in plain), setting
    with fit_device("auto", None):  # the experiment's way in: a context around fit_method
        got, _, _ = _fit(syn_data)
    assert all(torch.equal(plain[k], got[k]) for k in plain)


def test_bf16_mixed_trains_under_autocast_on_the_cpu(syn_data) -> None:
    import torch

    from coldstart.ranker.model import Ranker
    from coldstart.ranker.train import FitDevice

    seen: list[bool] = []
    real = Ranker.loss

    def spy(self, batch, dedup=True):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu"))
        return real(self, batch, dedup=dedup)

    plain, plain_info, _ = _fit(syn_data)
    Ranker.loss = spy
    try:
        got, info, model = _fit(syn_data, device=FitDevice("cpu", "bf16-mixed"))
    finally:
        Ranker.loss = real
    assert seen and all(s == torch.bfloat16 for s in seen)
    assert not torch.is_autocast_enabled("cpu")  # only around the forward and loss
    assert any(not torch.equal(plain[k], got[k]) for k in plain)  # bf16 matmuls differ
    assert all(v.dtype == plain[k].dtype for k, v in got.items())  # weights stay fp32
    assert np.isfinite(info["loss"]) and abs(info["loss"] - plain_info["loss"]) < 0.1
    assert next(model.parameters()).device.type == "cpu"


def test_bf16_training_lowers_the_loss(syn_data) -> None:
    from coldstart.ranker.model import RankerConfig
    from coldstart.ranker.train import FitDevice, create_ranker, fit_ranker

    model, _ = create_ranker(syn_data, RankerConfig(dim=16))
    first = fit_ranker(
        model, syn_data, TrainConfig(epochs=1), device=FitDevice("cpu", "bf16-mixed")
    )
    model, _ = create_ranker(syn_data, RankerConfig(dim=16))
    more = fit_ranker(model, syn_data, TrainConfig(epochs=4), device=FitDevice("cpu", "bf16-mixed"))
    assert more["loss"] < first["loss"]


def test_gpu_without_cuda_and_fp16_on_cpu_fail_clearly(syn_data, monkeypatch) -> None:
    import torch

    from coldstart.ranker.train import FitDevice, fit_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for accelerator in ("gpu", "cuda"):
        with pytest.raises(RuntimeError, match="no CUDA device"):
            _fit(syn_data, device=FitDevice(accelerator, "bf16-mixed"))
    with fit_device("gpu", None), pytest.raises(RuntimeError, match="accelerator='gpu'"):
        _fit(syn_data)
    with pytest.raises(ValueError, match="16-mixed needs CUDA"):
        _fit(syn_data, device=FitDevice("cpu", "16-mixed"))
    with pytest.raises(ValueError, match="precision"):
        _fit(syn_data, device=FitDevice("cpu", "64-true"))
    with pytest.raises(ValueError, match="accelerator"):
        _fit(syn_data, device=FitDevice("tpu", None))
