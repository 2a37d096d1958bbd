"""TorchRec tables (`RankerConfig.tables: torchrec`): installed, and equal to the torch tables.

With equal weights a ranker whose ID tables are TorchRec collections gives the same scores,
losses and gradients as the plain torch one, for every table kind (item IDs, hashed user IDs,
semantic-ID prefixes, pooled and sequence history, the rare-ID bucket), with and without request
dedup (variable-batch KJT with inverse indices), and the same vectors for `add_items`.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata

import numpy as np
import pytest
import torch

from coldstart.ranker.data import make_batch
from coldstart.ranker.model import ItemTowerConfig, RankerConfig, UserTowerConfig
from coldstart.ranker.tables import from_torch_state, to_torch_state, torch_key_map
from coldstart.ranker.train import BuildConfig, create_ranker


def test_torchrec_installed_without_downgrading_lightning_deps() -> None:
    """The Makefile installs torchrec + fbgemm-gpu-cpu with --no-deps (DESIGN.md)."""
    import fbgemm_gpu  # noqa: F401 - registers the torch.ops.fbgemm kernels
    import torchrec
    from torchrec.distributed import DistributedModelParallel  # noqa: F401

    assert importlib.metadata.version("torchrec") == "1.9.2"
    # torchrec's metadata pins torchmetrics==1.0.3; a plain install would have downgraded it.
    assert importlib.metadata.version("torchmetrics") != "1.0.3"
    assert hasattr(torch.ops.fbgemm, "asynchronous_complete_cumsum")
    ebc = torchrec.EmbeddingBagCollection(
        tables=[torchrec.EmbeddingBagConfig(name="t", embedding_dim=4, num_embeddings=10)]
    )
    kjt = torchrec.KeyedJaggedTensor(
        keys=["t"], values=torch.tensor([1, 2, 3]), lengths=torch.tensor([2, 1])
    )
    weight = ebc.embedding_bags["t"].weight
    torch.testing.assert_close(ebc(kjt)["t"], torch.stack([weight[1] + weight[2], weight[3]]))


def _config(history: str, loss: str, hashed: bool) -> RankerConfig:
    return RankerConfig(
        dim=8,
        item=ItemTowerConfig(
            content_hidden=16,
            id_dropout=0.4,
            semantic_ids=True,
            sid_levels=2,
            sid_codewords=4,
            hash_size=97 if hashed else None,
        ),
        user=UserTowerConfig(history=history, history_len=7, hash_size=61 if hashed else None),
        loss=loss,
    )


def _pair(data, config: RankerConfig, build: BuildConfig):
    """(torch model, torchrec model) with the torch model's weights in both."""
    plain, _ = create_ranker(data, config, build)
    rec, _ = create_ranker(data, dataclasses.replace(config, tables="torchrec"), build)
    key_map = torch_key_map(rec)
    assert len(key_map) == 4  # item IDs, semantic IDs, user IDs, history: every table a twin
    rec.load_state_dict(from_torch_state(rec, plain.state_dict()))
    return plain, rec, key_map


def _batch(data, seed: int = 0, labels: bool = False):
    rng = np.random.default_rng(seed)
    hist = data.histories(7)
    users = rng.choice(data.num_users, size=6, replace=False)
    items = [rng.choice(data.num_items, size=k, replace=False) for k in (5, 3, 6, 1, 4, 6)]
    label = [rng.integers(0, 2, size=len(x)).astype(np.float32) for x in items] if labels else None
    weights = [rng.uniform(0.5, 2.0, size=len(x)).astype(np.float32) for x in items]
    return make_batch(users, hist[users], items, labels=label, weights=weights)


def _run(model, batch, dedup: bool, seed: int):
    model.zero_grad()
    torch.manual_seed(seed)  # the same ID-dropout draw in both models
    scores = model(batch, dedup=dedup)
    torch.manual_seed(seed)
    loss = model.loss(batch, dedup=dedup)
    loss.backward()
    grads = {}
    for name, p in model.named_parameters():
        if p.grad is not None:
            g = p.grad.to_dense() if p.grad.is_sparse else p.grad
            grads[name] = g.detach().clone()
    return scores.detach(), loss.detach(), grads


