"""API benchmark: N concurrent clients on loopback, micro-batching on vs off, same run.

    python benchmarks/api.py                      # 32 clients, 10 s per mode, 200k x 128 Flat
    python benchmarks/api.py --clients 8 --seconds 5 --n 50000

Each mode starts `coldstart serve` as a separate process over the same index directory; the
load generator is a minimal asyncio HTTP/1.1 keep-alive client (one connection per client,
one query vector per request, k=10), so the client costs little CPU next to the server.
Prints one JSON line:
{"bench": "api", "clients", "qps_batched", "qps_unbatched", "speedup", "p50_ms", "p99_ms",
 "p50_ms_unbatched", "p99_ms_unbatched", "errors", ...}
Target: >= 3x the QPS of per-request search at 32 clients, zero errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(port: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited during start-up")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server not ready in time")


async def _client(port: int, bodies: list[bytes], deadline: float, lat: list, errs: list) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        errs.append("connect")
        return
    rng = random.Random()
    try:
        while time.perf_counter() < deadline:
            body = bodies[rng.randrange(len(bodies))]
            head = (
                "POST /v1/search HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            start = time.perf_counter()
            writer.write(head + body)
            await writer.drain()
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            await reader.readexactly(length)
            lat.append(time.perf_counter() - start)
            if status != 200:
                errs.append(status)
    except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as err:
        errs.append(type(err).__name__)
    finally:
        writer.close()


async def _load(port: int, clients: int, seconds: float, bodies: list[bytes]) -> dict:
    lat: list[float] = []
    errs: list = []
    # warm-up (first requests pay for lazy imports and thread pools)
    await asyncio.gather(
        *[_client(port, bodies, time.perf_counter() + 1.0, [], []) for _ in range(4)]
    )
    start = time.perf_counter()
    deadline = start + seconds
    await asyncio.gather(*[_client(port, bodies, deadline, lat, errs) for _ in range(clients)])
    elapsed = time.perf_counter() - start
    ms = np.asarray(lat) * 1000 if lat else np.zeros(1)
    return {
        "qps": len(lat) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "errors": len(errs),
    }


def _run_mode(
    index_dir: Path, batching: bool, args: argparse.Namespace, bodies: list[bytes]
) -> dict:
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "coldstart",
        "serve",
        "--index",
        str(index_dir),
        "--port",
        str(port),
    ]
    cmd += ["--log-level", "warning", "--max-batch-size", str(args.max_batch_size)]
    cmd += ["--max-wait-ms", str(args.max_wait_ms), "--batch-workers", str(args.batch_workers)]
    cmd += ["--faiss-threads", str(args.faiss_threads)]
    if not batching:
        cmd.append("--no-batching")
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    try:
        _wait_ready(port, proc)
        return asyncio.run(_load(port, args.clients, args.seconds, bodies))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=10.0, help="load duration per mode")
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--factory", default="Flat")
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--max-wait-ms", type=float, default=1.0)
    p.add_argument(
        "--batch-workers",
        type=int,
        default=1,
        help="batches searched at once (the server default; 2 oversubscribes a 2-core machine)",
    )
    p.add_argument(
        "--faiss-threads", type=int, default=1, help="OpenMP threads per FAISS call, both modes"
    )
    args = p.parse_args(argv)

    from data.synthetic import clustered_vectors
    from index.config import IndexConfig, StoreConfig
    from index.store import DurableIndex
    from index.vector_index import VectorIndex

    data, _ = clustered_vectors(args.n + 512, args.dim, n_clusters=256, seed=0)
    base, queries = data[: args.n], data[args.n :]
    bodies = [json.dumps({"vectors": [q.round(5).tolist()], "k": 10}).encode() for q in queries]
    with tempfile.TemporaryDirectory() as tmp:
        index = VectorIndex.build(np.arange(args.n), base, IndexConfig(factory=args.factory))
        DurableIndex.create(Path(tmp) / "idx", index, StoreConfig(fsync=False)).close(False)
        del index
        batched = _run_mode(Path(tmp) / "idx", True, args, bodies)
        unbatched = _run_mode(Path(tmp) / "idx", False, args, bodies)
    print(
        json.dumps(
            {
                "bench": "api",
                "clients": args.clients,
                "n": args.n,
                "dim": args.dim,
                "factory": args.factory,
                "seconds": args.seconds,
                "faiss_threads": args.faiss_threads,
                "batch_workers": args.batch_workers,
                "qps_batched": round(batched["qps"], 1),
                "qps_unbatched": round(unbatched["qps"], 1),
                "speedup": round(batched["qps"] / max(unbatched["qps"], 1e-9), 2),
                "p50_ms": round(batched["p50_ms"], 2),
                "p99_ms": round(batched["p99_ms"], 2),
                "p50_ms_unbatched": round(unbatched["p50_ms"], 2),
                "p99_ms_unbatched": round(unbatched["p99_ms"], 2),
                "errors": batched["errors"] + unbatched["errors"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
