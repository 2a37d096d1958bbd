"""Index benchmark: FAISS and Milvus side by side, on the same clustered vectors.

    python benchmarks/index.py                                   # FAISS 1M and 200k, Milvus Lite 200k
    python benchmarks/index.py --backend faiss --n 1000000       # FAISS only
    python benchmarks/index.py --backend milvus --milvus-n 200000 --milvus-specs HNSW:ef_search=64
    python benchmarks/index.py --n 50000 --milvus-n 50000 --queries 500   # minutes, a smoke run

One JSON line per backend, index type and search setting:
{"bench": "index", "backend", "factory", "params", "n", "dim", "build_s", "qps",
 "recall_at_10", "peak_rss_mb", "flat_qps", "speedup_vs_flat", ...}

Every store is built the way a user builds one: from vectors in memory to a durable store on
disk (FAISS: index + WAL + snapshot directory; Milvus Lite: a collection, flushed, indexed and
closed, which waits for its background compaction), then opened again and searched, as a
server would. `build_s` covers build and close, `open_s` the reopen. Each index type is built
and searched in its own process, so `peak_rss_mb` is that process's peak (input vectors
included); `disk_mb` is the store's size on disk. Queries are held out (drawn from the same clusters, not in
the store); QPS is measured on batches of `--batch` queries (default: all in one call, the way
a micro-batching server calls the store), best of three; `single_query_ms` is the median of
one-query calls; recall@10 is against exact search;
`speedup_vs_flat` is against the same backend's exact index at the same n.
Targets: FAISS, an approximate factory at recall@10 >= 0.95 with >= 10x Flat's QPS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]

FAISS_SPECS = [
    "Flat",
    "HNSW32:ef_search=32",
    "HNSW32:ef_search=64",
    "IVF{nlist},Flat:nprobe=4",
    "IVF{nlist},Flat:nprobe=8",
    "IVF{nlist},Flat:nprobe=32",
    "IVF{nlist},SQ8:nprobe=8",
    "IVF{nlist},PQ32:nprobe=8",
]
# The types both backends have, for the side-by-side rows at the Milvus size.
FAISS_COMMON_SPECS = [
    "Flat",
    "HNSW32:ef_search=64",
    "IVF{nlist},Flat:nprobe=8",
    "IVF{nlist},Flat:nprobe=32",
]
MILVUS_SPECS = [
    "FLAT",
    "HNSW:M=32,efConstruction=40,ef_search=64",  # FAISS HNSW32's build parameters
    "IVF_FLAT:nprobe=8",
    "IVF_FLAT:nprobe=32",
]
EXACT = ("Flat", "FLAT")
BUILD_KEYS = ("M", "efConstruction")


def nlist_for(n: int) -> int:
    """IVF cells: about 4 * sqrt(n), a multiple of 64."""
    return int(4 * np.sqrt(n)) // 64 * 64 or 64


def parse_spec(spec: str, n: int) -> tuple[str, dict[str, int], dict[str, int]]:
    """ "FACTORY[:k=v,...]" -> (factory, build params, search params)."""
    factory, _, params = spec.partition(":")
    factory = factory.format(nlist=nlist_for(n))
    kv = {k: int(v) for k, v in (p.split("=") for p in params.split(",") if p)}
    build = {k: v for k, v in kv.items() if k in BUILD_KEYS}
    search = {k: v for k, v in kv.items() if k not in BUILD_KEYS}
    return factory, build, search


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM starts afresh at exec; ru_maxrss would
    carry over the parent's peak (getrusage values survive execve)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: kB or B


def _qps(store: Any, queries: np.ndarray, k: int, batch: int) -> tuple[float, list[list]]:
    best, found = float("inf"), []
    for _ in range(3):
        found = []
        start = time.perf_counter()
        for lo in range(0, len(queries), batch):
            found += store.search(queries[lo : lo + batch], k, prepared=True).ids
        best = min(best, time.perf_counter() - start)
    return len(queries) / best, found


# --------------------------------------------------------------------------- worker
def worker(job: dict[str, Any]) -> int:
    """Build one store and search it with each setting; one JSON line per setting."""
    import faiss

    from coldstart.index.build import recall_at_k

    if job["threads"]:
        faiss.omp_set_num_threads(job["threads"])
    if job["blas_threshold"] is not None:
        # FAISS 1.15 defaults to 128000: flat search would never use BLAS. Milvus Lite
        # searches its segments with FAISS in this process, so the setting is shared.
        faiss.cvar.distance_compute_blas_threshold = job["blas_threshold"]
    n, k = job["n"], job["k"]
    base = np.load(job["base"], mmap_mode="r")[:n]
    queries = np.load(job["queries"])
    truth = np.load(job["truth"])
    ids = np.arange(n)
    out = Path(job["out"])
    start = time.perf_counter()
    if job["backend"] == "faiss":
        from coldstart.index.config import IndexConfig, StoreConfig
        from coldstart.index.store import FaissStore

        config = IndexConfig(factory=job["factory"], train_size=100_000, replica="none")
        FaissStore.build(ids, base, out, config, StoreConfig(fsync=True)).close()
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        store: Any = FaissStore.open(out, StoreConfig(fsync=True))
    else:
        from coldstart.index.milvus_store import MilvusConfig, MilvusStore

        build = job["build"]
        config = MilvusConfig(
            uri=str(out / "items.db"),
            index_type=job["factory"],
            nlist=nlist_for(n),
            hnsw_m=build.get("M", 32),
            ef_construction=build.get("efConstruction", 40),
        )
        # close() waits for Milvus Lite's background compaction and index builds, which
        # would otherwise compete with the searches measured below
        MilvusStore.build(ids, base, config, progress=True).close()
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        store = MilvusStore.open(config)
    open_s = time.perf_counter() - start
    disk_mb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20
    print(f"[index] {job['backend']} {job['factory']} built in {build_s:.1f} s", file=sys.stderr)
    try:
        for params in job["searches"]:
            store.tune(nprobe=params.get("nprobe"), ef_search=params.get("ef_search"))
            store.search(queries[:16], k, prepared=True)  # warm-up
            qps, found = _qps(store, queries, k, job["batch"] or len(queries))
            one = []
            for q in queries[: job["single"]]:
                t0 = time.perf_counter()
                store.search(q[None], k, prepared=True)
                one.append(time.perf_counter() - t0)
            row = {
                "factory": job["factory"],
                "params": {**job["build"], **params},
                "build_s": round(build_s, 2),
                "open_s": round(open_s, 2),
                "qps": round(qps, 1),
                "single_query_ms": round(1000 * float(np.median(one)), 2),
                "recall_at_10": round(recall_at_k(found, truth.tolist(), k), 4),
                "peak_rss_mb": round(peak_rss_mb(), 1),
                "disk_mb": round(disk_mb, 1),
            }
            print(json.dumps(row), flush=True)
    finally:
        store.close()
    return 0


# --------------------------------------------------------------------------- driver
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--backend", nargs="+", choices=["faiss", "milvus"], default=None)
    p.add_argument(
        "--n", type=int, nargs="+", default=[1_000_000, 200_000], help="FAISS store sizes"
    )
    p.add_argument("--milvus-n", type=int, default=200_000, help="Milvus Lite store size")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--clusters", type=int, default=1024, help="clusters in the synthetic data")
    p.add_argument("--spread", type=float, default=0.3, help="within-cluster noise")
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--batch", type=int, default=0, help="queries per search call (0: all)")
    p.add_argument(
        "--single", type=int, default=200, help="one-query calls timed for single_query_ms"
    )
    p.add_argument("--blas-threshold", type=int, default=20, help="FAISS flat-search BLAS switch")
    p.add_argument("--threads", type=int, default=0, help="FAISS OpenMP threads (0: all)")
    p.add_argument(
        "--specs",
        nargs="*",
        default=None,
        help='FAISS "FACTORY[:nprobe=N|ef_search=N]"; {nlist} becomes 4*sqrt(n). Default: all '
        "factories at the first --n, the common ones at the others",
    )
    p.add_argument(
        "--milvus-specs",
        nargs="*",
        default=MILVUS_SPECS,
        help='"FLAT|IVF_FLAT|HNSW[:M=..,efConstruction=..,nprobe=..,ef_search=..]"',
    )
    p.add_argument("--workdir", help="where stores are built (default: a temp dir, removed)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(json.loads(args.worker))

    backends = args.backend or ["faiss", "milvus"]
    if "milvus" in backends:
        try:
            import milvus_lite  # noqa: F401
            import pymilvus  # noqa: F401
        except ImportError:
            p.error("--backend milvus needs the Milvus extra: pip install 'coldstart[milvus]'")
    from coldstart.data.synthetic import clustered_vectors
    from coldstart.index.build import exact_neighbours

    plan: list[tuple[str, int, list[str]]] = []
    if "faiss" in backends:
        for pos, n in enumerate(args.n):
            specs = args.specs
            if specs is None:
                specs = FAISS_SPECS if pos == 0 else FAISS_COMMON_SPECS
            plan.append(("faiss", n, specs))
    if "milvus" in backends:
        plan.append(("milvus", args.milvus_n, args.milvus_specs))
    n_max = max(n for _, n, _ in plan)

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-index-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        data, _ = clustered_vectors(
            n_max + args.queries, args.dim, n_clusters=args.clusters, spread=args.spread, seed=0
        )
        np.save(work / "base.npy", data[:n_max])
        np.save(work / "queries.npy", data[n_max:])
        queries = data[n_max:]
        truths: dict[int, Path] = {}
        for n in sorted({n for _, n, _ in plan}):
            start = time.perf_counter()
            truth = exact_neighbours(data[:n], queries, 10)
            np.save(work / f"truth-{n}.npy", truth)
            truths[n] = work / f"truth-{n}.npy"
            print(
                f"[index] exact top-10 at n={n}: {time.perf_counter() - start:.1f} s",
                file=sys.stderr,
            )
        del data
        common = {"bench": "index", "dim": args.dim, "clusters": args.clusters}
        common |= {"queries": args.queries, "batch": args.batch or args.queries}
        for backend, n, specs in plan:
            flat_qps = None
            groups: dict[tuple[str, str], list[dict[str, int]]] = {}
            for spec in specs:
                factory, build, search = parse_spec(spec, n)
                groups.setdefault((factory, json.dumps(build)), []).append(search)
            for (factory, build), searches in groups.items():
                job = {
                    "backend": backend,
                    "factory": factory,
                    "build": json.loads(build),
                    "searches": searches,
                    "n": n,
                    "k": 10,
                    "batch": args.batch,
                    "single": args.single,
                    "threads": args.threads,
                    "blas_threshold": args.blas_threshold,
                    "base": str(work / "base.npy"),
                    "queries": str(work / "queries.npy"),
                    "truth": str(truths[n]),
                    "out": str(work / f"{backend}-{n}-{factory.replace(',', '_')}"),
                }
                for row in _run_worker(job):
                    if factory in EXACT:
                        flat_qps = row["qps"]
                    speedup = round(row["qps"] / flat_qps, 2) if flat_qps else None
                    threads = args.threads or os.cpu_count()
                    out = {**common, "backend": backend, "n": n, "threads": threads, **row}
                    print(json.dumps({**out, "flat_qps": flat_qps, "speedup_vs_flat": speedup}))
                    sys.stdout.flush()
                shutil.rmtree(job["out"], ignore_errors=True)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def _run_worker(job: dict[str, Any]) -> list[dict[str, Any]]:
    cmd = [sys.executable, __file__, "--worker", json.dumps(job)]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{job['backend']} {job['factory']} failed (rc {proc.returncode})")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    raise SystemExit(main())
