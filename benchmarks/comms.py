"""Benchmark: bytes moved by the embedding collectives per training row, and trainer rows/s, for
the ranker with TorchRec-sharded tables over 2 processes (gloo on CPU, nccl with --backend nccl).

Bytes are counted at the torch.distributed calls TorchRec makes (ranker.sharding.CollectiveBytes:
all-to-all, reduce-scatter, all-gather; the dense towers' DDP all-reduce is not an embedding
collective and is not counted), forward and backward, summed over both processes, divided by the
training rows of the step. The user-side tables talk over their own process group, so the
user features' bytes are counted apart. The same sharded model runs both paths, batch by batch
(plain, then dedup), so a load change hits both alike.

Points: pooled vs sequence user history at lengths 10 / 50 / 200 (items_per_request 6), and
request dedup on vs off at 4 / 6 / 8 items per request (history 50). One JSON line per point:
{"bench": "comms", "user_features", "history", "items_per_request", "dedup", "bytes_per_row",
 "user_bytes_per_row", "rows_per_s", ...}; dedup lines add "user_bytes_reduction" and "speedup"
against the same point without dedup. The user features are looked up once per request and
expanded after the all-to-all, by TorchRec's variable-batch KJTs (--variable-batch on; the
default on GPUs) or by an index after the lookup (the CPU default: FBGEMM's CPU kernel for
variable batches is slow on big shards); the bytes are the same. embedding_bytes_per_row / id_bytes_per_row split the
bytes into float payloads (pooled or per-id vectors and their gradients) and integer ones (ids,
lengths, splits).

    python benchmarks/comms.py [--histories 10 50 200] [--ks 4 6 8] [--requests 128] [--steps 6]
"""

from __future__ import annotations

import argparse
import json
import time


