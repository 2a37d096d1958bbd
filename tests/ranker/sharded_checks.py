"""Checks that run inside each of 2 gloo processes (ranker.sharding.run_distributed).

Imported by tests/ranker/test_sharding.py; a failed assertion in any rank fails the test with
that rank's traceback.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from coldstart.ranker.data import make_batch
from coldstart.ranker.model import ItemTowerConfig, RankerConfig, UserTowerConfig
from coldstart.ranker.sharding import (
    CollectiveBytes,
    ShardingConfig,
    create_sharders,
    gather_full,
    load_fused_state,
    shard_model,
)
from coldstart.ranker.tables import to_torch_state, torch_key_map
from coldstart.ranker.train import BuildConfig, create_ranker

TOL = {"rtol": 1e-4, "atol": 1e-5}


class Step(nn.Module):
    """What a training step runs, as a forward (DDP syncs the dense gradients of a forward)."""

    def __init__(self, ranker: nn.Module) -> None:
        super().__init__()
        self.ranker = ranker

    def forward(self, batch, dedup: bool):  # noqa: ANN001, ANN201
        with torch.no_grad():
            scores = self.ranker(batch, dedup=dedup)
        return self.ranker.loss(batch, dedup=dedup), scores


def _data():
    from coldstart.ranker.lit import synthetic_ranker_data

    return synthetic_ranker_data(n_items=200, n_users=80, seed=0)


def _config(history: str) -> RankerConfig:
    return RankerConfig(
        dim=8,
        tables="torchrec",
        item=ItemTowerConfig(
            content_hidden=16,
            id_dropout=0.0,  # no randomness: sharded and unsharded see the same rows
            semantic_ids=True,
            sid_levels=2,
            sid_codewords=4,
            hash_size=97,
        ),
        user=UserTowerConfig(history=history, history_len=6, hash_size=61),
    )


def _batch(data, rank: int, step: int = 0):
    """Equal request and row counts on every rank (gloo's row-wise pooled tables need equal
    per-rank batch sizes), different content."""
    rng = np.random.default_rng(100 * rank + step)
    hist = data.histories(6)
    users = rng.choice(data.num_users, size=6, replace=False)
    items = [rng.choice(data.num_items, size=k, replace=False) for k in (5, 3, 6, 1, 4, 6)]
    return make_batch(users, hist[users], items)


def _same_on_all_ranks(state: dict) -> None:
    total = torch.tensor([float(sum(v.double().sum() for v in state.values()))])
    gathered = [torch.zeros(1) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, total)
    assert all(torch.equal(g, gathered[0]) for g in gathered), "ranks built different models"


def _dense_grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        n.removeprefix("ranker."): p.grad.clone()
        for n, p in model.named_parameters()
        if p.grad is not None and not hasattr(p, "_in_backward_optimizers")
    }


def dedup_equals_plain_and_unsharded(rank: int, world: int) -> None:
    """Sharded over 2 processes (row-, column- and table-wise tables, variable-batch user
    lookups) the ranker gives the unsharded torch model's scores, loss and gradients, with
    request dedup and without; dedup sends about k times fewer user-feature bytes."""
    torch.set_num_threads(1)
    data = _data()
    user_group = dist.new_group(backend="gloo")
    for history, constraints, variable_batch in (
        ("pooled", {"user_id": "row_wise", "item_id": "column_wise"}, True),
        ("sequence", {"user_history_seq": "row_wise", "item_sid": "column_wise"}, False),
    ):
        config = _config(history)
        build = BuildConfig(rare_threshold=2, rare_mode="shared")
        model, _ = create_ranker(data, config, build)
        reference, _ = create_ranker(data, dataclasses.replace(config, tables="torch"), build)
        reference.load_state_dict(to_torch_state(model, model.state_dict()))
        step = Step(model)
        start = {k: v.detach().clone() for k, v in step.state_dict().items()}
        _same_on_all_ranks(start)
        # SGD with lr 1 in the fused table optimizer: a row's change is minus its gradient.
        sharding = ShardingConfig(
            constraints=constraints,
            table_optimizer="sgd",
            table_lr=1.0,
            variable_batch=variable_batch,  # TorchRec's inverse indices, or index after
        )
        sharders = create_sharders(sharding, groups={"ranker.user_tower": user_group})
        dmp, plan = shard_model(step, sharding, torch.device("cpu"), sharders=sharders)
        kinds = {t: spec.sharding_type for m in plan.plan.values() for t, spec in m.items()}
        assert all(kinds[t] == kind for t, kind in constraints.items()), kinds

        batch = _batch(data, rank)
        reference.zero_grad()
        ref_loss = reference.loss(batch, dedup=False)
        ref_loss.backward()
        ref_scores = reference(batch, dedup=False).detach()
        ref_grads = {}
        for name, p in reference.named_parameters():
            g = p.grad.to_dense() if p.grad.is_sparse else p.grad.clone()
            dist.all_reduce(g)
            # DDP averages dense gradients over ranks; TorchRec divides the tables' by the world
            # size too, so every parameter sees the gradient of the mean loss over ranks.
            ref_grads[name] = g / world
        tables = set(torch_key_map(model).values())  # torch names of the sharded tables

        user_bytes = {}
        for dedup in (True, False):
            dmp.load_state_dict(
                dict(start)
            )  # same start for both paths (DMP renames keys in place)
            dmp.zero_grad()
            with CollectiveBytes({user_group: "user"}) as counter:
                loss, scores = dmp(batch, dedup)
                loss.backward()
            user_bytes[dedup] = counter.bytes["user"]
            torch.testing.assert_close(loss.detach(), ref_loss.detach(), **TOL)
            torch.testing.assert_close(scores, ref_scores, **TOL)
            for name, grad in _dense_grads(dmp).items():
                torch.testing.assert_close(grad, ref_grads[name], **TOL, msg=name)
            after = gather_full(dmp.state_dict())
            if rank == 0:
                before = to_torch_state(model, {k[7:]: v for k, v in start.items()})
                after = to_torch_state(model, {k[7:]: v for k, v in after.items()})
                for name in tables:
                    delta = after[name] - before[name]
                    torch.testing.assert_close(-delta, ref_grads[name], **TOL, msg=name)
        rows, requests = len(batch.item_ids), len(batch.user_ids)
        # Dedup: the user features cross the all-to-all once per request, not once per row.
        assert user_bytes[False] / user_bytes[True] > 0.8 * rows / requests, user_bytes


def fused_state_survives_a_checkpoint(rank: int, world: int) -> None:
    """Whole tables + row-wise Adagrad state gathered from 2 processes and loaded into a fresh
    sharded model continue training exactly like the original."""
    torch.set_num_threads(1)
    data = _data()
    config = _config("pooled")
    model, _ = create_ranker(data, config)
    start = {k: v.detach().clone() for k, v in Step(model).state_dict().items()}
    sharding = ShardingConfig(table_optimizer="rowwise_adagrad", table_lr=0.3)
    a, _ = shard_model(Step(model), sharding, torch.device("cpu"))
    loss, _ = a(_batch(data, rank, 0), True)
    loss.backward()
    weights = gather_full(a.state_dict())
    fused = gather_full(a.fused_optimizer.state_dict()["state"])
    payload = [weights, fused]
    dist.broadcast_object_list(payload, src=0)  # as if every rank read the checkpoint file
    weights, fused = payload
    assert fused and all("momentum1" in next(iter(v)) for v in fused.values())

    fresh, _ = create_ranker(data, config)
    fresh.load_state_dict({k[7:]: v for k, v in start.items()})
    b, _ = shard_model(Step(fresh), sharding, torch.device("cpu"))
    b.load_state_dict(weights)
    assert load_fused_state(b, fused) > 0
    for model_ in (a, b):
        loss, _ = model_(_batch(data, rank, 1), True)
        loss.backward()
    wa, wb = gather_full(a.state_dict()), gather_full(b.state_dict())
    if rank == 0:
        for key in wa:
            if "embedding" in key:
                torch.testing.assert_close(wa[key], wb[key], msg=key)


def all_checks(rank: int, world: int) -> None:
    """Both checks in one pair of processes (starting the processes costs more than the work)."""
    dedup_equals_plain_and_unsharded(rank, world)
    fused_state_survives_a_checkpoint(rank, world)


try:  # the Lightning callback below is used by test_cli's sharded run (class path in --trainer)
    import lightning as L

    class DumpVectors(L.Callback):
        """At the end of `fit`, every rank computes item and user vectors with the (sharded)
        model in memory; rank 0 saves them to <default_root_dir>/trained_vectors.npz."""

        def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            data = trainer.datamodule.data
            items, users, _ = pl_module.vectors()  # the served vectors (a mixture's included)
            if trainer.global_rank == 0:
                np.savez(
                    f"{trainer.default_root_dir}/trained_vectors.npz",
                    item_ids=data.item_ids,
                    items=items[: data.num_items],
                    user_ids=data.user_ids,
                    users=users,
                )

except ImportError:  # pragma: no cover
    pass