@pytest.mark.parametrize(
    ("history", "loss", "hashed", "rare_mode", "variable_batch"),
    [
        ("pooled", "softmax", False, "content", True),
        ("pooled", "bce", True, "shared", False),
        ("sequence", "softmax", True, "shared", True),
    ],
)
def test_torchrec_tables_equal_torch_tables(
    syn_data, history: str, loss: str, hashed: bool, rare_mode: str, variable_batch: bool
) -> None:
    config = _config(history, loss, hashed)
    build = BuildConfig(rare_threshold=3, rare_mode=rare_mode)
    plain, rec, key_map = _pair(syn_data, config, build)
    for m in rec.modules():
        if hasattr(m, "variable_batch"):
            m.variable_batch = variable_batch
    batch = _batch(syn_data, labels=loss == "bce")
    plain.train(), rec.train()
    for dedup in (True, False):
        s1, l1, g1 = _run(plain, batch, dedup, seed=3)
        s2, l2, g2 = _run(rec, batch, dedup, seed=3)
        torch.testing.assert_close(s1, s2, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(l1, l2, rtol=1e-5, atol=1e-6)
        g2 = to_torch_state(rec, g2)
        assert g1.keys() == g2.keys()
        assert {"item_tower.table.weight", "user_tower.table.weight"} <= g1.keys()
        for name in g1:
            torch.testing.assert_close(g1[name], g2[name], rtol=1e-4, atol=1e-6, msg=name)
    # Eval vectors (no ID dropout) are equal too, for catalogue and new items alike.
    plain.eval(), rec.eval()
    torch.testing.assert_close(plain.item_vectors(), rec.item_vectors(), rtol=1e-5, atol=1e-6)
    hist = torch.as_tensor(syn_data.histories(7))
    users = torch.arange(syn_data.num_users)
    torch.testing.assert_close(
        plain.user_vectors(users, hist), rec.user_vectors(users, hist), rtol=1e-5, atol=1e-6
    )
    new = torch.randn(3, syn_data.content.shape[1])
    rows = plain.item_tower.add_items(new)
    assert torch.equal(rows, rec.item_tower.add_items(new))
    torch.testing.assert_close(plain.item_vectors(rows), rec.item_vectors(rows))


def test_content_warm_start_writes_the_same_rows(syn_data) -> None:
    """combine=swap writes each warm item's projected content into its ID row, in both kinds."""
    config = RankerConfig(dim=8, item=ItemTowerConfig(content_hidden=16, combine="swap"))
    plain, _ = create_ranker(syn_data, config)
    rec, _ = create_ranker(syn_data, dataclasses.replace(config, tables="torchrec"))
    rows = torch.nonzero(plain.item_tower.id_available).flatten()
    assert len(rows) > 100
    with torch.no_grad():
        want = plain.item_tower.content_vectors(rows)
    torch.testing.assert_close(rec.item_tower.table.weight[rows], want)
    torch.testing.assert_close(plain.item_tower.table.weight[rows], want)


@pytest.mark.parametrize("variable_batch", [True, False])
def test_bag_lookup_once_per_request_expanded_to_rows(variable_batch: bool) -> None:
    """A bag looked up for R requests returns the N expanded rows: via a variable-batch KJT
    (TorchRec expands with inverse indices) or via an index after the lookup."""
    from coldstart.ranker.torchrec_tables import TorchRecEmbeddingBag

    torch.manual_seed(0)
    bag = TorchRecEmbeddingBag("h", 20, 4, "mean", padding_idx=19)
    bag.variable_batch = variable_batch
    ids = torch.tensor([[1, 2, 19], [19, 19, 19], [5, 6, 7]])  # request 1 has no history
    expand = torch.tensor([0, 0, 1, 2, 2, 2])
    calls = []
    hook = bag.ebc.register_forward_hook(
        lambda m, i, o: calls.append((i[0].variable_stride_per_key(), i[0].stride_per_key()))
    )
    out = bag(ids, expand=expand)
    hook.remove()
    w = bag.weight
    want = torch.stack([w[[1, 2]].mean(0), torch.zeros(4), w[[5, 6, 7]].mean(0)])[expand]
    torch.testing.assert_close(out, want)
    assert calls == [(variable_batch, [3])]  # looked up for the 3 requests, not the 6 rows


TINY = {"dim": 8, "epochs": 1, "content_hidden": 16, "batch_requests": 32, "history_len": 10}


@pytest.mark.parametrize("name", ["warmstart", "ours"])
def test_torchrec_model_has_the_new_user_path(syn_data, name: str) -> None:
    """A model trained with TorchRec tables gets a HistoryUserMap (its plain torch-tables copy):
    over a warm user's history it gives the vector the model's own tower computes from it."""
    from coldstart.ranker.methods import fit_method, history_user_map
    from coldstart.ranker.mixture import ChannelRanker

    f = fit_method(name, syn_data, params={**TINY, "tables": "torchrec"})
    assert f.history_user is not None
    rankers = dict(f.model.rankers()) if isinstance(f.model, ChannelRanker) else {"": f.model}
    assert rankers and all(r.config.tables == "torchrec" for r in rankers.values())
    u = 3
    hist = syn_data.histories(TINY["history_len"])
    if name == "warmstart":
        tower = f.model.user_tower
        with torch.no_grad():
            want = tower(None, torch.as_tensor(hist[u : u + 1]))[0].numpy()  # TorchRec lookup
            id_row = tower(torch.tensor([u]), torch.full((1, 1), -1))[0, :-1].numpy()
        got = f.history_user(hist[u])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        # The exported user vector = the user-ID row + the history part the map computes.
        np.testing.assert_allclose(got + np.append(id_row, 0.0), f.users[u], rtol=1e-5, atol=1e-5)
    else:
        # Each model channel's user side, as the mixture's map takes it when the channel is kept.
        compared = 0
        for channel, ranker in rankers.items():
            part = history_user_map(channel, ranker, syn_data, {})
            if ranker.user_tower.history is None:
                assert part is None  # an ID-only tower: no history, as with torch tables
                continue
            with torch.no_grad():
                want = ranker.user_tower(None, torch.as_tensor(hist[u : u + 1]))[0].numpy()
            np.testing.assert_allclose(part(hist[u]), want, rtol=1e-5, atol=1e-6)
            compared += 1
        assert compared >= 1
        assert f.history_user is not None and f.history_user.kind == "mixture"
        vec = f.history_user(hist[u])
        assert vec.shape == f.users[u].shape and np.isfinite(vec).all()