def worker(rank: int, world: int, args: argparse.Namespace) -> None:
    import numpy as np
    import torch
    import torch.distributed as dist

    from coldstart.ranker.data import make_batch
    from coldstart.ranker.model import (
        ItemTower,
        ItemTowerConfig,
        Ranker,
        RankerConfig,
        UserTower,
        UserTowerConfig,
    )
    from coldstart.ranker.sharding import (
        CollectiveBytes,
        ShardingConfig,
        create_sharders,
        shard_model,
    )

    torch.set_num_threads(args.threads)
    device = torch.device(f"cuda:{rank}" if args.backend == "nccl" else "cpu")
    user_group = dist.new_group(backend=args.backend)
    vb = False  # whether dedup expands through TorchRec's variable-batch KJTs (set by build)

    class Step(torch.nn.Module):
        def __init__(self, ranker: Ranker) -> None:
            super().__init__()
            self.ranker = ranker

        def forward(self, batch, dedup: bool):  # noqa: ANN001, ANN201
            return self.ranker.loss(batch, dedup=dedup)

    def build(features: str, history: int):
        torch.manual_seed(0)
        cfg = RankerConfig(
            dim=args.dim,
            tables="torchrec",
            item=ItemTowerConfig(content_hidden=128, id_dropout=0.3),
            user=UserTowerConfig(
                history=features, history_len=history, seq_layers=args.layers, seq_heads=4
            ),
        )
        content = torch.randn(args.items, 64, generator=torch.Generator().manual_seed(0))
        ranker = Ranker(
            cfg,
            ItemTower(cfg.item, args.dim, args.items, content=content, tables="torchrec"),
            UserTower(cfg.user, args.dim, args.users, args.items, tables="torchrec"),
            torch.log(torch.full((args.items,), 1.0 / args.items)),
        )
        sharding = ShardingConfig(table_lr=0.05, variable_batch=args.variable_batch)
        sharders = create_sharders(sharding, groups={"ranker.user_tower": user_group})
        model, plan = shard_model(Step(ranker), sharding, device, sharders=sharders)
        nonlocal vb
        vb = ranker.user_tower.table.uses_variable_batch(device)
        dense = [p for p in model.parameters() if not hasattr(p, "_in_backward_optimizers")]
        kinds = {t: s.sharding_type for m in plan.plan.values() for t, s in m.items()}
        return model, torch.optim.AdamW(dense, lr=1e-3), kinds

    def batches(k: int, history: int, seed: int) -> list:
        rng = np.random.default_rng(1000 * seed + rank)
        out = []
        for _ in range(args.steps + 2):
            users = rng.integers(0, args.users, args.requests)
            hist = rng.integers(0, args.items, (args.requests, history))
            items = [rng.choice(args.items, k, replace=False) for _ in range(args.requests)]
            out.append(make_batch(users, hist, items).to(device))
        return out

    def step(model, optimizer, batch, dedup: bool, counter) -> float:  # noqa: ANN001
        dist.barrier()
        start = time.perf_counter()
        if counter is not None:
            with counter:
                loss = model(batch, dedup)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
        else:
            loss = model(batch, dedup)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    def measure(model, optimizer, data: list) -> dict[bool, dict]:  # noqa: ANN001
        for b in data[:2]:  # warm-up: first calls set up TorchRec's all-to-alls
            step(model, optimizer, b, False, None), step(model, optimizer, b, True, None)
        out = {}
        seconds = {False: 0.0, True: 0.0}
        counters = {d: CollectiveBytes({user_group: "user"}) for d in (False, True)}
        rows = 0
        for b in data[2:]:
            for dedup in (False, True):
                seconds[dedup] += step(model, optimizer, b, dedup, counters[dedup])
            rows += len(b.item_ids)
        # Sum bytes over ranks; time: the slowest rank (collectives keep them in step).
        t = torch.tensor([seconds[False], seconds[True]], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        for dedup in (False, True):
            c = counters[dedup]
            totals = torch.tensor(
                [
                    sum(c.bytes.values()),
                    c.bytes.get("user", 0),
                    c.kinds.get("float", 0),
                    c.kinds.get("int", 0),
                    rows,
                ],
                dtype=torch.float64,
            )
            dist.all_reduce(totals)
            total, user, floats, ints, global_rows = totals.tolist()
            out[dedup] = {
                "bytes_per_row": total / global_rows,
                "user_bytes_per_row": user / global_rows,
                "item_bytes_per_row": (total - user) / global_rows,
                "embedding_bytes_per_row": floats / global_rows,
                "id_bytes_per_row": ints / global_rows,
                "rows_per_s": global_rows / float(t[int(dedup)]),
            }
        return out

    def emit(features: str, history: int, k: int, result: dict, kinds: dict) -> None:
        if rank != 0:
            return
        for dedup in (False, True):
            r = result[dedup]
            line = {
                "bench": "comms",
                "user_features": features,
                "history": history,
                "items_per_request": k,
                "dedup": dedup,
                **{key: round(v, 1) for key, v in r.items()},
            }
            if dedup:
                plain = result[False]
                line["user_bytes_reduction"] = round(
                    plain["user_bytes_per_row"] / r["user_bytes_per_row"], 2
                )
                line["speedup"] = round(r["rows_per_s"] / plain["rows_per_s"], 2)
            line.update(
                {
                    "requests_per_batch": args.requests,
                    "processes": world,
                    "backend": args.backend,
                    "dim": args.dim,
                    "variable_batch": vb,
                    "tables": kinds,
                    "threads": args.threads,
                }
            )
            print(json.dumps(line), flush=True)

    for features in args.features:
        for history in args.histories:
            ks = args.ks if history == args.dedup_history else [args.k]
            model, optimizer, kinds = build(features, history)
            for k in ks:
                result = measure(model, optimizer, batches(k, history, seed=k))
                emit(features, history, k, result, kinds)
            del model, optimizer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", nargs="+", default=["pooled", "sequence"])
    parser.add_argument("--histories", type=int, nargs="+", default=[10, 50, 200])
    parser.add_argument("--ks", type=int, nargs="+", default=[4, 6, 8])
    parser.add_argument("--k", type=int, default=6, help="items per request of the length sweep")
    parser.add_argument("--dedup-history", type=int, default=50, help="history of the k sweep")
    parser.add_argument("--requests", type=int, default=128, help="requests per batch per process")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2, help="sequence encoder layers")
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--backend", default="gloo", choices=["gloo", "nccl"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument(
        "--variable-batch",
        choices=["auto", "on", "off"],
        default="auto",
        help="dedup via TorchRec's variable-batch KJTs (auto: on GPUs only) or an index after",
    )
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args()
    args.variable_batch = {"auto": None, "on": True, "off": False}[args.variable_batch]

    from coldstart.ranker.sharding import run_distributed

    run_distributed(worker, args.processes, (args,), timeout=args.timeout, backend=args.backend)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
