"""Issue 20, part 2: last.ckpt is the latest step, and a run killed with SIGKILL after a
checkpoint, resumed with `--ckpt_path last`, ends bitwise where an uninterrupted run ends
(weights, optimizer state, validation metrics): CPU, one thread, same seed and cadence."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from coldstart.ranker.sharding import read_whole
from tests.ranker.resume_checks import assert_same_tensors

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "ranker" / "synthetic.yaml"  # 12 steps per epoch, last.ckpt every 5
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
KILL = "--trainer.callbacks+=tests.ranker.resume_checks.KillAtStep"
KILL_IN_SAVE = "--trainer.callbacks+=tests.ranker.resume_checks.KillWhileSaving"


def _fit(
    cwd: Path, *extra: str, kill_at: int = -1, kill_in_save_at: int = -1
) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        "COLDSTART_KILL_AT_STEP": str(kill_at),
        "COLDSTART_KILL_IN_SAVE_AT_STEP": str(kill_in_save_at),
    }
    cmd = [sys.executable, "-m", "coldstart", "ranker", "fit", "--config", str(CONFIG), *QUIET]
    return subprocess.run(
        [*cmd, KILL, KILL_IN_SAVE, *extra],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _last(cwd: Path) -> dict:
    path = cwd / "runs/ranker/synthetic/checkpoints/last.ckpt"
    return torch.load(path, map_location="cpu", weights_only=False)


def _final_val(cwd: Path) -> dict[str, str]:
    """The last validation row logged by the latest run in `cwd`."""
    latest = max((cwd / "runs/ranker/synthetic/logs").glob("version_*/metrics.csv"))
    rows = [r for r in csv.DictReader(latest.open()) if r.get("val/cold/recall@20")]
    return {k: v for k, v in rows[-1].items() if k.startswith("val/")}


def _kill_and_resume(tmp_path: Path, kill_at: int, *extra: str, in_save: bool = False) -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    whole.mkdir(), killed.mkdir()
    run = _fit(whole, *extra)
    assert run.returncode == 0, run.stderr[-3000:]

    kill = {"kill_in_save_at": kill_at} if in_save else {"kill_at": kill_at}
    crash = _fit(killed, *extra, **kill)
    assert crash.returncode == -signal.SIGKILL, crash.stderr[-3000:]
    saved = _last(killed)["global_step"]
    assert 0 < saved < kill_at  # killed after a checkpoint, steps past it lost
    resumed = _fit(killed, *extra, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    assert_same_end(whole, killed, 24 // (2 if "--trainer.devices=2" in extra else 1))


def assert_same_end(whole: Path, killed: Path, steps: int) -> None:
    """The runs in `whole` and `killed` ended at `steps` with the same weights, optimizer state
    (sharded tables and fused state included) and final validation metrics, bitwise."""
    a, b = _last(whole), _last(killed)
    assert a["global_step"] == b["global_step"] == steps
    assert_same_tensors(a["state_dict"], b["state_dict"], "state_dict")
    assert_same_tensors(a["optimizer_states"], b["optimizer_states"], "optimizer_states")
    shards = "torchrec_shards"  # sharded tables + TorchRec's fused optimizer state (DCP)
    assert (shards in a) == (shards in b)
    if shards in a:
        dirs = [
            cwd / "runs/ranker/synthetic/checkpoints" / c[shards]["dir"]
            for cwd, c in ((whole, a), (killed, b))
        ]
        for part in ("model", "fused"):
            wa, wb = (read_whole(d, part) for d in dirs)
            assert wa, part
            assert_same_tensors(wa, wb, part)
    assert _final_val(whole) == _final_val(killed)


def test_last_is_the_latest_step_whatever_the_metric(tmp_path: Path) -> None:
    """last.ckpt follows the steps (every 5 and each epoch end), not the monitored best."""
    run = _fit(tmp_path, "--trainer.max_epochs=1", kill_at=8)
    assert run.returncode == -signal.SIGKILL
    assert _last(tmp_path)["global_step"] == 5  # the mid-epoch checkpoint
    run = _fit(tmp_path, "--trainer.max_epochs=2")  # a fresh run: overwrites last.ckpt
    assert run.returncode == 0, run.stderr[-3000:]
    assert _last(tmp_path)["global_step"] == 24


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", [7, 14])  # mid-epoch 0 (ckpt at 5); epoch 1 (ckpt at 12)
def test_killed_run_resumes_bitwise(tmp_path: Path, kill_at: int) -> None:
    _kill_and_resume(tmp_path, kill_at)


TWO = ["--trainer.devices=2", "--trainer.max_epochs=2"]  # 6 steps per epoch and rank
SHARDED = ["--model.method=warmstart", "--model.params.tables=torchrec"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra",
    [
        [*TWO, "--trainer.strategy=ddp"],
        [*TWO, *SHARDED, "--trainer.strategy=torchrec"],  # fused optimizer state resumes too
    ],
    ids=["ddp", "torchrec"],
)
def test_killed_two_process_run_resumes_bitwise(tmp_path: Path, extra: list[str]) -> None:
    _kill_and_resume(tmp_path, 11, *extra)  # ckpt at 10, mid-epoch 1 of both ranks


def test_a_time_cadence_writes_last_mid_epoch(tmp_path: Path) -> None:
    """every_n_minutes: last.ckpt is rewritten once the interval has passed (0: every step)."""
    import lightning as L

    from coldstart.ranker.checkpoints import LastCheckpoint
    from coldstart.ranker.lit import LitRanker, RankerDataModule

    seen: list[tuple[int, int]] = []

    class Watch(L.Callback):
        def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
            if trainer.global_step:
                saved = torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"]
                seen.append((trainer.global_step, saved))

    trainer = L.Trainer(
        max_steps=4,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Watch(), LastCheckpoint(str(tmp_path), every_n_minutes=0)],
    )
    model = LitRanker("warmstart", {"dim": 8, "epochs": 1, "batch_requests": 32})
    trainer.fit(model, RankerDataModule(dataset="synthetic"))
    assert seen == [(1, 1), (2, 2), (3, 3)]


@pytest.mark.parametrize(("every", "saved"), [(1, [12, 24, 36]), (2, [24, 36]), (0, [36])])
def test_epoch_ends_follow_every_n_epochs_and_the_end_is_always_written(
    tmp_path: Path, every: int, saved: list[int]
) -> None:
    """every_n_epochs: the epoch ends written (12 steps an epoch, 3 epochs); the last always."""
    import lightning as L

    from coldstart.ranker.checkpoints import LastCheckpoint
    from coldstart.ranker.lit import LitRanker, RankerDataModule

    steps: list[int] = []

    class Recording(LastCheckpoint):
        def _save_last_checkpoint(self, trainer: L.Trainer, *args: object) -> None:
            steps.append(trainer.global_step)
            super()._save_last_checkpoint(trainer, *args)

    trainer = L.Trainer(
        max_epochs=3,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[Recording(str(tmp_path), every_n_epochs=every)],
    )
    model = LitRanker("warmstart", {"dim": 8, "epochs": 3, "batch_requests": 32})
    trainer.fit(model, RankerDataModule(dataset="synthetic"))
    assert steps == saved
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 36


@pytest.mark.slow
def test_a_two_process_sharded_run_resumes_on_one(tmp_path: Path) -> None:
    """2 -> 1 process through Lightning: the sharded checkpoint reshards onto one process and
    the next epoch is a whole one (24 batches in all: 6 steps of 2 ranks, then 12 steps)."""
    run = _fit(
        tmp_path, *SHARDED, "--trainer.strategy=torchrec", *TWO[:1], "--trainer.max_epochs=1"
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert _last(tmp_path)["global_step"] == 6
    one = [*SHARDED, "--trainer.strategy=torchrec", "--trainer.devices=1", "--ckpt_path", "last"]
    run = _fit(tmp_path, *one, "--trainer.max_epochs=2")
    assert run.returncode == 0, run.stderr[-3000:]
    last = _last(tmp_path)
    assert last["global_step"] == 18 and last["RankerDataModule"]["batches"] == 24
    assert float(_final_val(tmp_path)["val/cold/recall@20"]) > 0


@pytest.mark.slow
def test_a_run_killed_while_saving_resumes_from_the_previous_checkpoint(tmp_path: Path) -> None:
    """Killed inside the save at step 10, after the ranks wrote their shards but before the
    checkpoint file: last.ckpt still names step 6's complete shards, the run resumes from it and
    ends bitwise where the uninterrupted run ends; the orphaned shards are then removed."""
    extra = [*TWO, *SHARDED, "--trainer.strategy=torchrec"]
    _kill_and_resume(tmp_path, 10, *extra, in_save=True)
    shards = list((tmp_path / "killed/runs/ranker/synthetic/checkpoints").glob("*.shards-*"))
    assert len(shards) == 1
