"""Benchmark: train a hashed ID table of 50M rows x 32 dims on CPU within ~1.5x its own bytes.

Sparse gradients (only the batch's rows) + row-wise Adagrad (one float of state per row) keep the
training footprint near the table itself; dense Adam would need 3x the table (weights, m, v) plus
a dense gradient. Prints one JSON line:
{"bench": "big_table", "rows", "dim", "steps_per_s", "peak_rss_bytes", "table_bytes", ...}

    python benchmarks/big_table.py [--rows 50000000] [--dim 32] [--steps 300] [--batch 4096]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


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
    args = parser.parse_args()

    import torch

    from ranker.tables import HashedEmbedding, HashedTableConfig, RowWiseAdagrad, state_bytes

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
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    result = {
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
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
