"""Benchmark: sharded checkpoints (torch.distributed.checkpoint) of a 50M x 32 row-wise table.

The table is built on the meta device and sharded row-wise by TorchRec over N gloo processes
(each allocates only its rows, as in training; fused row-wise Adagrad), trained a few steps,
then saved with ranker.sharding.save_shards (each rank writes its own shards and optimizer
state); fresh processes then build the same sharded model and load it (load_shards), and a
checksum of the table must match. The same run on ONE process gives the baseline peak. Each
phase runs in its own processes, so a peak RSS is that phase's (it includes building the
shards, which a save or a load cannot avoid). Prints one JSON line:
{"bench": "checkpoint", "rows", "dim", "processes", "save_s", "load_s", "bytes",
 "peak_rss_mb_save", "peak_rss_mb_load", "peak_rss_mb_one_process", "peak_rss_ratio", ...}
(per-process peaks: the largest over the processes; the ratio: the largest of them over the
one-process peak).

    python benchmarks/checkpoint.py [--rows 50000000] [--dim 32] [--processes 2] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def worker(rank: int, world: int, args: argparse.Namespace, phase: str) -> None:
    import torch
    import torch.distributed as dist

    from coldstart.ranker.sharding import (
        ShardingConfig,
        is_sharded,
        load_shards,
        save_shards,
        shard_model,
    )
    from coldstart.ranker.tables import HashedTableConfig
    from coldstart.ranker.torchrec_tables import TorchRecHashedEmbedding

    torch.set_num_threads(1)
    torch.manual_seed(0)

    class Table(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            # On the meta device: no process ever holds the whole table.
            config = HashedTableConfig(dim=args.dim, hash_size=args.rows, init_std=0.01)
            self.table = TorchRecHashedEmbedding("big", config, device="meta")

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.table(ids).square().mean()

    sharding = ShardingConfig(constraints={"big": "row_wise"}, table_lr=0.05)
    model, _ = shard_model(Table(), sharding, torch.device("cpu"))
    gen = torch.Generator().manual_seed(rank)
    for _ in range(args.steps):  # the fused row-wise Adagrad updates rows and its state
        model(torch.randint(0, 2**40, (args.batch,), generator=gen)).backward()
    tables = {k: v for k, v in model.state_dict().items() if is_sharded(v)}
    assert tables, "no sharded table"
    fused = model.fused_optimizer.state_dict()
    directory = Path(args.dir) / "ck"
    dist.barrier()
    t0 = time.perf_counter()
    if phase == "save":
        save_shards(directory, tables, fused["state"])
    else:
        load_shards(directory, tables, fused["state"])
        model.load_state_dict(dict(tables), strict=False)
        model.fused_optimizer.load_state_dict(fused)
    dist.barrier()
    seconds = time.perf_counter() - t0
    # Checksum of the whole table: float64 sums of 1M-row blocks (a float64 sum of a whole
    # shard would first copy it to float64, twice its bytes).
    local = sum(
        float(torch.sum(block, dtype=torch.float64))
        for v in tables.values()
        for s in v.local_shards()
        for block in s.tensor.split(1 << 20)
    )
    mine = torch.tensor([_peak_rss_mb(), seconds, local], dtype=torch.float64)
    gathered = [torch.zeros_like(mine) for _ in range(world)]
    dist.all_gather(gathered, mine)
    if rank == 0:
        result = {
            "peak_rss_mb": [round(float(g[0]), 1) for g in gathered],
            "seconds": max(float(g[1]) for g in gathered),
            "checksum": sum(float(g[2]) for g in gathered),
        }
        (Path(args.dir) / f"{phase}.json").write_text(json.dumps(result))


def run(args: argparse.Namespace, processes: int) -> dict:
    """Save, then load in fresh processes; returns both phases' figures."""
    from coldstart.ranker.sharding import run_distributed

    out = {}
    for phase in ("save", "load"):
        run_distributed(worker, processes, (args, phase), timeout=3600)
        out[phase] = json.loads((Path(args.dir) / f"{phase}.json").read_text())
    out["bytes"] = sum(p.stat().st_size for p in (Path(args.dir) / "ck").iterdir())
    if abs(out["save"]["checksum"] - out["load"]["checksum"]) > 1e-6 * max(
        1.0, abs(out["save"]["checksum"])
    ):
        raise AssertionError(f"loaded table differs from the saved one: {out}")
    shutil.rmtree(Path(args.dir) / "ck")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000_000)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="training steps before saving")
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        args.dir = tmp
        one = run(args, 1)
        many = run(args, args.processes)
    one_peak = max(max(one["save"]["peak_rss_mb"]), max(one["load"]["peak_rss_mb"]))
    save_peak, load_peak = max(many["save"]["peak_rss_mb"]), max(many["load"]["peak_rss_mb"])
    print(
        json.dumps(
            {
                "bench": "checkpoint",
                "rows": args.rows,
                "dim": args.dim,
                "processes": args.processes,
                "save_s": round(many["save"]["seconds"], 2),
                "load_s": round(many["load"]["seconds"], 2),
                "bytes": many["bytes"],
                "peak_rss_mb_save": save_peak,
                "peak_rss_mb_load": load_peak,
                "peak_rss_mb_one_process": one_peak,
                "peak_rss_ratio": round(max(save_peak, load_peak) / one_peak, 3),
                "per_process_mb": {
                    "save": many["save"]["peak_rss_mb"],
                    "load": many["load"]["peak_rss_mb"],
                },
                "one_process": {
                    "save_s": round(one["save"]["seconds"], 2),
                    "load_s": round(one["load"]["seconds"], 2),
                    "peak_rss_mb_save": max(one["save"]["peak_rss_mb"]),
                    "peak_rss_mb_load": max(one["load"]["peak_rss_mb"]),
                },
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
