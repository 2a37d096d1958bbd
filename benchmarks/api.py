"""API benchmark: N concurrent clients on loopback, with /health probed during the load.

    python benchmarks/api.py                      # 64 clients, 10 s per mode, 100k x 128 Flat
    python benchmarks/api.py --clients 8 --seconds 5 --n 50000 --no-images

Each mode starts `coldstart serve` as a separate process over the same index directory; the
load generator is a minimal asyncio HTTP/1.1 keep-alive client (one connection per client,
one query vector per request, k=10), so the client costs little CPU next to the server.
Meanwhile a probe sends GET /health every 20 ms on its own connection: its latency is how long
the event loop is blocked (a search, a JSON parse or an image decode on the loop shows up here).

Modes, in one run: micro-batching with --faiss-threads 1 and 2 (searches run in threads that
apply the setting), and per-request search (--no-batching). Then /health while 4 clients upload
40-megapixel PNGs to /v1/search/media (decoded in worker threads; the server has no encoder, so
each upload is decoded, then answered 501).

Prints one JSON line per result:
{"bench": "api", "mode", "clients", "qps", "p50_ms", "p99_ms", "health_p50_ms",
 "health_p99_ms", "health_max_ms", "errors", ...} per mode, then
{"bench": "api_summary", "speedup" (batched threads=1 / unbatched), ...} and
{"bench": "api_images", "uploads", "megapixels", "health_idle_p50_ms", "health_p50_ms",
 "health_p99_ms", "health_max_ms", "upload_s_mean", "statuses"}.
Targets: batched >= 3x per-request search, zero errors, /health p99 well under a batch's time.
"""

from __future__ import annotations

import argparse
import asyncio
import io
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


async def _request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, body: bytes = b""
) -> int:
    """Send one HTTP/1.1 request on a keep-alive connection; return the status."""
    writer.write(head + body)
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


