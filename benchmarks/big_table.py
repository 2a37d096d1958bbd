"""Benchmark: train a hashed ID table of 50M rows x 32 dims on CPU within ~1.5x its own bytes,
and, with --sharded N, the same table row-wise over N processes with TorchRec.

One process: sparse gradients (only the batch's rows) + row-wise Adagrad (one float of state per
row) keep the training footprint near the table itself; dense Adam would need 3x the table
(weights, m, v) plus a dense gradient. Prints one JSON line:
{"bench": "big_table", "rows", "dim", "steps_per_s", "peak_rss_bytes", "table_bytes", ...}

--sharded N: first the one-process run above (in its own process, for its own peak RSS), then
the table built on the meta device and sharded row-wise by DistributedModelParallel over N gloo
processes (each initialises and holds only its rows; TorchRec's fused row-wise Adagrad), each
process with its own batch of --batch ids. One JSON line, "bench": "big_table_sharded", with
each process's peak RSS and "peak_rss_ratio" = the largest over the one-process peak.

    python benchmarks/big_table.py [--rows 50000000] [--dim 32] [--steps 300] [--batch 4096]
    python benchmarks/big_table.py --sharded 2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def single(args: argparse.Namespace) -> dict:
    import torch

    from coldstart.ranker.tables import (
        HashedEmbedding,
        HashedTableConfig,
        RowWiseAdagrad,
        state_bytes,
    )

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    table = HashedEmbedding(
        HashedTableConfig(dim=args.dim, hash_size=args.rows, sparse=True, init_std=0.01)
    )
    init_s = time.perf_counter() - t0
    # The other side of the dot product: a small dense item table, as in a two-tower ranker.
    items = torch.nn.Embedding(10_000, args.dim)
    optimizer = RowWiseAdagrad([table.weight, items.weight], lr=0.05)
    gen = torch.Generator().manual_seed(0)

    def step() -> float:
        ids = torch.randint(0, args.id_space, (args.batch,), generator=gen)
        item = torch.randint(0, 10_000, (args.batch,), generator=gen)
        label = (torch.rand(args.batch, generator=gen) < 0.5).float()
        score = (table(ids) * items(item)).sum(-1)  # (B,)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(score, label)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    for _ in range(5):  # warm-up: allocator, lazy state
        step()
    t1 = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = time.perf_counter() - t1
    peak = _peak_rss()
    return {
        "bench": "big_table",
        "rows": args.rows,
        "dim": args.dim,
        "steps": args.steps,
        "batch": args.batch,
        "steps_per_s": round(args.steps / seconds, 2),
        "peak_rss_bytes": int(peak),
        "table_bytes": table.table_bytes,
        "optimizer_state_bytes": state_bytes(optimizer),
        "rss_over_table": round(peak / table.table_bytes, 3),
        "init_s": round(init_s, 1),
        "threads": args.threads,
    }


def sharded_worker(rank: int, world: int, args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist

    from coldstart.ranker.sharding import ShardingConfig, shard_model
    from coldstart.ranker.tables import HashedTableConfig, RowWiseAdagrad
    from coldstart.ranker.torchrec_tables import TorchRecHashedEmbedding

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    class TwoTables(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            # On the meta device: no process ever holds the whole table.
            config = HashedTableConfig(dim=args.dim, hash_size=args.rows, init_std=0.01)
            self.table = TorchRecHashedEmbedding("big", config, device="meta")
            self.items = torch.nn.Embedding(10_000, args.dim)

        def forward(self, ids, item, label):  # noqa: ANN001, ANN201
            score = (self.table(ids) * self.items(item)).sum(-1)  # (B,)
            return torch.nn.functional.binary_cross_entropy_with_logits(score, label)

    t0 = time.perf_counter()
    sharding = ShardingConfig(
        constraints={"big": "row_wise"}, table_lr=0.05, variable_batch=args.variable_batch
    )
    model, plan = shard_model(TwoTables(), sharding, torch.device("cpu"))
    init_s = time.perf_counter() - t0
    dense = [p for p in model.parameters() if not hasattr(p, "_in_backward_optimizers")]
    optimizer = RowWiseAdagrad(dense, lr=0.05)
    gen = torch.Generator().manual_seed(rank)

    def step() -> None:
        ids = torch.randint(0, args.id_space, (args.batch,), generator=gen)
        item = torch.randint(0, 10_000, (args.batch,), generator=gen)
        label = (torch.rand(args.batch, generator=gen) < 0.5).float()
        loss = model(ids, item, label)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(5):
        step()
    dist.barrier()
    t1 = time.perf_counter()
    for _ in range(args.steps):
        step()
    dist.barrier()
    seconds = time.perf_counter() - t1
    local_rows = sum(
        s.shard_sizes[0]
        for spec in plan.plan.values()
        for table in spec.values()
        for s in table.sharding_spec.shards
        if s.placement.rank() == rank
    )
    mine = torch.tensor([_peak_rss(), local_rows, seconds], dtype=torch.float64)
    gathered = [torch.zeros_like(mine) for _ in range(world)]
    dist.all_gather(gathered, mine)
    if rank == 0:
        kinds = {t: s.sharding_type for m in plan.plan.values() for t, s in m.items()}
        result = {
            "processes": world,
            "sharding": kinds,
            "rows_per_process": [int(g[1]) for g in gathered],
            "peak_rss_bytes_per_process": [int(g[0]) for g in gathered],
            "steps_per_s": round(args.steps / max(float(g[2]) for g in gathered), 2),
            "batch_per_process": args.batch,
            "init_s": round(init_s, 1),
        }
        Path(args.result_path).write_text(json.dumps(result))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000_000)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument(
        "--id-space", type=int, default=2_000_000_000, help="raw ids drawn from [0, id_space)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--sharded", type=int, default=0, help="also shard the table row-wise over N processes"
    )
    parser.add_argument(
        "--variable-batch",
        action="store_true",
        help="sharded lookups through TorchRec's variable-batch KJTs (the GPU default)",
    )
    args = parser.parse_args()
    if not args.sharded:
        print(json.dumps(single(args)), flush=True)
        return 0

    # The one-process baseline in its own process: its peak RSS is its own.
    argv = [sys.executable, __file__, *sys.argv[1:]]
    at = argv.index("--sharded")
    del argv[at : at + 2]
    if "--variable-batch" in argv:
        argv.remove("--variable-batch")
    base = json.loads(
        subprocess.run(argv, check=True, capture_output=True, text=True).stdout.splitlines()[-1]
    )
    print(json.dumps(base), flush=True)

    import tempfile

    from coldstart.ranker.sharding import run_distributed

    with tempfile.TemporaryDirectory() as tmp:
        args.result_path = str(Path(tmp) / "sharded.json")  # rank 0 writes its result here
        run_distributed(sharded_worker, args.sharded, (args,), timeout=3600)
        shard = json.loads(Path(args.result_path).read_text())
    peak = max(shard["peak_rss_bytes_per_process"])
    print(
        json.dumps(
            {
                "bench": "big_table_sharded",
                "rows": args.rows,
                "dim": args.dim,
                "steps": args.steps,
                **shard,
                "table_bytes": args.rows * args.dim * 4,
                "single_process_peak_rss_bytes": base["peak_rss_bytes"],
                "single_process_steps_per_s": base["steps_per_s"],
                "peak_rss_ratio": round(peak / base["peak_rss_bytes"], 3),
                "variable_batch": args.variable_batch,
                "threads": args.threads,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
