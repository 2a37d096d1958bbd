"""Elastic restarts under torchrun: every attempt gets its own process-group keys.

`torchrun --max-restarts N` restarts the whole worker group when one worker dies, with the same
command line; `--ckpt_path last` then resumes from the latest last.ckpt (Lightning starts fresh,
with a warning, when there is none yet), so the job finishes by itself and ends where an
uninterrupted run ends (ranker.checkpoints).

One PyTorch hazard stands in the way (pytorch/pytorch#135712): with the c10d rendezvous
torchrun shares one TCPStore across attempts (TORCHELASTIC_USE_AGENT_STORE=True), and the
workers' process group writes its keys there without any per-attempt prefix. On a restart a
worker may read the address a dead worker of the previous attempt left behind (gloo:
"connectFullMesh failed ... Connection refused"; NCCL: a stale unique id) and the restart fails.
`init_attempt_process_group` opens the default process group itself, before Lightning does, with
its keys under "coldstart/attempt_<TORCHELASTIC_RESTART_COUNT>/"; Lightning then finds the group
initialized and uses it. The restart count is the same for every worker only when one agent
launched them all (one node); on several nodes each agent counts its own restarts, so there the
fix is torch's own opt-out, a fresh store per attempt: `TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`
in the environment of every torchrun (a warning says so when it is missing).
"""

from __future__ import annotations

import atexit
import os
import warnings
from typing import Any

import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_info

PREFIX = "coldstart/attempt_{}/"


def shared_agent_store() -> bool:
    """Launched by torchrun whose workers share the rendezvous store across attempts."""
    return os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"


def init_attempt_process_group(strategy: Any) -> bool:
    """Open the default process group of a DDP-family Lightning `strategy` with keys of this
    attempt only, when torchrun shares its store across restarts on one node. Returns whether
    it did (otherwise Lightning opens the group as usual)."""
    from lightning.pytorch.strategies import DDPStrategy

    env = os.environ
    if not shared_agent_store() or not isinstance(strategy, DDPStrategy) or dist.is_initialized():
        return False
    if env.get("GROUP_WORLD_SIZE", "1") != "1":  # several agents (nodes)
        if int(env.get("TORCHELASTIC_MAX_RESTARTS", "0")) > 0:
            warnings.warn(
                "torchrun --max-restarts on several nodes shares one TCPStore across attempts "
                "(pytorch/pytorch#135712): a restart may read a dead worker's address. Set "
                "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 for every torchrun.",
                stacklevel=2,
            )
        return False
    attempt = env.get("TORCHELASTIC_RESTART_COUNT", "0")
    world, rank = int(env["WORLD_SIZE"]), int(env["RANK"])
    backend = strategy._get_process_group_backend()  # what Lightning would use (gloo, nccl)
    timeout = strategy._timeout
    store = dist.TCPStore(
        env["MASTER_ADDR"], int(env["MASTER_PORT"]), world, is_master=False, timeout=timeout
    )
    device = strategy.root_device
    dist.init_process_group(
        backend,
        store=dist.PrefixStore(PREFIX.format(attempt), store),
        rank=rank,
        world_size=world,
        timeout=timeout,
        device_id=device if device.type != "cpu" else None,
    )
    rank_zero_info(
        f"torchrun attempt {attempt}: process group keys under {PREFIX.format(attempt)} "
        "(ranker.elastic)"
    )
    if backend == "nccl":
        atexit.register(dist.destroy_process_group)  # as Lightning does for its own group
    return True
