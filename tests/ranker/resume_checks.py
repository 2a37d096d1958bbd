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