def _post_head(path: str, content_type: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


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
            start = time.perf_counter()
            status = await _request(
                reader, writer, _post_head("/v1/search", "application/json", len(body)), body
            )
            lat.append(time.perf_counter() - start)
            if status != 200:
                errs.append(status)
    except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as err:
        errs.append(type(err).__name__)
    finally:
        writer.close()


async def _probe_health(port: int, stop: asyncio.Event, lat: list, every_s: float = 0.02) -> None:
    """GET /health every `every_s` on its own connection until `stop` is set."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = b"GET /health HTTP/1.1\r\nHost: bench\r\n\r\n"
    try:
        while not stop.is_set():
            start = time.perf_counter()
            await _request(reader, writer, head)
            lat.append(time.perf_counter() - start)
            await asyncio.sleep(every_s)
    finally:
        writer.close()


def _ms(values: list[float]) -> dict[str, float]:
    ms = np.asarray(values) * 1000 if values else np.zeros(1)
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(ms.max()), 2),
    }


async def _load(port: int, clients: int, seconds: float, bodies: list[bytes]) -> dict:
    lat: list[float] = []
    errs: list = []
    health: list[float] = []
    # warm-up (first requests pay for lazy imports and thread pools)
    await asyncio.gather(
        *[_client(port, bodies, time.perf_counter() + 1.0, [], []) for _ in range(4)]
    )
    stop = asyncio.Event()
    probe = asyncio.create_task(_probe_health(port, stop, health))
    start = time.perf_counter()
    deadline = start + seconds
    await asyncio.gather(*[_client(port, bodies, deadline, lat, errs) for _ in range(clients)])
    elapsed = time.perf_counter() - start
    stop.set()
    await probe
    search, probe_ms = _ms(lat), _ms(health)
    return {
        "qps": round(len(lat) / elapsed, 1),
        "p50_ms": search["p50_ms"],
        "p99_ms": search["p99_ms"],
        "health_p50_ms": probe_ms["p50_ms"],
        "health_p99_ms": probe_ms["p99_ms"],
        "health_max_ms": probe_ms["max_ms"],
        "health_probes": len(health),
        "errors": len(errs),
    }


def _png(megapixels: float) -> bytes:
    """A compressible PNG (a gradient: small upload, full decode cost) of the given size."""
    from PIL import Image

    width = int((megapixels * 1e6 * 16 / 9) ** 0.5)
    height = int(megapixels * 1e6 / width)
    row = np.linspace(0, 255, width, dtype=np.uint8)
    pixels = np.broadcast_to(row[None, :, None], (height, width, 3))
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


async def _images(port: int, uploads: int, rounds: int, png: bytes) -> dict:
    """/health idle, then while `uploads` clients each upload the PNG `rounds` times."""
    idle: list[float] = []
    stop = asyncio.Event()
    probe = asyncio.create_task(_probe_health(port, stop, idle))
    await asyncio.sleep(1.0)
    stop.set()
    await probe
    boundary = "benchboundary7b3f"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + png
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = _post_head("/v1/search/media", f"multipart/form-data; boundary={boundary}", len(body))
    statuses: dict[int, int] = {}
    took: list[float] = []

    async def uploader() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in range(rounds):
                start = time.perf_counter()
                status = await _request(reader, writer, head, body)
                took.append(time.perf_counter() - start)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    busy: list[float] = []
    stop = asyncio.Event()
    probe = asyncio.create_task(_probe_health(port, stop, busy))
    await asyncio.gather(*[uploader() for _ in range(uploads)])
    stop.set()
    await probe
    idle_ms, busy_ms = _ms(idle), _ms(busy)
    return {
        "health_idle_p50_ms": idle_ms["p50_ms"],
        "health_p50_ms": busy_ms["p50_ms"],
        "health_p99_ms": busy_ms["p99_ms"],
        "health_max_ms": busy_ms["max_ms"],
        "health_probes": len(busy),
        "upload_s_mean": round(float(np.mean(took)), 2),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
    }


def _serve(index_dir: Path, args: argparse.Namespace, *extra: str) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    cmd = [sys.executable, "-m", "coldstart", "serve", "--index", str(index_dir)]
    cmd += ["--port", str(port), "--log-level", "warning"]
    cmd += ["--max-batch-size", str(args.max_batch_size), "--max-wait-ms", str(args.max_wait_ms)]
    cmd += ["--batch-workers", str(args.batch_workers), *extra]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    try:
        _wait_ready(port, proc)
    except BaseException:
        _stop(proc)
        raise
    return proc, port


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--seconds", type=float, default=10.0, help="load duration per mode")
    p.add_argument("--n", type=int, default=100_000)
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
    p.add_argument("--threads", default="1,2", help="--faiss-threads values for the batched modes")
    p.add_argument("--no-images", action="store_true", help="skip the image-upload scenario")
    p.add_argument("--uploads", type=int, default=4, help="concurrent image uploads")
    p.add_argument("--megapixels", type=float, default=40.0)
    p.add_argument("--rounds", type=int, default=2, help="uploads per uploader")
    args = p.parse_args(argv)

    from coldstart.data.synthetic import clustered_vectors
    from coldstart.index.config import IndexConfig, StoreConfig
    from coldstart.index.store import DurableIndex
    from coldstart.index.vector_index import VectorIndex

    data, _ = clustered_vectors(args.n + 512, args.dim, n_clusters=256, seed=0)
    base, queries = data[: args.n], data[args.n :]
    bodies = [json.dumps({"vectors": [q.round(5).tolist()], "k": 10}).encode() for q in queries]
    common = {
        "clients": args.clients,
        "n": args.n,
        "dim": args.dim,
        "factory": args.factory,
        "seconds": args.seconds,
        "batch_workers": args.batch_workers,
    }
    threads = [int(t) for t in args.threads.split(",") if t]
    modes = [(f"batched_threads{t}", ["--faiss-threads", str(t)]) for t in threads]
    modes.append(("unbatched_threads1", ["--no-batching", "--faiss-threads", "1"]))
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        index = VectorIndex.build(np.arange(args.n), base, IndexConfig(factory=args.factory))
        DurableIndex.create(Path(tmp) / "idx", index, StoreConfig(fsync=False)).close(False)
        del index
        for mode, extra in modes:
            proc, port = _serve(Path(tmp) / "idx", args, *extra)
            try:
                result = asyncio.run(_load(port, args.clients, args.seconds, bodies))
            finally:
                _stop(proc)
            results[mode] = result
            print(json.dumps({"bench": "api", "mode": mode, **common, **result}), flush=True)
        batched = results[modes[0][0]]
        unbatched = results["unbatched_threads1"]
        summary = {
            "bench": "api_summary",
            **common,
            "qps": {mode: r["qps"] for mode, r in results.items()},
            "speedup": round(batched["qps"] / max(unbatched["qps"], 1e-9), 2),
            "health_p99_ms": {mode: r["health_p99_ms"] for mode, r in results.items()},
            "errors": sum(r["errors"] for r in results.values()),
        }
        print(json.dumps(summary), flush=True)
        if not args.no_images:
            png = _png(args.megapixels)
            proc, port = _serve(Path(tmp) / "idx", args, "--faiss-threads", "1")
            try:
                images = asyncio.run(_images(port, args.uploads, args.rounds, png))
            finally:
                _stop(proc)
            print(
                json.dumps(
                    {
                        "bench": "api_images",
                        "uploads": args.uploads,
                        "megapixels": args.megapixels,
                        "png_bytes": len(png),
                        **images,
                    }
                ),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
