"""Micro-batching of concurrent searches into one FAISS call (like Triton's dynamic batching).

Requests queue up; one worker takes the first, waits at most `max_wait_ms` for more (or until
`max_batch_size` query rows are queued), runs a single search for all of them in a worker
thread, and hands each caller its slice. While a batch is being searched the queue keeps
filling, so under load batches form without waiting at all.

Why it pays: a FAISS search has a fixed per-call cost (Python/C++ crossing, thread pool
start, result allocation) and, for flat and IVF scans, many queries turn into one matrix
product (BLAS) instead of many vector-matrix products that each stream the whole database
through memory.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

SearchFn = Callable[[np.ndarray, int], tuple[list[list], list[np.ndarray]]]


@dataclass
class _Pending:
    payload: Any
    size: int
    future: asyncio.Future


class BatchQueue:
    """`await queue.submit(payload, size)` -> fn's result for that payload, where concurrent
    payloads are coalesced: fn(list of payloads) -> list of results (same order), run in a
    worker thread on up to `max_batch_size` rows (sizes summed) gathered within `max_wait_ms`
    of the first. Used for searches (MicroBatcher) and for uploads (encoder + one durable
    write per batch: index.routes_recs)."""

    def __init__(
        self,
        fn: Callable[[list[Any]], list[Any]],
        max_batch_size: int = 64,
        max_wait_ms: float = 1.0,
        on_batch: Callable[[int], None] | None = None,
        workers: int = 1,
        initializer: Callable[[], None] | None = None,
        thread_name_prefix: str = "batch",
    ) -> None:
        self.fn = fn
        self.max_batch_size = max(1, int(max_batch_size))
        self.max_wait_s = max(0.0, float(max_wait_ms) / 1000.0)
        self.on_batch = on_batch
        self.workers = max(1, int(workers))
        self._queue: asyncio.Queue[_Pending] | None = None
        self._tasks: list[asyncio.Task] = []
        # `workers` batches may run at once, each in its own thread (FAISS releases the GIL);
        # with one, batches run back to back and FAISS parallelizes inside a call.
        # initializer: runs once in each worker thread (e.g. per-thread OpenMP settings).
        self._pool = concurrent.futures.ThreadPoolExecutor(
            self.workers, thread_name_prefix=thread_name_prefix, initializer=initializer
        )

    async def submit(self, payload: Any, size: int = 1) -> Any:
        if self._queue is None:
            self._queue = asyncio.Queue()
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._run()) for _ in range(self.workers)]
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(payload, size, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            batch = [first]
            rows = first.size
            waited = False
            while rows < self.max_batch_size:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    if waited or self.max_wait_s == 0:
                        break
                    waited = True
                    await asyncio.sleep(self.max_wait_s)
                    continue
                batch.append(item)
                rows += item.size
            try:
                await self._dispatch(loop, batch)
            except Exception as err:  # never let one bad batch stop the worker
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(err)

    async def _dispatch(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        live = [item for item in batch if not item.future.cancelled()]
        if not live:
            return
        if self.on_batch is not None:
            self.on_batch(sum(item.size for item in live))
        results = await loop.run_in_executor(self._pool, self.fn, [i.payload for i in live])
        for item, result in zip(live, results):
            if not item.future.done():
                if isinstance(result, BaseException):  # one payload failed, not the batch
                    item.future.set_exception(result)
                else:
                    item.future.set_result(result)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        self._pool.shutdown(wait=False)


class MicroBatcher(BatchQueue):
    """`await batcher.search(queries (q, D), k)` -> (ids per query, scores per query)."""

    def __init__(
        self,
        search_fn: SearchFn,
        max_batch_size: int = 64,
        max_wait_ms: float = 1.0,
        on_batch: Callable[[int], None] | None = None,
        workers: int = 1,
        initializer: Callable[[], None] | None = None,
    ) -> None:
        self.search_fn = search_fn
        super().__init__(
            self._search_all,
            max_batch_size,
            max_wait_ms,
            on_batch,
            workers,
            initializer,
            thread_name_prefix="faiss-search",
        )

    async def search(self, queries: np.ndarray, k: int) -> tuple[list[list], list[np.ndarray]]:
        return await self.submit((queries, k), len(queries))

    def _search_all(self, batch: list[tuple[np.ndarray, int]]) -> list[tuple[list, list]]:
        """One search for every query of the batch (at the largest k), sliced per caller."""
        queries = np.concatenate([q for q, _ in batch], axis=0)
        ids, scores = self.search_fn(queries, max(k for _, k in batch))
        out, start = [], 0
        for q, k in batch:
            end = start + len(q)
            out.append(
                ([row[:k] for row in ids[start:end]], [row[:k] for row in scores[start:end]])
            )
            start = end
        return out
