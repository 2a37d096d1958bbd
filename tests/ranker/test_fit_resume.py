"""ranker.train.fit_ranker with a FitCheckpoint: a fit cut short after a mid-epoch checkpoint and
started again continues there, and ends with the same weights and vectors, bit for bit, as a fit
never interrupted (CPU, one thread count); a checkpoint of another fit is never continued."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import coldstart.ranker.train as train_mod
from coldstart.ranker.methods import fit_method, resolve_method
from coldstart.ranker.train import FitCheckpoint, RequestBatches

TINY = {"dim": 16, "epochs": 3, "content_hidden": 32, "batch_requests": 16, "history_len": 20}


class Killed(Exception):
    """Stands for a SIGKILL right after a checkpoint reached the disk."""


def _cut_short_after(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    original = train_mod.save_fit_checkpoint

    def save_then_stop(path, state):  # noqa: ANN001, ANN202
        original(path, state)
        if state["loop"]["steps"] == step:
            raise Killed

    monkeypatch.setattr(train_mod, "save_fit_checkpoint", save_then_stop)


@pytest.mark.parametrize(
    "method,params",
    [
        ("ours", {}),  # a mixture: channel rankers with ID dropout (torch RNG), AdamW
        ("id_only", {"optimizer": "rowwise_adagrad"}),
    ],
)
def test_a_fit_resumed_mid_epoch_equals_an_uninterrupted_one(
    syn_data, tmp_path, monkeypatch, method, params
) -> None:
    params = {**TINY, **params}
    reference = fit_method(method, syn_data, params=params)

    resolved = resolve_method(method, params)
    per_epoch = len(RequestBatches(syn_data, resolved.ranker.user.history_len, resolved.train))
    every = 2
    # The first checkpoint inside the second epoch: a mid-epoch position, not an epoch end.
    step = next(s for s in range(per_epoch + 1, 2 * per_epoch) if s % every == 0)
    checkpoint = FitCheckpoint(tmp_path / "fit.pt", every_n_steps=every)
    _cut_short_after(monkeypatch, step)
    with pytest.raises(Killed):
        fit_method(method, syn_data, params=params, checkpoint=checkpoint)
    monkeypatch.undo()
    loop = torch.load(checkpoint.path, weights_only=True)["loop"]
    assert (loop["epoch"], loop["batch"], loop["steps"]) == (1, step - per_epoch, step)

    torch.manual_seed(12345)  # whatever the generators hold now, the checkpoint's states win
    np.random.seed(6789)
    resumed = fit_method(method, syn_data, params=params, checkpoint=checkpoint)
    assert resumed.info["resumed_from_step"] == step
    for key in ("epochs", "steps", "loss"):
        assert resumed.info[key] == reference.info[key], key
    ref_state, got_state = reference.model.state_dict(), resumed.model.state_dict()
    assert ref_state.keys() == got_state.keys()
    for key, value in ref_state.items():
        assert torch.equal(value, got_state[key]), key
    assert np.array_equal(resumed.items, reference.items)
    assert np.array_equal(resumed.users, reference.users)


def test_a_checkpoint_of_another_fit_is_not_continued(syn_data, tmp_path, monkeypatch) -> None:
    params = {**TINY, "epochs": 2}
    checkpoint = FitCheckpoint(tmp_path / "fit.pt", every_n_steps=3)
    _cut_short_after(monkeypatch, 3)
    with pytest.raises(Killed):
        fit_method("id_only", syn_data, params=params, checkpoint=checkpoint)
    monkeypatch.undo()
    other = {**params, "lr": 0.01}
    fitted = fit_method("id_only", syn_data, params=other, checkpoint=checkpoint)
    assert "resumed_from_step" not in fitted.info
    plain = fit_method("id_only", syn_data, params=other)
    assert np.array_equal(fitted.items, plain.items)
    # A finished fit leaves its last (epoch-end) checkpoint: rerun, it trains nothing more.
    again = fit_method("id_only", syn_data, params=other, checkpoint=checkpoint)
    assert again.info["resumed_from_step"] == plain.info["steps"]
    assert np.array_equal(again.items, plain.items)
