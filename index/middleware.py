"""The app's pure-ASGI middleware and its Prometheus metrics.

- `BodyLimitMiddleware`: 413 for bodies over the server's limit, declared or streamed; 408
  (and the connection closed) for a body not received within the body-read timeout.
- `MetricsMiddleware`: request counts and latency per route template, outermost so it also
  counts the body limit's 413s. Every label comes from a fixed set (issue 23, E): methods
  outside `METHODS` count as "other", paths are route templates or "unmatched".
- `Metrics`: the app's own Prometheus registry (requests, latency, search batch sizes, items,
  last log record, readiness).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

_BODY_METHODS = {"POST", "PUT", "PATCH"}
METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"})
UNMATCHED = "unmatched"  # the route label of every path no route matched


class BodyLimitMiddleware:
    """413 for bodies over `limit` bytes, by Content-Length or while streaming (chunked);
    408 and a closed connection when the whole body has not arrived `timeout_s` seconds after
    the app first asks for it (a client trickling its body would otherwise hold a connection
    and a task forever; None: no timeout).

    Only methods with a body are limited (no route reads the body of a GET or DELETE)."""

    def __init__(self, app: Any, limit: int, timeout_s: float | None = None) -> None:
        self.app, self.limit, self.timeout_s = app, limit, timeout_s

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope.get("method") not in _BODY_METHODS:
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", []):
            if name == b"content-length" and scope.get("method") in _BODY_METHODS:
                try:
                    declared = int(value)
                except ValueError:
                    return await _plain(send, 400, "bad Content-Length")
                if declared > self.limit:
                    return await _plain(send, 413, f"body over the {self.limit}-byte limit")
        seen = 0
        started = False
        deadline: float | None = None  # set at the first read: a total, not a per-chunk, limit
        done = False  # once the body is in, reads (e.g. waiting for a disconnect) are free

        async def limited_receive() -> dict:
            nonlocal seen, deadline, done
            if done or self.timeout_s is None:
                message = await receive()
            else:
                loop = asyncio.get_running_loop()
                if deadline is None:
                    deadline = loop.time() + self.timeout_s
                try:
                    message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    raise _BodyTimeout() from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge()
                done = not message.get("more_body", False)
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _plain(send, 413, f"body over the {self.limit}-byte limit")
        except _BodyTimeout:
            if not started:  # `connection: close` makes uvicorn drop the half-sent request
                await _plain(send, 408, f"request body not received within {self.timeout_s} s")


class _TooLarge(BaseException):
    """BaseException on purpose: FastAPI turns any Exception raised while reading a body into
    a 400; this one must reach BodyLimitMiddleware to become a 413."""


class _BodyTimeout(BaseException):
    """BaseException for the same reason as _TooLarge: it must reach BodyLimitMiddleware."""


async def _plain(send: Callable, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()  # the one error model (index.api)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})


class MetricsMiddleware:
    """Request counts and latency per route template (pure ASGI: cheap on the hot path)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = [500]

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or UNMATCHED  # a template, never the raw path
            method = scope.get("method", "")
            method = method if method in METHODS else "other"
            self.metrics.requests.labels(method, path, str(status[0])).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - start)


class Metrics:
    """The app's Prometheus metrics, in a registry of its own (two apps never share one)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "coldstart_http_requests",
            "HTTP requests by method, route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "coldstart_http_request_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=self.registry,
        )
        self.batch = Histogram(
            "coldstart_search_batch_rows",
            "query rows per FAISS call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024),
            registry=self.registry,
        )
        self.items = Gauge("coldstart_index_items", "items in the index", registry=self.registry)
        self.lsn = Gauge(
            "coldstart_wal_lsn", "last acknowledged WAL record", registry=self.registry
        )
        self.ready = Gauge("coldstart_ready", "1 once the index is loaded", registry=self.registry)


__all__ = ["METHODS", "UNMATCHED", "BodyLimitMiddleware", "Metrics", "MetricsMiddleware"]
