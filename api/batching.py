"""Micro-batching: clips from requests that arrive together share one encoder call.

Each request hands its clips to :meth:`EncoderBatcher.encode` and awaits its vectors.
A single worker task collects clips for up to ``wait_ms`` (or until a batch is full),
runs the encoder once in a thread, and hands each request its slice. On a GPU this is
the difference between many tiny calls and a few full ones.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from starlette.concurrency import run_in_threadpool

from hear_features.embedding import Encoder


@dataclass
class _Job:
    clips: np.ndarray
    future: asyncio.Future[np.ndarray]


class EncoderBatcher:
    def __init__(
        self,
        encoder: Encoder,
        *,
        max_batch: int = 64,
        wait_ms: float = 5.0,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.encoder = encoder
        self.max_batch = max_batch
        self.wait_s = wait_ms / 1000
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def encode(self, clips: np.ndarray) -> np.ndarray:
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(clips, future))
        return await future

    async def _run(self) -> None:
        while True:
            jobs = [await self._queue.get()]
            size = len(jobs[0].clips)
            deadline = asyncio.get_running_loop().time() + self.wait_s
            while size < self.max_batch:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
                jobs.append(job)
                size += len(job.clips)
            await self._serve(jobs)

    async def _serve(self, jobs: list[_Job]) -> None:
        batch = np.concatenate([job.clips for job in jobs])
        try:
            vectors = await run_in_threadpool(self.encoder.encode, batch)
        except Exception as exc:  # handed to every waiting request
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        if self.on_batch is not None:
            self.on_batch(len(batch))
        start = 0
        for job in jobs:
            stop = start + len(job.clips)
            if not job.future.done():
                job.future.set_result(vectors[start:stop])
            start = stop
