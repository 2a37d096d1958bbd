"""Issue 20, parts 2 and 3, for `coldstart encoder fit`: a run killed with SIGKILL after a
checkpoint (at an epoch end, then mid-epoch) and resumed with `--ckpt_path last` ends bitwise
where an uninterrupted run with the same seed and checkpoint cadence ends (weights, optimizer
and scheduler state, logged metrics): CPU, one thread, 2 DataLoader workers reading the shard
stream. The command writes last.ckpt atomically and refuses a damaged one."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from coldstart.encoders import create_encoder
from coldstart.encoders.datamodule import PairBatches
from tests.ranker.resume_checks import assert_same_tensors

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "encoders" / "tiny-clip.yaml"
KILL = "--trainer.callbacks+=tests.ranker.resume_checks.KillAtStep"  # $COLDSTART_KILL_AT_STEP


def _stream(pair_shards: dict, workers: int, resume_after: int | None = None) -> list[list[str]]:
    """The keys of one training epoch (7 batches of 8, epoch 1), whole or resumed after some."""
    ds = PairBatches(
        pair_shards["train_paths"],
        create_encoder("tiny-clip").preprocessor(),
        batch_size=8,
        train=True,
        seed=3,
        buffer=16,
        steps_per_rank=7,
    )
    ds.epoch = 1
    if resume_after is not None:
        ds.resume(1, resume_after)
    loader = DataLoader(ds, batch_size=None, num_workers=workers)
    return [batch.keys for batch in loader]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_resumed_stream_continues_the_epoch_in_order(pair_shards: dict, workers: int) -> None:
    """Resumed after k batches, the loader yields exactly the uninterrupted epoch's batches
    k, k+1, ...: with 2 workers (unequal quotas 4 + 3) worker w plays role (w + k) % 2."""
    whole = _stream(pair_shards, workers)
    assert len(whole) == 7 and len({k for keys in whole for k in keys}) == 56
    for k in (1, 4, 6, 7):
        assert _stream(pair_shards, workers, resume_after=k) == whole[k:], k


@pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")
def test_the_cli_writes_last_ckpt_atomically_and_refuses_damage(
    pair_shards: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`encoder fit` wires LastCheckpoint (beside the kept checkpoints) and AtomicCheckpointIO,
    and a truncated last.ckpt is refused with its path named."""
    from coldstart.commands.encoder import _cli_class
    from coldstart.encoders.datamodule import ImageTextDataModule
    from coldstart.encoders.lit import LitContrastive
    from coldstart.ranker.checkpoints import AtomicCheckpointIO, CheckpointDamaged, LastCheckpoint

    monkeypatch.chdir(tmp_path)
    root = tmp_path / "run"
    args = ["--config", str(CONFIG), "--data.train", pair_shards["train"]]
    args += ["--data.val", pair_shards["val"], "--trainer.default_root_dir", str(root)]
    cli = _cli_class()(LitContrastive, ImageTextDataModule, args=args, run=False)
    trainer = cli.trainer
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    (last,) = [c for c in trainer.callbacks if isinstance(c, LastCheckpoint)]
    assert last.dirpath == str(root / "checkpoints") and last._every_n_train_steps == 10
    assert trainer.checkpoint_callback is not last and not trainer.checkpoint_callback.save_last

    path = root / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 half a checkpoint")
    with pytest.raises(CheckpointDamaged, match=str(path)):
        trainer.fit(cli.model, cli.datamodule, ckpt_path="last")


def _fit(pair_shards: dict, cwd: Path, *extra: str, kill_at: int = -1) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        "COLDSTART_KILL_AT_STEP": str(kill_at),
    }
    cmd = [
        sys.executable, "-m", "coldstart", "encoder", "fit", "--config", str(CONFIG),
        "--data.train", pair_shards["train"],
        "--data.val", pair_shards["val"],
        "--data.num_workers", "2",
        "--data.samples_per_epoch", "224",  # 7 steps of 32 per epoch
        "--trainer.max_epochs", "2",
        "--trainer.default_root_dir", str(cwd / "run"),
        "--trainer.deterministic", "true",
        "--trainer.enable_progress_bar", "false",
        "--trainer.num_sanity_val_steps", "0",
        "--trainer.log_every_n_steps", "1",
        "--last.every_n_train_steps", "5",  # last.ckpt at steps 5, 7 (epoch end), 10, 14
        "--model.warmup_steps", "3",  # and a cosine schedule over the 14 steps
        KILL, *extra,
    ]  # fmt: skip
    # Output to a file, not a pipe: a killed run's DataLoader workers would hold a pipe open.
    with open(cwd / "log.txt", "a") as log:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=log)


def _wait(proc: subprocess.Popen, cwd: Path, code: int = 0) -> None:
    assert proc.wait(timeout=300) == code, (cwd / "log.txt").read_text()[-3000:]


def _last(cwd: Path) -> dict:
    path = cwd / "run" / "checkpoints" / "last.ckpt"
    return torch.load(path, map_location="cpu", weights_only=True)


def _final_metrics(cwd: Path) -> dict[str, dict[str, str]]:
    """The last logged training row and validation row of the latest run in `cwd`."""
    latest = max(
        (cwd / "run" / "lightning_logs").glob("version_*/metrics.csv"),
        key=lambda p: int(p.parent.name.split("_")[1]),
    )
    rows = list(csv.DictReader(latest.open()))
    train = [r for r in rows if r.get("train_loss")][-1]
    val = [r for r in rows if r.get("val_i2t_r1")][-1]
    return {"train": train, "val": {k: v for k, v in val.items() if k.startswith("val_")}}


@pytest.mark.slow
def test_a_killed_encoder_fit_resumes_bitwise(pair_shards: dict, tmp_path: Path) -> None:
    """Killed at step 8 (resumes from the end of epoch 0, step 7), then killed again at step 12
    (resumes from step 10, 3 batches into epoch 1): it ends as the uninterrupted run does."""
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    whole.mkdir(), killed.mkdir()
    uninterrupted = _fit(pair_shards, whole)  # side by side with the first killed run
    _wait(_fit(pair_shards, killed, kill_at=8), killed, -signal.SIGKILL)
    saved = _last(killed)
    assert saved["global_step"] == 7  # step 8 was lost with the process
    assert saved["ImageTextDataModule"] == {"epoch": 0, "batches": 7, "world": 1}  # epoch end
    resumed = _fit(pair_shards, killed, "--ckpt_path", "last", kill_at=12)
    _wait(resumed, killed, -signal.SIGKILL)
    saved = _last(killed)
    assert saved["global_step"] == 10  # steps 11 and 12 were lost with the process
    assert saved["ImageTextDataModule"] == {"epoch": 1, "batches": 3, "world": 1}  # mid-epoch
    _wait(_fit(pair_shards, killed, "--ckpt_path", "last"), killed)
    _wait(uninterrupted, whole)

    a, b = _last(whole), _last(killed)
    assert a["global_step"] == b["global_step"] == 14
    assert a["state_dict"] and all(torch.is_tensor(t) for t in a["state_dict"].values())
    assert_same_tensors(a["state_dict"], b["state_dict"], "state_dict")
    assert_same_tensors(a["optimizer_states"], b["optimizer_states"], "optimizer_states")
    assert_same_tensors(a["lr_schedulers"], b["lr_schedulers"], "lr_schedulers")
    assert _final_metrics(whole) == _final_metrics(killed)
