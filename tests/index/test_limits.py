"""Issue 23, D-E and slow bodies: per-request memory and metric series stay bounded, and slow
clients are cut off. Every server is a real uvicorn on 127.0.0.1 (loopback only)."""

from __future__ import annotations

import gc
import io
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import psutil
import pytest
from PIL import Image

from coldstart.data.shards import write_shards
from coldstart.index.browse import THUMB_SIZES, BrowseConfig
from coldstart.index.catalogue import MediaStore
from coldstart.index.config import ServerConfig
from coldstart.index.middleware import METHODS
from coldstart.index.server import create_app
from tests.index.conftest import live_server, wait_ready


def test_thumbnail_sizes_round_up_to_a_fixed_set():
    config = BrowseConfig()
    assert [config.rounded(s) for s in (16, 17, 64, 65, 256, 257, 1000, 1024)] == [
        16,
        24,
        64,
        96,
        256,
        384,
        1024,
        1024,
    ]
    assert {config.rounded(s) for s in range(16, 1025)} == {s for s in THUMB_SIZES if s <= 1024}
    # A max_thumb_size off the ladder is itself served: every accepted size has an answer.
    capped = BrowseConfig(max_thumb_size=1000)
    assert capped.rounded(900) == 1000 and capped.rounded(1000) == 1000
    assert capped.rounded(700) == 768


class PeakRss:
    """Samples this process's RSS every few ms in a thread; `peak` is the highest seen."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_distinct_thumbnail_sizes_keep_memory_bounded(durable, tmp_path):
    """The reproducer: a ~38 KB PNG of 6000 x 6600 pixels (under the 40 MP limit), 80
    concurrent requests with distinct sizes: once 8 GB, now one decode and < 1 GB of growth."""
    buf = io.BytesIO()
    Image.new("RGB", (6000, 6600), (10, 200, 30)).save(buf, format="PNG", optimize=True)
    png = buf.getvalue()
    assert len(png) < 200_000  # tens of KB: solid colour
    paths = write_shards([{"key": "1", "image": png}], str(tmp_path / "big-%02d.tar"))
    del buf
    media = MediaStore.scan(paths)
    browse = BrowseConfig()
    app = create_app(durable, ServerConfig(), media=media, browse=browse)
    sizes = list(range(16, 16 + 80 * 12, 12))  # 80 distinct sizes in 16..964
    with live_server(app) as url, httpx.Client(base_url=url, timeout=120) as client:
        wait_ready(client)
        gc.collect()
        base = psutil.Process().memory_info().rss

        def fetch(size: int) -> httpx.Response:
            with httpx.Client(base_url=url, timeout=120) as own:
                return own.get("/v1/items/1/image", params={"size": size})

        with PeakRss() as rss, ThreadPoolExecutor(80) as pool:
            answers = list(pool.map(fetch, sizes))
    media.close()
    growth = rss.peak - base
    print(f"peak RSS growth {growth / 2**20:.0f} MiB")
    assert growth < 1 << 30, f"peak RSS grew by {growth / 2**20:.0f} MiB"
    for size, r in zip(sizes, answers, strict=True):
        assert r.status_code == 200, r.text
        thumb = Image.open(io.BytesIO(r.content))
        thumb.load()
        assert thumb.format == "JPEG" and max(thumb.size) == browse.rounded(size)
    assert app.state.thumbnails.decodes == 1  # decoded once for all 80 sizes


def series(client: httpx.Client) -> set[str]:
    """The /metrics series (name and labels), values left out."""
    text = client.get("/metrics").text
    return {line.rsplit(" ", 1)[0] for line in text.splitlines() if not line.startswith("#")}


def test_made_up_methods_add_no_metric_series(durable):
    app = create_app(durable, ServerConfig())
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_ready(client)
        host, port = urlsplit(url).hostname, urlsplit(url).port

        def burst(first: int, count: int) -> int:
            """`count` pipelined requests with made-up methods and paths on one connection;
            returns the responses read back."""
            reqs = b"".join(
                f"M{i}X /made/up/{i} HTTP/1.1\r\nHost: a\r\n\r\n".encode()
                for i in range(first, first + count)
            )
            with socket.create_connection((host, port), timeout=10) as sock:
                sock.sendall(reqs)
                got = b""
                while got.count(b"HTTP/1.1 ") < count:
                    chunk = sock.recv(1 << 16)
                    if not chunk:
                        break
                    got += chunk
            return got.count(b"HTTP/1.1 ")

        burst(0, 1)  # the "other" / unmatched series exist from here on...
        series(client)  # ...and those of /metrics itself
        before = series(client)
        before_size = len(client.get("/metrics").content)
        answered = sum(burst(first, 500) for first in range(1, 20_001, 500))
        after = series(client)
        after_size = len(client.get("/metrics").content)
    print(f"/metrics {before_size} -> {after_size} bytes, {answered} answered of 20000")
    assert answered == 20_000
    assert after == before
    methods = {s.split('method="')[1].split('"')[0] for s in after if 'method="' in s}
    assert methods <= METHODS | {"other"}
    assert any('route="unmatched"' in s for s in after)


def test_slow_bodies_are_cut_off_while_health_stays_fast(durable):
    timeout_s = 1.0
    app = create_app(durable, ServerConfig(body_timeout_s=timeout_s))
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        wait_ready(client)
        host, port = urlsplit(url).hostname, urlsplit(url).port
        head = (
            b"POST /v1/search HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10000\r\n\r\n{"
        )
        socks = []
        for _ in range(30):
            sock = socket.create_connection((host, port), timeout=5)
            sock.sendall(head)
            sock.setblocking(False)
            socks.append(sock)
        start = time.monotonic()
        cut: dict[int, tuple[float, bytes]] = {}
        health: list[float] = []
        while len(cut) < len(socks) and time.monotonic() - start < 6:  # stops by itself
            for n, sock in enumerate(socks):
                if n in cut:
                    continue
                try:
                    sock.send(b" ")  # trickle: one byte per round
                    data = sock.recv(4096)
                    cut[n] = (time.monotonic() - start, data)  # b"": closed
                except BlockingIOError:
                    pass
                except OSError:  # reset / broken pipe: closed
                    cut[n] = (time.monotonic() - start, b"")
            t0 = time.monotonic()
            assert client.get("/health").status_code == 200
            health.append(time.monotonic() - t0)
            time.sleep(0.1)
        for sock in socks:
            sock.close()
    times = sorted(t for t, _ in cut.values())
    print(f"cut off after {times[0]:.2f}..{times[-1]:.2f} s; /health max {max(health):.3f} s")
    assert len(cut) == len(socks), "some slow clients were never cut off"
    assert timeout_s * 0.9 <= times[0] and times[-1] <= timeout_s + 2.0
    assert all(data == b"" or data.startswith(b"HTTP/1.1 408") for _, data in cut.values())
    assert max(health) < 0.5


@pytest.mark.parametrize("bad", [{"body_timeout_s": 0}, {"max_connections": 0}])
def test_limits_are_checked(bad):
    with pytest.raises(ValueError):
        ServerConfig(**bad)
