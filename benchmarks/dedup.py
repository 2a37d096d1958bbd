"""Benchmark: trainer throughput with and without request-level dedup (sequence user side).

A request shows k items to one user, so the user side (here a transformer over the last 50
items) is identical for its k rows. Dedup runs it once per request and expands the result with
the request index; the plain path runs it once per row. Same model, same batches, same loss
(sampled softmax with in-batch negatives). One JSON line per items_per_request:
{"bench": "dedup", "items_per_request", "sps_dedup", "sps_plain", "speedup", ...}
(sps = training rows per second).

    python benchmarks/dedup.py [--ks 4 6 8] [--requests 128] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[4, 6, 8])
    parser.add_argument("--requests", type=int, default=128, help="requests per batch")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--history", type=int, default=50)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import numpy as np
    import torch

    from coldstart.ranker.data import make_batch
    from coldstart.ranker.model import (
        ItemTower,
        ItemTowerConfig,
        Ranker,
        RankerConfig,
        UserTower,
        UserTowerConfig,
    )

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = RankerConfig(
        dim=args.dim,
        item=ItemTowerConfig(content_hidden=128, id_dropout=0.3),
        user=UserTowerConfig(
            history="sequence", history_len=args.history, seq_layers=args.layers, seq_heads=4
        ),
    )
    content = torch.randn(args.items, 384)
    model = Ranker(
        cfg,
        ItemTower(cfg.item, args.dim, args.items, content=content),
        UserTower(cfg.user, args.dim, args.users, args.items),
        torch.log(torch.full((args.items,), 1.0 / args.items)),
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)

    def batches(k: int) -> list:
        out = []
        for _ in range(args.steps):
            users = rng.integers(0, args.users, args.requests)
            history = rng.integers(0, args.items, (args.requests, args.history))
            items = [rng.choice(args.items, k, replace=False) for _ in range(args.requests)]
            out.append(make_batch(users, history, items))
        return out

    def step(b, dedup: bool) -> float:
        start = time.perf_counter()
        loss = model.loss(b, dedup=dedup)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    def run(data: list) -> tuple[float, float]:
        """(sps_dedup, sps_plain). The two paths alternate batch by batch, so a load change on a
        shared machine hits both alike."""
        for b in data[:2]:  # warm-up
            step(b, True), step(b, False)
        seconds = {True: 0.0, False: 0.0}
        rows = 0
        for b in data:
            for dedup in (False, True):
                seconds[dedup] += step(b, dedup)
            rows += len(b.item_ids)
        return rows / seconds[True], rows / seconds[False]

    for k in args.ks:
        data = batches(k)
        sps_dedup, sps_plain = run(data)
        print(
            json.dumps(
                {
                    "bench": "dedup",
                    "items_per_request": k,
                    "sps_dedup": round(sps_dedup, 1),
                    "sps_plain": round(sps_plain, 1),
                    "speedup": round(sps_dedup / sps_plain, 2),
                    "requests_per_batch": args.requests,
                    "history_len": args.history,
                    "user_side": f"sequence transformer, {args.layers} layers, dim {args.dim}",
                    "threads": args.threads,
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
