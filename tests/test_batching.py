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
    """The first batch runs in a thread; batches expected to be quick skip the thread hop;
    after a slow one (a large or memory-mapped index), batches go to a thread until the
    average is quick again; a batch with a large k, or one while the index is not fresh,
    goes to a thread whatever the average. A batch in a thread is charged its CPU time,
    not the time it waited (for the GIL, in the real server)."""
    import threading
    import time

    cost = {"next": 0.001}  # seconds of CPU the next batch burns
    waits = {"next": 0.0}  # seconds the next batch waits without CPU
    fresh = {"now": True}
    ran_on: list[bool] = []  # True: on the event loop's own thread

    def search(queries: np.ndarray, k: int) -> list[list[int]]:
        ran_on.append(threading.current_thread() is threading.main_thread())
        end = time.thread_time() + cost["next"]
        while time.thread_time() < end:
            pass
        time.sleep(waits["next"])
        cost["next"], waits["next"] = 0.001, 0.0
        return [[0] * k for _ in queries]

    async def main() -> None:
        batcher = SearchBatcher(search, inline_ms=20.0, in_loop_ok=lambda: fresh["now"])
        batcher.start()

        async def one(k: int = 2) -> bool:
            assert await batcher.nearest(np.zeros(4, np.float32), k) == [0] * k
            return ran_on[-1]

        try:
            assert await one() is False  # nothing measured yet: a thread
            assert await one() is True  # about 1 ms expected: the loop
            assert await one(k=5000) is False  # 5020 units of work: too long for the loop
            fresh["now"] = False
            waits["next"] = 0.3
            assert await one() is False  # the index must catch up first: a thread
            fresh["now"] = True
            assert await one() is True  # 1 ms of CPU and 300 ms of waiting: charged 1 ms
            cost["next"] = 0.2
            assert await one() is True  # still expected quick; it takes 200 ms
            assert await one() is False  # now expected slow: a thread
            back = [await one() for _ in range(30)]
            assert True in back  # quick again: back on the loop
        finally:
            await batcher.stop()

    asyncio.run(main())


def test_under_load_a_batch_waits_for_as_many_searches_as_recent_batches_held() -> None:
    """Searches that arrive a little apart share a batch once batches have been large;
    at low load (recent batches of one) a search runs at once; a batch waits at most
    ``gather_ms``."""
    import time

    sizes: list[int] = []

    def search(queries: np.ndarray, k: int) -> list[list[int]]:
        sizes.append(len(queries))
        return [[0] * k for _ in queries]

    async def main() -> None:
        batcher = SearchBatcher(search, gather_ms=300.0)
        batcher.start()
        vec = np.zeros(4, np.float32)

        async def later(delay_s: float) -> list[int]:
            await asyncio.sleep(delay_s)
            return await batcher.nearest(vec, 1)

        try:
            start = time.perf_counter()
            await batcher.nearest(vec, 1)  # nothing before it: no wait
            assert time.perf_counter() - start < 0.15
            await asyncio.gather(*(batcher.nearest(vec, 1) for _ in range(4)))
            assert sizes == [1, 4]
            # two now and two 50 ms later: one batch of four, not two of two
            await asyncio.gather(later(0), later(0), later(0.05), later(0.05))
            assert sizes == [1, 4, 4]
            # a lone search waits for the others, at most gather_ms
            start = time.perf_counter()
            await batcher.nearest(vec, 1)
            assert 0.25 < time.perf_counter() - start < 2.0
            assert sizes == [1, 4, 4, 1]
            for _ in range(3):  # batches of one for a while: low load
                await batcher.nearest(vec, 1)
            start = time.perf_counter()
            await batcher.nearest(vec, 1)
            assert time.perf_counter() - start < 0.15
        finally:
            await batcher.stop()

    asyncio.run(main())


def test_a_search_with_a_large_k_does_not_widen_the_others_in_its_batch() -> None:
    """Queries of one batch are searched at their own k (one call per distinct k), so a
    client asking for 1,000 neighbours does not make every other query read 1,000 rows."""
    calls: list[tuple[int, int]] = []

    def search(queries: np.ndarray, k: int) -> list[list[int]]:
        calls.append((len(queries), k))
        return [[int(q[0])] * k for q in queries]

    async def main() -> list[list[int]]:
        batcher = SearchBatcher(search)
        batcher.start()
        try:
            ks = [10, 1000, 10, 10, 3, 1000]
            return await asyncio.gather(
                *(batcher.nearest(np.full(4, i, np.float32), k) for i, k in enumerate(ks))
            )
        finally:
            await batcher.stop()

    answers = asyncio.run(main())
    assert [len(a) for a in answers] == [10, 1000, 10, 10, 3, 1000]
    assert [a[0] for a in answers] == list(range(6))  # each its own query's answer
    assert sorted(calls) == [(1, 3), (2, 1000), (3, 10)]
