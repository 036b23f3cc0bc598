"""The micro-batchers of the API: concurrent requests share calls, each gets its own answer."""

from __future__ import annotations

import asyncio

import numpy as np
from hear_features.api.batching import SearchBatcher


def brute_force(base: np.ndarray, calls: list[int]):  # type: ignore[no-untyped-def]
    def search(queries: np.ndarray, k: int) -> list[list[int]]:
        calls.append(len(queries))
        order = np.argsort(-(queries @ base.T), axis=1)[:, :k]
        return [row.tolist() for row in order]

    return search


def test_concurrent_searches_share_calls_and_get_their_own_k() -> None:
    rng = np.random.default_rng(0)
    base = rng.standard_normal((500, 16)).astype(np.float32)
    queries = rng.standard_normal((40, 16)).astype(np.float32)
    ks = [1 + i % 7 for i in range(40)]
    calls: list[int] = []
    search = brute_force(base, calls)

    async def main() -> list[list[int]]:
        batcher = SearchBatcher(search, max_batch=16)
        batcher.start()
        try:
            return await asyncio.gather(
                *(batcher.nearest(q, k) for q, k in zip(queries, ks, strict=True))
            )
        finally:
            await batcher.stop()

    answers = asyncio.run(main())
    expected = [search(q[None], k)[0] for q, k in zip(queries, ks, strict=True)]
    assert answers == expected
    batched = calls[: len(calls) - len(queries)]
    assert sum(batched) == len(queries) and max(batched) > 1 and max(batched) <= 16


def test_an_error_reaches_every_request_of_the_batch() -> None:
    def broken(queries: np.ndarray, k: int) -> list[list[int]]:
        raise ValueError("index went away")

    async def main() -> list[object]:
        batcher = SearchBatcher(broken)
        batcher.start()
        try:
            vec = np.zeros(4, np.float32)
            return await asyncio.gather(
                *(batcher.nearest(vec, 3) for _ in range(5)), return_exceptions=True
            )
        finally:
            await batcher.stop()

    results = asyncio.run(main())
    assert len(results) == 5
    for result in results:
        assert isinstance(result, ValueError) and "index went away" in str(result)


def test_quick_batches_run_on_the_event_loop_and_slow_ones_in_a_thread() -> None:
    """While batches are quick they skip the thread hop; after a slow one (a large or
    memory-mapped index), batches go to a thread until their average is quick again."""
    import threading
    import time

    durations = iter([0.0, 0.02, 0.0, 0.0, 0.0])
    ran_on: list[bool] = []  # True: on the event loop's own thread

    def search(queries: np.ndarray, k: int) -> list[list[int]]:
        ran_on.append(threading.current_thread() is threading.main_thread())
        time.sleep(next(durations))
        return [[0] * k for _ in queries]

    async def main() -> None:
        batcher = SearchBatcher(search, inline_ms=3.0)
        batcher.start()
        try:
            for _ in range(5):  # one at a time: each is a batch of its own
                assert await batcher.nearest(np.zeros(4, np.float32), 2) == [0, 0]
        finally:
            await batcher.stop()

    asyncio.run(main())
    # average after each batch: ~0, 4 ms (20 ms weighted 0.2), 3.2 ms, 2.6 ms
    assert ran_on == [True, True, False, False, True]
