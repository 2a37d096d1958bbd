"""Per-rank code of the sharded checkpoint tests (tests/ranker/test_sharded_checkpoint.py):
save with torch.distributed.checkpoint under one plan and world size, load under another."""

from __future__ import annotations

from pathlib import Path

import torch

from coldstart.ranker.sharding import (
    ShardingConfig,
    gather_full,
    is_sharded,
    load_shards,
    save_shards,
    shard_model,
)
from coldstart.ranker.train import create_ranker
from tests.ranker.sharded_checks import Step, _batch, _config, _data


def _sharded(model: torch.nn.Module, constraints: dict[str, str]) -> torch.nn.Module:
    sharding = ShardingConfig(
        constraints=constraints, table_optimizer="rowwise_adagrad", table_lr=0.3
    )
    dmp, plan = shard_model(Step(model), sharding, torch.device("cpu"))
    kinds = {t: spec.sharding_type for m in plan.plan.values() for t, spec in m.items()}
    assert all(kinds[t] == kind for t, kind in constraints.items()), kinds
    return dmp


def _tables(dmp: torch.nn.Module) -> dict[str, torch.Tensor]:
    tables = {k: v for k, v in dmp.state_dict().items() if is_sharded(v)}
    assert len(tables) == 4, list(tables)  # item_id, item_sid, user_id, user_history
    return tables


def save(rank: int, world: int, root: str, constraints: dict[str, str]) -> None:
    """Train one step (so the fused Adagrad state is not zero), save the shards, and keep the
    whole tables and optimizer state (gathered here, for the test only) as the reference."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = _data()
    dmp = _sharded(create_ranker(data, _config("pooled"))[0], constraints)
    loss, _ = dmp(_batch(data, rank, 0), True)
    loss.backward()
    fused = dmp.fused_optimizer.state_dict()["state"]
    save_shards(Path(root) / "ck", _tables(dmp), fused, chunk_bytes=1024)  # many blocks
    reference = {"tables": gather_full(_tables(dmp)), "fused": gather_full(fused)}
    if rank == 0:
        torch.save(reference, Path(root) / "reference.pt")


def load(rank: int, world: int, root: str, constraints: dict[str, str]) -> None:
    """A freshly initialised model under another plan / world size, loaded from the shards,
    holds exactly the saved tables and fused optimizer state."""
    torch.set_num_threads(1)
    torch.manual_seed(1)  # other initial values than the saved model's
    data = _data()
    dmp = _sharded(create_ranker(data, _config("pooled"))[0], constraints)
    tables = _tables(dmp)
    fused = dmp.fused_optimizer.state_dict()
    load_shards(Path(root) / "ck", tables, fused["state"], chunk_bytes=4096)
    dmp.load_state_dict(dict(tables), strict=False)
    dmp.fused_optimizer.load_state_dict(fused)
    got = {
        "tables": gather_full(_tables(dmp)),
        "fused": gather_full(dmp.fused_optimizer.state_dict()["state"]),
    }
    if rank == 0:
        want = torch.load(Path(root) / "reference.pt", weights_only=False)
        for part in ("tables", "fused"):
            assert set(got[part]) == set(want[part]) and want[part], part
            for key in want[part]:
                torch.testing.assert_close(got[part][key], want[part][key], rtol=0, atol=0)
