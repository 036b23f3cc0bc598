"""Micro-batching: work from requests that arrive together runs as one call.

Each request hands its job to a batcher and awaits its own result. A single worker task
collects jobs (for up to ``wait_ms``, or just those already waiting when ``wait_ms`` is
0), runs one call in a thread, and hands each request its part.

- :class:`EncoderBatcher`: clips of several uploads share one encoder call (on a GPU
  the difference between many tiny calls and a few full ones).
- :class:`SearchBatcher`: unfiltered vector searches share one FAISS search and one
  SQLite read. It does not wait: at low load each search runs alone; under load the
  searches that queued during the previous call go together, which costs less per
  query than separate calls and needs one thread hop instead of one per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
from starlette.concurrency import run_in_threadpool

from hear_features.embedding import Encoder

R = TypeVar("R")


@dataclass
class _Job(Generic[R]):
    payload: Any
    size: int
    future: asyncio.Future[R] = field(repr=False)


class _MicroBatcher(Generic[R]):
    """Collects jobs and serves them in batches; subclasses say how a batch is run."""

    def __init__(self, *, max_batch: int, wait_ms: float) -> None:
        self.max_batch = max_batch
        self.wait_s = wait_ms / 1000
        self._queue: asyncio.Queue[_Job[R]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def submit(self, payload: Any, size: int = 1) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(payload, size, future))
        return await future

    def run_batch(self, payloads: list[Any]) -> Sequence[R]:
        """One result per payload; runs in a worker thread."""
        raise NotImplementedError

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self._queue.get()]
            size = jobs[0].size
            deadline = loop.time() + self.wait_s
            while size < self.max_batch:
                if not self._queue.empty():
                    job = self._queue.get_nowait()
                else:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        job = await asyncio.wait_for(self._queue.get(), remaining)
                    except TimeoutError:
                        break
                jobs.append(job)
                size += job.size
            await self._serve(jobs)

    async def _serve(self, jobs: list[_Job[R]]) -> None:
        try:
            results = await run_in_threadpool(self.run_batch, [job.payload for job in jobs])
        except Exception as exc:  # handed to every waiting request
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        for job, result in zip(jobs, results, strict=True):
            if not job.future.done():
                job.future.set_result(result)


class EncoderBatcher(_MicroBatcher[np.ndarray]):
    def __init__(
        self,
        encoder: Encoder,
        *,
        max_batch: int = 64,
        wait_ms: float = 5.0,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(max_batch=max_batch, wait_ms=wait_ms)
        self.encoder = encoder
        self.on_batch = on_batch

    async def encode(self, clips: np.ndarray) -> np.ndarray:
        return await self.submit(clips, len(clips))

    def run_batch(self, payloads: list[Any]) -> list[np.ndarray]:
        batch = np.concatenate(payloads)
        vectors = self.encoder.encode(batch)
        if self.on_batch is not None:
            self.on_batch(len(batch))
        bounds = np.cumsum([0, *(len(p) for p in payloads)])
        return [vectors[a:b] for a, b in itertools.pairwise(bounds)]


SearchFn = Callable[[np.ndarray, int], list[list[Any]]]


class SearchBatcher(_MicroBatcher[list[Any]]):
    """Batches single-vector searches: ``search(queries, k)`` answers each row."""

    def __init__(self, search: SearchFn, *, max_batch: int = 64) -> None:
        super().__init__(max_batch=max_batch, wait_ms=0.0)
        self.search = search

    async def nearest(self, vector: np.ndarray, k: int) -> list[Any]:
        return await self.submit((vector, k))

    def run_batch(self, payloads: list[Any]) -> list[list[Any]]:
        queries = np.stack([vector for vector, _ in payloads])
        widest = max(k for _, k in payloads)
        answers = self.search(queries, widest)
        return [hits[:k] for hits, (_, k) in zip(answers, payloads, strict=True)]
