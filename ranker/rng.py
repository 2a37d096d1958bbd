"""A process's random-number generator states, to save beside a checkpoint and restore on resume.

Exact resume (the same weights as an uninterrupted run) needs every generator a training step may
draw from: python's `random`, numpy's global generator, torch's CPU generator (ID dropout) and
CUDA's when it is in use. Plain tensors and numbers only, so a checkpoint holding them stays
loadable with `torch.load(weights_only=True)`. No Lightning here: the plain loop
(ranker.train.fit_ranker) and the Lightning callback (ranker.checkpoints) both use it.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def rng_state() -> dict[str, Any]:
    """This process's RNG states (python, numpy, torch CPU, and CUDA when present)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        # Tensors and plain numbers only: the checkpoint stays loadable with weights_only=True.
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
