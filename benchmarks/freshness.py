"""Freshness under load (issue 19, part 4): 32 concurrent clients mix uploads of new items and
recommendation requests against `coldstart serve --ranker` (alone, no content index) on
127.0.0.1.

Set-up: the synthetic data set (data.synthetic, string ids), MiniLM content vectors, the
`--method` fitted and exported (ranker.methods), served by a real `coldstart serve` process
with `--encoder minilm`; uploads are text only (POST /v1/ranker/items). With batching on
(the default) concurrent uploads share one encoder call and one durable write
(index.batching.BatchQueue); `--no-batching` sends each through alone, as a baseline.

Each client loops for `--seconds`: with probability `--upload-share` it uploads a new item
(an unseen id, a catalogue title) and then asks its recommendations (segment cold, k = max_k,
so a visible item is in the answer while fewer than max_k items are uploaded; uploads stop at
`--max-uploads`) until the id appears: visible_ms = from the upload's response to the end of
the first recommendation response holding it. Otherwise it asks a random known user's top 20.

Prints one JSON line per mode: {"bench": "freshness", "batching", "clients", "seconds",
"upload_p50_ms", "upload_p99_ms", "visible_p50_ms", "visible_p99_ms", "visible_max_polls"
(recommendation requests an upload needed to be seen; 1: the first after its ack), "uploads_per_s",
"recs_qps", "recs_p50_ms", "recs_p99_ms", "errors", "uploads", "recs"} and, with both modes, a
last line {"bench": "freshness_batching", "uploads_per_s_speedup", "upload_p99_ratio"}.

    .venv/bin/python benchmarks/freshness.py [--seconds 10] [--modes batched unbatched]

Keep uploads under --max-uploads in both modes (check "uploads"): a capped mode's uploads_per_s
says nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FIELDS = ("title", "genres")


def build_artifact(out: Path, method: str) -> tuple[list[str], list[str]]:
    """Fit and export `method` on the synthetic set; (user ids, catalogue texts)."""
    from coldstart.data.schema import ITEM_ID, item_text
    from coldstart.data.split import cold_start_split
    from coldstart.data.synthetic import load_synthetic
    from coldstart.ranker.data import build_ranker_data
    from coldstart.ranker.methods import export_fitted, fit_method, resolve_method
    from coldstart.serving import make_encode

    split = cold_start_split(load_synthetic(), seed=0)
    texts = {row[ITEM_ID]: item_text(row, FIELDS) for row in split.items.to_dict("records")}
    encode, _ = make_encode("minilm")
    ids = list(texts)
    content = np.stack([encode([], [texts[i]]) for i in ids]).astype(np.float32)
    data = build_ranker_data(split, np.asarray(ids), content)
    params = {"dim": 16, "epochs": 2}
    fitted = fit_method(method, data, params=params)
    export_fitted(out, fitted, resolve_method(method, params))
    return [str(u) for u in data.user_ids], list(texts.values())


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


async def load(
    url: str,
    users: list[str],
    texts: list[str],
    clients: int,
    seconds: float,
    upload_share: float,
    max_uploads: int,
    max_k: int,
) -> dict[str, Any]:
    import httpx

    uploads: list[float] = []
    visible: list[float] = []
    recs: list[float] = []
    polls: list[int] = []  # recommendation requests until an upload was seen (1: the first)
    errors = 0
    kinds: dict[str, int] = {}  # what the errors were

    def error(kind: str) -> None:
        nonlocal errors
        errors += 1
        kinds[kind] = kinds.get(kind, 0) + 1

    counter = iter(range(10**9))
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        start = time.perf_counter()
        deadline = start + seconds

        async def client(seed: int) -> None:
            rng = random.Random(seed)
            while time.perf_counter() < deadline:
                try:
                    if rng.random() < upload_share and len(uploads) < max_uploads:
                        item = f"fresh-{next(counter):06d}"
                        t0 = time.perf_counter()
                        r = await http.post(
                            "/v1/ranker/items", data={"id": item, "text": rng.choice(texts)}
                        )
                        t1 = time.perf_counter()
                        if r.status_code != 200:
                            error(f"upload {r.status_code}: {r.text[:80]}")
                            continue
                        uploads.append((t1 - t0) * 1e3)
                        user = rng.choice(users)
                        params = {"k": max_k, "segment": "cold", "exclude_seen": "false"}
                        for poll in range(1, 101):
                            r = await http.get(f"/v1/users/{user}/recommendations", params=params)
                            if r.status_code != 200:
                                error(f"visible poll {r.status_code}")
                                break
                            if item in r.json()["ids"]:
                                visible.append((time.perf_counter() - t1) * 1e3)
                                polls.append(poll)
                                break
                        else:
                            error("never visible in 100 polls")
                    else:
                        user = rng.choice(users)
                        t0 = time.perf_counter()
                        r = await http.get(f"/v1/users/{user}/recommendations", params={"k": 20})
                        if r.status_code != 200:
                            error(f"recs {r.status_code}")
                            continue
                        recs.append((time.perf_counter() - t0) * 1e3)
                except httpx.HTTPError as err:
                    error(f"{type(err).__name__}: {str(err)[:80]}")

        await asyncio.gather(*(client(s) for s in range(clients)))
        elapsed = time.perf_counter() - start
    return {
        "upload_p50_ms": _pct(uploads, 50),
        "upload_p99_ms": _pct(uploads, 99),
        "visible_p50_ms": _pct(visible, 50),
        "visible_p99_ms": _pct(visible, 99),
        "visible_max_polls": max(polls, default=None),
        "uploads_per_s": round(len(uploads) / elapsed, 2),
        "recs_qps": round(len(recs) / elapsed, 2),
        "recs_p50_ms": _pct(recs, 50),
        "recs_p99_ms": _pct(recs, 99),
        "errors": errors,
        "error_kinds": kinds,
        "uploads": len(uploads),
        "recs": len(recs),
        "elapsed_s": round(elapsed, 2),
    }


def serve(artifact: Path, store: Path, batching: bool, log: Path) -> tuple[subprocess.Popen, str]:
    """A `coldstart serve --ranker` process on 127.0.0.1, ready; (process, url)."""
    import httpx

    port = free_port()
    cmd = [sys.executable, "-m", "coldstart", "serve", "--ranker", str(artifact)]
    cmd += ["--ranker-store", str(store), "--encoder", "minilm", "--insecure-writes"]
    cmd += ["--port", str(port), "--log-level", "warning"]
    cmd += [] if batching else ["--no-batching"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "ab") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server never became ready")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--upload-share", type=float, default=0.25)
    p.add_argument("--max-uploads", type=int, default=900, help="below the server's max_k")
    p.add_argument("--method", default="ours")
    p.add_argument("--modes", nargs="+", default=["batched", "unbatched"])
    args = p.parse_args(argv)
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="freshness-") as tmp:
        work = Path(tmp)
        users, texts = build_artifact(work / "method", args.method)
        for mode in args.modes:
            proc, url = serve(
                work / "method", work / f"store-{mode}", mode == "batched", work / "log"
            )
            try:
                got = asyncio.run(
                    load(
                        url,
                        users,
                        texts,
                        args.clients,
                        args.seconds,
                        args.upload_share,
                        args.max_uploads,
                        1000,
                    )
                )
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
            rows[mode] = {
                "bench": "freshness",
                "batching": mode == "batched",
                "clients": args.clients,
                "seconds": args.seconds,
                "method": args.method,
                **got,
            }
            print(json.dumps(rows[mode]), flush=True)
    if {"batched", "unbatched"} <= rows.keys():
        b, u = rows["batched"], rows["unbatched"]
        print(
            json.dumps(
                {
                    "bench": "freshness_batching",
                    "uploads_per_s_speedup": round(b["uploads_per_s"] / u["uploads_per_s"], 2)
                    if u["uploads_per_s"]
                    else None,
                    "upload_p99_ratio": round(b["upload_p99_ms"] / u["upload_p99_ms"], 2)
                    if u["upload_p99_ms"]
                    else None,
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
