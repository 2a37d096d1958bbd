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


@pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")
@pytest.mark.parametrize("strategy", ["auto", "torchrec"])
def test_ranker_fit_writes_atomically_and_refuses_a_damaged_last(
    strategy: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ranker fit` plugs AtomicCheckpointIO into every strategy: a truncated last.ckpt is
    refused with its path named (not only by the TorchRec strategy's own loader)."""
    from coldstart.ranker.checkpoints import AtomicCheckpointIO
    from coldstart.ranker.lit import LitRanker, RankerCLI, RankerDataModule
    from coldstart.ranker.sharding import register_strategy

    register_strategy()
    monkeypatch.chdir(tmp_path)
    config = Path(__file__).resolve().parents[2] / "configs" / "ranker" / "synthetic.yaml"
    args = ["--config", str(config), "--trainer.default_root_dir", str(tmp_path / "run")]
    args += ["--trainer.logger=false", "--trainer.enable_progress_bar=false"]
    if strategy == "torchrec":
        args += ["--model.method=warmstart", "--model.params.tables=torchrec"]
        args += ["--trainer.strategy=torchrec", "--trainer.accelerator=cpu"]
    cli = RankerCLI(LitRanker, RankerDataModule, args=args, run=False)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1000)}}, path)
    _truncate(path)
    # (conftest.no_leaked_process_group closes the 1-process group the load failure leaves.)
    with pytest.raises(CheckpointDamaged, match=str(path)):
        cli.trainer.fit(cli.model, cli.datamodule, ckpt_path=str(path))
