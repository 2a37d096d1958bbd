"""Checkpoints to resume from: `last.ckpt` is the latest step, and it resumes exactly; every
checkpoint file is written atomically and refused whole when damaged (`AtomicCheckpointIO`,
which the ranker and encoder CLIs plug into every trainer).

Lightning's `ModelCheckpoint(save_last=True, monitor=...)` writes last.ckpt only when a top-k
checkpoint is written, so a run whose metric stopped improving keeps an old "last".
`LastCheckpoint` writes only last.ckpt, at every trigger (every N training steps or M minutes,
every K-th epoch end after validation, and the end of training), whatever any metric does; a
monitored ModelCheckpoint beside it keeps the best ones.

Exact resume (the same final weights as an uninterrupted run with the same seed) also needs
what Lightning's checkpoint leaves out:
- the RNG states of every rank (ID dropout draws from torch's generator): `LastCheckpoint`
  stores them (gathered from all ranks) and restores each rank's own when training restarts;
- the data loader's position inside the epoch: the ranker's training loader derives its epoch
  and offset from the training batches consumed by all ranks (`epoch_position`), which its
  data module keeps in the checkpoint (so a resume on another number of processes continues
  the epoch too, up to the world - 1 batches an epoch leaves out to keep ranks equal).
"""

from __future__ import annotations

import os
import pickle
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from lightning.fabric.plugins import CheckpointIO
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn

from coldstart.data.embeddings import fsync_path, remove_stale_temps, temp_sibling
from coldstart.ranker.rng import rng_state, set_rng_state

RNG_KEY = "rng_states"


class CheckpointDamaged(RuntimeError):
    """A checkpoint (file or shards directory) that cannot be read whole: refused, never half
    loaded. The message names the path."""


def refuse_damaged(path: Any, error: BaseException) -> CheckpointDamaged:
    """The error to raise for `path` that failed to load with `error`."""
    return CheckpointDamaged(
        f"damaged checkpoint {path}: {type(error).__name__}: {str(error).strip()[:300]} "
        "(resume from an older checkpoint, or delete this one)"
    )


def all_rng_states() -> list[dict[str, Any]]:
    """Every rank's RNG states, in rank order (collective when a process group is up)."""
    mine = rng_state()
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [mine]
    states: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(states, mine)
    return states


def epoch_position(batches_done: int, batches_per_epoch: int) -> tuple[int, int]:
    """(epoch, batches of it already trained) after `batches_done` training batches, with a
    fixed number of batches per epoch."""
    if batches_per_epoch <= 0:
        return 0, 0
    return divmod(batches_done, batches_per_epoch)


def _training_ends(trainer: Trainer) -> bool:
    """At an epoch end: whether training stops after it (max_epochs, max_steps, a stop)."""
    max_epochs, max_steps = trainer.max_epochs, trainer.max_steps
    return (
        (max_epochs is not None and max_epochs >= 0 and trainer.current_epoch + 1 >= max_epochs)
        or (max_steps is not None and max_steps >= 0 and trainer.global_step >= max_steps)
        or trainer.should_stop
    )


