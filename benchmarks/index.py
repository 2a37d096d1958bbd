"""Index benchmark: build time, QPS and recall@10 per FAISS factory against exact (Flat) search.

    python benchmarks/index.py                 # 1M x 128 clustered vectors (the target size)
    python benchmarks/index.py --n 200000      # smaller, minutes on a laptop

One JSON line per factory (and search setting):
{"bench": "index", "n", "dim", "factory", "params", "build_s", "qps", "recall_at_10",
 "flat_qps", "speedup_vs_flat"}
Queries are held out (drawn from the same clusters, not in the index); QPS is measured on one
batch of queries, the way a micro-batching server calls FAISS; recall@10 is against Flat.
Target: an approximate factory at recall@10 >= 0.95 with >= 10x Flat's QPS.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_FACTORIES = [
    "HNSW32:ef_search=32",
    "HNSW32:ef_search=64",
    "IVF{nlist},Flat:nprobe=4",
    "IVF{nlist},Flat:nprobe=8",
    "IVF{nlist},Flat:nprobe=32",
    "IVF{nlist},SQ8:nprobe=8",
    "IVF{nlist},PQ32:nprobe=8",
]


def _parse(spec: str, n: int) -> tuple[str, dict[str, int]]:
    factory, _, params = spec.partition(":")
    nlist = int(4 * np.sqrt(n)) // 64 * 64 or 64
    factory = factory.format(nlist=nlist)
    kv = dict(p.split("=") for p in params.split(",") if p)
    return factory, {k: int(v) for k, v in kv.items()}


def _qps(index, queries: np.ndarray, k: int, repeats: int = 3) -> tuple[float, list[list]]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = index.search(queries, k, prepared=True)
        best = min(best, time.perf_counter() - start)
    return len(queries) / best, result.ids


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000, help="indexed vectors")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--clusters", type=int, default=1024, help="clusters in the synthetic data")
    p.add_argument("--spread", type=float, default=0.3, help="within-cluster noise")
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument(
        "--blas-threshold",
        type=int,
        default=20,
        help="queries per call from which flat search uses BLAS (a FAISS global)",
    )
    p.add_argument("--threads", type=int, default=0, help="FAISS OpenMP threads (0: all)")
    p.add_argument(
        "--factories",
        nargs="*",
        default=DEFAULT_FACTORIES,
        help='"FACTORY[:nprobe=N|ef_search=N]"; {nlist} becomes 4*sqrt(n)',
    )
    args = p.parse_args(argv)

    import faiss

    from data.synthetic import clustered_vectors
    from index.build import recall_at_k
    from index.config import IndexConfig
    from index.vector_index import VectorIndex

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    if args.blas_threshold is not None:
        # FAISS 1.15 defaults to 128000: flat search would never use BLAS and the baseline
        # would look slower than it is. Flat at its best is the honest reference.
        faiss.cvar.distance_compute_blas_threshold = args.blas_threshold
    data, _ = clustered_vectors(
        args.n + args.queries, args.dim, n_clusters=args.clusters, spread=args.spread, seed=0
    )
    base, queries = data[: args.n], data[args.n :]
    ids = np.arange(args.n)
    k = 10

    start = time.perf_counter()
    flat = VectorIndex.build(ids, base, IndexConfig(factory="Flat"))
    flat_build = time.perf_counter() - start
    flat_qps, truth = _qps(flat, queries, k, repeats=1)
    common = {
        "bench": "index",
        "n": args.n,
        "dim": args.dim,
        "clusters": args.clusters,
        "threads": faiss.omp_get_max_threads(),
    }
    print(
        json.dumps(
            {
                **common,
                "factory": "Flat",
                "params": {},
                "build_s": round(flat_build, 2),
                "qps": round(flat_qps, 1),
                "recall_at_10": 1.0,
                "flat_qps": round(flat_qps, 1),
                "speedup_vs_flat": 1.0,
            }
        ),
        flush=True,
    )
    del flat

    built: dict[str, tuple[VectorIndex, float]] = {}
    for spec in args.factories:
        factory, params = _parse(spec, args.n)
        if factory not in built:
            built.clear()  # one big index in memory at a time
            start = time.perf_counter()
            index = VectorIndex.build(ids, base, IndexConfig(factory=factory, train_size=100_000))
            built[factory] = (index, time.perf_counter() - start)
        index, build_s = built[factory]
        index.config.nprobe = params.get("nprobe", index.config.nprobe)
        index.config.ef_search = params.get("ef_search", index.config.ef_search)
        index._apply_search_params(index.faiss_index())
        qps, found = _qps(index, queries, k)
        recall = recall_at_k(found, truth, k)
        print(
            json.dumps(
                {
                    **common,
                    "factory": factory,
                    "params": params,
                    "build_s": round(build_s, 2),
                    "qps": round(qps, 1),
                    "recall_at_10": round(recall, 4),
                    "flat_qps": round(flat_qps, 1),
                    "speedup_vs_flat": round(qps / flat_qps, 2),
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    raise SystemExit(main())
