"""Issue 20, part 3, for the encoder's checkpoints (coldstart.ranker.checkpoints.AtomicCheckpointIO):
a save is atomic (a crash during it leaves the previous checkpoint loadable, its leftover is
removed at the next save) and a damaged checkpoint is refused with its path named."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from coldstart.ranker.checkpoints import AtomicCheckpointIO, CheckpointDamaged

REPO = Path(__file__).resolve().parents[2]

# A child that saves step 2 over step 1 and is SIGKILLed inside torch.save, mid-write.
KILLED_SAVE = """
import os, signal, sys, torch
from coldstart.ranker.checkpoints import AtomicCheckpointIO
io, path = AtomicCheckpointIO(), sys.argv[1]
io.save_checkpoint({"step": 1, "w": torch.ones(1000)}, path)
real = torch.save
def dying_save(obj, f, *args, **kwargs):
    f.write(b"PK" + b"x" * 4096)  # part of a file, then the process dies
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = dying_save
io.save_checkpoint({"step": 2, "w": torch.zeros(1000)}, path)
"""


@pytest.mark.slow  # a child process that imports torch and Lightning
def test_a_save_killed_midway_leaves_the_previous_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints" / "last.ckpt"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(path)], env=env, timeout=120)
    assert run.returncode == -signal.SIGKILL
    leftovers = [p for p in path.parent.iterdir() if p != path]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".last.ckpt.tmp-")

    io = AtomicCheckpointIO()
    assert io.load_checkpoint(path)["step"] == 1  # whole, the previous one
    io.save_checkpoint({"step": 3}, path)
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # the dead writer's temp went
    assert io.load_checkpoint(path, weights_only=True)["step"] == 3


@pytest.mark.parametrize("damage", ["truncated", "garbled"])
def test_a_damaged_checkpoint_is_refused_with_its_path(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.arange(5000.0)}}, path)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(data[:64] + bytes(len(data) - 128) + data[-64:])
    with pytest.raises(CheckpointDamaged, match=str(path)):
        AtomicCheckpointIO().load_checkpoint(path)


def test_a_missing_checkpoint_is_not_called_damaged(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        AtomicCheckpointIO().load_checkpoint(tmp_path / "none.ckpt")
