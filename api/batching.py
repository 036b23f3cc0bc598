"""Micro-batching: work from requests that arrive together runs as one call.

Each request hands its job to a batcher and awaits its own result. A single worker task
collects jobs (for up to ``wait_ms``, or just those already waiting when ``wait_ms`` is
0), runs one call in a thread, and hands each request its part.

- :class:`EncoderBatcher`: clips of several uploads share one encoder call (on a GPU
  the difference between many tiny calls and a few full ones).
- :class:`SearchBatcher`: unfiltered vector searches share one FAISS search and one
  SQLite read. At low load each search runs alone, at once; under load a batch waits
  (at most ``gather_ms``) for as many searches as the recent batches held, which costs
  less per query than separate calls. A batch expected to be quick runs on the event
  loop itself, without a thread (:class:`SearchBatcher` says when and why).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import time
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

    def wait_for_size(self) -> int:
        """The batch size worth waiting for (up to ``wait_ms``); jobs already queued join
        a batch whatever this says, up to ``max_batch``."""
        return self.max_batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self._queue.get()]
            size = jobs[0].size
            wanted = self.wait_for_size()
            deadline = loop.time() + self.wait_s
            while size < self.max_batch:
                if not self._queue.empty():
                    job = self._queue.get_nowait()
                else:
                    remaining = deadline - loop.time()
                    if remaining <= 0 or size >= wanted:
                        break
                    try:
                        job = await asyncio.wait_for(self._queue.get(), remaining)
                    except TimeoutError:
                        break
                jobs.append(job)
                size += job.size
            await self._serve(jobs)

    async def call(self, payloads: list[Any]) -> Sequence[R]:
        """:meth:`run_batch` in a worker thread (subclasses may decide otherwise)."""
        return await run_in_threadpool(self.run_batch, payloads)

    async def _serve(self, jobs: list[_Job[R]]) -> None:
        try:
            results = await self.call([job.payload for job in jobs])
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
#: A batch of searches runs on the event loop when it is expected to take less than this
#: (milliseconds); longer ones run in a thread. 10 ms: a batch of 16 queries at k=10 on
#: a slow afternoon of a 2-core machine (0.55 ms a query at 100k vectors), and far below
#: what a large k or a catch-up with new vectors takes (tens to hundreds of milliseconds).
INLINE_BATCH_MS = 10.0
#: What one query costs besides its hits, in hits (finding its lists and scanning them,
#: about 20 hits' worth of reading and decoding stored rows at 100k vectors).
QUERY_COST_IN_HITS = 20
#: Weight of the latest batch in the running average of the cost per unit of work.
_SMOOTHING = 0.2
#: How long a batch of searches may wait for more searches (milliseconds). At 16 clients
#: on two workers 2 ms beat 1 ms (p99 x0.80 and x0.92 in two runs) and 4 ms (x0.97).
GATHER_MS = 2.0
#: How many recent batches say what size is worth waiting for (their largest).
_RECENT_BATCHES = 4


class SearchBatcher(_MicroBatcher[list[Any]]):
    """Batches single-vector searches: ``search(queries, k)`` answers each row.

    A batch runs on the event loop itself when it is expected to take under
    ``inline_ms``, and in a worker thread otherwise. Its expected time is its work (each
    query counts :data:`QUERY_COST_IN_HITS` plus its ``k``) times a moving average of the
    time per unit of work of the batches before; the first batch, and every batch while
    ``in_loop_ok()`` says no (an index that must first catch up with new vectors, a
    registry to read again), go to a thread.

    What a batch is charged: on the loop, its wall time (what it kept the loop from
    doing); in a thread, the CPU time of that thread. A thread's wall time also counts its
    waits for the GIL, which the loop holds while it parses and answers other requests: on
    a busy server that made every batch look two or three times dearer than it was, and
    once batches went to threads they never came back.

    Under load a batch waits, at most ``gather_ms``, until it holds as many searches as
    the largest of the last few batches. Without that, the first search of each wave of
    requests ran alone: at 16 clients on two workers a third of the batches held one
    search, and each batch has a fixed cost (IVF's coarse quantiser alone is about 0.13
    ms). At low load the recent batches held one search, so a search does not wait.

    Why not always a thread: on a 2-core machine, handing a batch of 100k vectors (about
    1 ms) to a thread and back cost about 0.1 ms of CPU, and a second runnable thread per
    worker let the scheduler preempt whichever thread held the GIL, stalling every
    request of that worker; on the loop, p99 at 16 clients was 9% lower and QPS 8% higher
    (BENCHMARKS.md). Why not always the loop: a large k, a large or memory-mapped index,
    or catching up with a materialisation take tens or hundreds of milliseconds, and the
    loop must keep answering (health checks, uploads) meanwhile.
    """

    def __init__(
        self,
        search: SearchFn,
        *,
        max_batch: int = 64,
        inline_ms: float = INLINE_BATCH_MS,
        gather_ms: float = GATHER_MS,
        in_loop_ok: Callable[[], bool] = lambda: True,
    ) -> None:
        super().__init__(max_batch=max_batch, wait_ms=gather_ms)
        self.search = search
        self._recent: collections.deque[int] = collections.deque(maxlen=_RECENT_BATCHES)
        self.inline_s = inline_ms / 1000
        self.in_loop_ok = in_loop_ok
        self.per_unit_s: float | None = None
        """Moving average of seconds per unit of work (None before the first batch)."""

    def expected_s(self, payloads: list[Any]) -> float | None:
        """How long a batch of these searches should take (None: not known yet)."""
        if self.per_unit_s is None:
            return None
        return self.per_unit_s * _work(payloads)

    def wait_for_size(self) -> int:
        return max(self._recent, default=1)

    async def call(self, payloads: list[Any]) -> Sequence[list[Any]]:
        self._recent.append(len(payloads))
        expected = self.expected_s(payloads)
        if expected is not None and expected < self.inline_s and self.in_loop_ok():
            return self._timed(payloads, time.perf_counter)
        return await run_in_threadpool(self._timed, payloads, time.thread_time)

    def _timed(self, payloads: list[Any], clock: Callable[[], float]) -> list[list[Any]]:
        start = clock()
        try:
            return self.run_batch(payloads)
        finally:
            took = (clock() - start) / _work(payloads)
            last = self.per_unit_s
            self.per_unit_s = took if last is None else last + _SMOOTHING * (took - last)

    async def nearest(self, vector: np.ndarray, k: int) -> list[Any]:
        return await self.submit((vector, k))

    def run_batch(self, payloads: list[Any]) -> list[list[Any]]:
        # One search per distinct k: searching every query at the batch's widest k made
        # one client at k=1000 turn its neighbours' k=10 searches into k=1000 ones (each
        # reading and decoding 1,000 stored rows): 32 clients at k=10 went from about
        # 6,300 to 419 answers in 8 s. It also keeps the cost estimate (:func:`_work`) true.
        answers: list[list[Any]] = [[] for _ in payloads]
        by_k: dict[int, list[int]] = {}
        for i, (_, k) in enumerate(payloads):
            by_k.setdefault(k, []).append(i)
        for k, rows in by_k.items():
            queries = np.stack([payloads[i][0] for i in rows])
            for i, hits in zip(rows, self.search(queries, k), strict=True):
                answers[i] = hits
        return answers


def _work(payloads: list[Any]) -> int:
    """Units of work of a batch of ``(vector, k)`` searches (see :class:`SearchBatcher`)."""
    return sum(QUERY_COST_IN_HITS + k for _, k in payloads)
