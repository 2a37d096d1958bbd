"""Callbacks the resume tests add to `coldstart ranker fit` subprocesses (importable by path)."""

from __future__ import annotations

import os
import signal
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer


class KillAtStep(Callback):
    """SIGKILLs every process of the run (each rank itself) right after the training step
    $COLDSTART_KILL_AT_STEP: no handler, no final save, like `kill -9`."""

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        if trainer.global_step == int(os.environ.get("COLDSTART_KILL_AT_STEP", "-1")):
            os.kill(os.getpid(), signal.SIGKILL)


class KillWhileSaving(Callback):
    """SIGKILLs every rank inside the checkpoint save at step $COLDSTART_KILL_IN_SAVE_AT_STEP:
    after the ranks wrote their table shards, before the checkpoint file naming them exists."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        import coldstart.ranker.sharding as sharding

        original = sharding.save_shards
        step = int(os.environ.get("COLDSTART_KILL_IN_SAVE_AT_STEP", "-1"))

        def save_then_die(*args: Any, **kwargs: Any) -> None:
            original(*args, **kwargs)
            if trainer.global_step == step:
                os.kill(os.getpid(), signal.SIGKILL)

        sharding.save_shards = save_then_die


class KillRankAtStep(Callback):
    """SIGKILLs ONE process, rank $COLDSTART_KILL_RANK, right after the training step
    $COLDSTART_KILL_RANK_AT_STEP, on the first attempt of an elastic job only
    (TORCHELASTIC_RESTART_COUNT 0 or unset): a worker lost mid-epoch, the others left to
    torchrun."""

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        if (
            trainer.global_step == int(os.environ.get("COLDSTART_KILL_RANK_AT_STEP", "-1"))
            and trainer.global_rank == int(os.environ.get("COLDSTART_KILL_RANK", "1"))
            and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
        ):
            os.kill(os.getpid(), signal.SIGKILL)


def assert_same_tensors(a: object, b: object, path: str = "") -> None:
    """Nested dicts / lists of tensors and plain values are equal, tensors bitwise (`path`
    names the first difference)."""
    import torch

    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), path
        for key in a:
            assert_same_tensors(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{path}[{i}]")
    elif torch.is_tensor(a):
        assert torch.equal(a, b), f"{path} differs"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"
