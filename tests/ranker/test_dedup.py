"""Request-level dedup: same outputs and gradients as the plain (one user pass per row) path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coldstart.ranker.data import make_batch
from coldstart.ranker.model import (
    ItemTower,
    ItemTowerConfig,
    Ranker,
    RankerConfig,
    UserTower,
    UserTowerConfig,
)


def _model(history: str, loss: str) -> Ranker:
    torch.manual_seed(0)
    n_items, n_users, dim = 50, 20, 8
    cfg = RankerConfig(
        dim=dim,
        item=ItemTowerConfig(content_hidden=16, id_dropout=0.0, init="random"),
        user=UserTowerConfig(history=history, history_len=6),
        loss=loss,
    )
    content = torch.randn(n_items, 12)
    item = ItemTower(cfg.item, dim, n_items, content=content)
    user = UserTower(cfg.user, dim, n_users, n_items)
    log_q = torch.log(torch.rand(n_items) + 0.1)
    return Ranker(cfg, item, user, log_q)


def _batch(seed: int = 0):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 20, size=5)
    items = [rng.choice(50, size=k, replace=False) for k in (6, 4, 6, 5, 6)]
    history = rng.integers(-1, 50, size=(5, 6))
    history[1] = -1  # a user with no history at all
    labels = [rng.integers(0, 2, size=len(x)).astype(np.float32) for x in items]
    weights = [rng.uniform(0.5, 2.0, size=len(x)).astype(np.float32) for x in items]
    return make_batch(users, history, items, labels=labels, weights=weights)


@pytest.mark.parametrize("history", ["pooled", "sequence"])
@pytest.mark.parametrize("loss", ["softmax", "bce"])
def test_dedup_equals_plain_outputs_and_gradients(history: str, loss: str) -> None:
    model = _model(history, loss)
    batch = _batch()
    results = {}
    for dedup in (True, False):
        model.zero_grad()
        scores = model(batch, dedup=dedup)
        value = model.loss(batch, dedup=dedup)
        value.backward()
        grads = {
            n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None
        }
        results[dedup] = (scores.detach(), value.detach(), grads)
    (s1, l1, g1), (s2, l2, g2) = results[True], results[False]
    assert s1.shape == (len(batch.item_ids),)
    torch.testing.assert_close(s1, s2, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(l1, l2, rtol=1e-5, atol=1e-6)
    assert g1.keys() == g2.keys() and any("user_tower" in n for n in g1)
    for name in g1:
        torch.testing.assert_close(g1[name], g2[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("history", ["pooled", "sequence"])
def test_user_side_runs_once_per_request(history: str) -> None:
    """With dedup the user-ID table, the history table and the sequence encoder see R rows."""
    model = _model(history, "softmax")
    batch = _batch()
    calls = []
    hist = model.user_tower.history
    modules = [model.user_tower.table]
    modules += [hist.item, hist.encoder] if history == "sequence" else [hist.bag]
    handles = [
        m.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0])) for m in modules
    ]
    model.loss(batch, dedup=True)
    model.loss(batch, dedup=False)
    for h in handles:
        h.remove()
    r, n = len(batch.user_ids), len(batch.item_ids)
    assert calls == [r] * len(modules) + [n] * len(modules)


def test_softmax_masks_other_positives_of_the_request() -> None:
    """A request whose two rows are each other's only negatives: masked, so the loss is 0."""
    model = _model("pooled", "softmax")
    model.config.logq = False
    batch = make_batch(np.array([3]), np.full((1, 6), -1), [np.array([7, 9])])
    assert float(model.loss(batch).detach()) == pytest.approx(0.0, abs=1e-6)
