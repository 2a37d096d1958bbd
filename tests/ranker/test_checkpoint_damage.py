"""Issue 20, part 3 (in part): a damaged checkpoint is refused with its path named, never half
loaded: a truncated shard file of a sharded checkpoint, a truncated checkpoint file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp

from coldstart.ranker.checkpoints import CheckpointDamaged
from coldstart.ranker.sharding import TorchRecStrategy, read_whole


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_a_truncated_shard_file_is_refused_with_its_path(tmp_path: Path) -> None:
    table = torch.arange(4000, dtype=torch.float32).reshape(1000, 4)
    dcp.save({"model": {"t.weight": table}}, checkpoint_id=tmp_path / "ck", no_dist=True)
    assert torch.equal(read_whole(tmp_path / "ck")["t.weight"], table)
    (shard,) = (tmp_path / "ck").glob("*.distcp")
    _truncate(shard)
    with pytest.raises(CheckpointDamaged, match=str(tmp_path / "ck")):
        read_whole(tmp_path / "ck")


def test_a_truncated_checkpoint_file_is_refused_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1000)}}, path)
    _truncate(path)
    with pytest.raises(CheckpointDamaged, match=str(path)):
        TorchRecStrategy().load_checkpoint(path)


def test_removing_a_checkpoint_removes_its_shards(tmp_path: Path) -> None:
    """ModelCheckpoint's rotation (save_top_k: keep K) calls strategy.remove_checkpoint: the
    shard directories of that file go with it, and only them."""
    for name in ("step=5.ckpt", "step=10.ckpt"):
        (tmp_path / name).write_bytes(b"x")
        (tmp_path / f"{name}.shards-0a1b2c3d").mkdir()
    TorchRecStrategy().remove_checkpoint(tmp_path / "step=5.ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "step=10.ckpt",
        "step=10.ckpt.shards-0a1b2c3d",
    ]