class LastCheckpoint(ModelCheckpoint):
    """Writes `last.ckpt` (only that file) every `every_n_train_steps` steps and at the end of
    every `every_n_epochs`-th training epoch (after its validation), and makes it resume
    exactly (RNG states).

    dirpath: the checkpoint directory (`--ckpt_path last` finds last.ckpt there).
    every_n_train_steps: mid-epoch cadence in steps; 0 = none.
    every_n_minutes: mid-epoch cadence in wall-clock minutes (rank 0's clock decides for every
      rank, since a save is collective); None = none. Both may be given.
    every_n_epochs: write at the end of every N-th epoch; 0 = not at epoch ends. The end of
      training (max_epochs, max_steps, a stop) is always written, whatever the cadence. With
      short epochs the epoch ends are what a save costs most (benchmarks/checkpoint.py).
    """

    def __init__(
        self,
        dirpath: str | None = None,
        every_n_train_steps: int = 0,
        every_n_minutes: float | None = None,
        every_n_epochs: int = 1,
    ) -> None:
        interval = None if every_n_minutes is None else timedelta(minutes=every_n_minutes)
        super().__init__(
            dirpath=dirpath,
            save_last=True,
            save_top_k=0,
            # (Lightning takes one trigger; the hooks below also write at every epoch end.)
            every_n_train_steps=None if interval is not None else every_n_train_steps or None,
            train_time_interval=interval,
            every_n_epochs=None if every_n_train_steps or interval is not None else 1,
            enable_version_counter=False,  # always the same last.ckpt, never last-v1.ckpt
        )
        self._every_n_train_steps = every_n_train_steps
        self._every_n_epochs_last = every_n_epochs
        self._rng_to_restore: dict[str, Any] | None = None

    # -------------------------------------------------------------- when to write
    def _write(self, trainer: Trainer) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run or trainer.state.fn != TrainerFn.FITTING:
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        every = self._every_n_train_steps
        due = every >= 1 and trainer.global_step % every == 0
        if self._train_time_interval is not None:
            now = time.monotonic()
            since = now - (self._last_time_checked or now)
            late = since >= self._train_time_interval.total_seconds()
            if trainer.strategy.broadcast(late):
                self._last_time_checked, due = now, True
        if due:
            self._write(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Runs after the epoch's validation: the checkpoint holds its metrics and loop state.
        every = self._every_n_epochs_last
        if _training_ends(trainer) or (every >= 1 and (trainer.current_epoch + 1) % every == 0):
            self._write(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        pass  # the epoch end writes; a top-k decision is not ours to make

    # -------------------------------------------------------------- RNG states
    def state_dict(self) -> dict[str, Any]:
        # Called on every rank while the checkpoint is assembled: gather every rank's states.
        return {**super().state_dict(), RNG_KEY: all_rng_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        states = state_dict.get(RNG_KEY) or []
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        # A different world size cannot replay the same streams: keep the seeded ones.
        self._rng_to_restore = states[rank] if len(states) == world else None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)  # starts the clock of every_n_minutes
        # Restored here, after the sanity check and the loader's setup, right before the first
        # step: what an uninterrupted run would draw next.
        if self._rng_to_restore is not None:
            set_rng_state(self._rng_to_restore)
            self._rng_to_restore = None


# Lightning's `TorchCheckpointIO` writes through an fsspec transaction whose temporary file sits
# in the system's temp directory: on another filesystem the final move is a copy onto the target,
# and a crash during it leaves a half-written checkpoint (and nothing is fsynced). Here a local
# checkpoint is written to a hidden file beside its target (`.<name>.tmp-<pid>`), fsynced and
# renamed onto it, so a crash during a save leaves the previous checkpoint whole; the leftovers
# of killed writers are removed at the next save. A checkpoint that does not load whole
# (truncated, garbled) raises `CheckpointDamaged` naming its path instead of being half loaded.
# Remote URLs (`s3://...`) keep Lightning's own write.
class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO with atomic local saves and a refusal of damaged files."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(
                f"{type(self).__name__} takes no storage_options, got {storage_options}"
            )
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path.parent)
        tmp = temp_sibling(path)
        with open(tmp, "wb") as handle:
            torch.save(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_path(path.parent)  # the rename itself survives a power cut

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        try:
            return super().load_checkpoint(
                path, map_location=map_location, weights_only=weights_only
            )
        except FileNotFoundError:
            raise
        except pickle.UnpicklingError as error:
            if "weights only load failed" in str(error).lower():
                raise  # an object weights_only refuses: not damage
            raise refuse_damaged(path, error) from error
        except (RuntimeError, EOFError, OSError, ValueError) as error:  # truncated or garbled
            raise refuse_damaged(path, error) from error


def with_atomic_checkpoint_io(plugins: Any) -> list[Any]:
    """Trainer `plugins` with AtomicCheckpointIO added unless a CheckpointIO is already there
    (the ranker and encoder CLIs pass every trainer through it)."""
    plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins] if plugins else []
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(AtomicCheckpointIO())
    return plugins
