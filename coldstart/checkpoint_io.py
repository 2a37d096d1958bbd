"""`AtomicCheckpointIO`: Lightning checkpoint files written atomically, refused whole when damaged.

Lightning's `TorchCheckpointIO` writes through an fsspec transaction whose temporary file sits
in the system's temp directory: on another filesystem the final move is a copy onto the target,
and a crash during it leaves a half-written checkpoint (and nothing is fsynced). Here a local
checkpoint is written to a hidden file beside its target (`.<name>.tmp-<pid>`), fsynced and
renamed onto it, so a crash during a save leaves the previous checkpoint whole; the leftovers
of killed writers are removed at the next save. A checkpoint that does not load whole
(truncated, garbled) raises `CheckpointDamaged` naming its path instead of being half loaded.
Remote URLs (`s3://...`) keep Lightning's own write.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from coldstart.data.embeddings import fsync_path, remove_stale_temps, temp_sibling
from coldstart.ranker.checkpoints import refuse_damaged


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
