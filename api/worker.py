"""What one uvicorn worker holds, and its lifecycle: the search service over the feature
repository, the encoder and the micro-batchers in front of them.

Built in the app's lifespan, i.e. inside each uvicorn worker after it has forked: a
process that forks after FAISS or OpenMP work can hang, so nothing of this exists
before. Routers reach it through :data:`hear_features.api.deps.WorkerDep`.

Blocking work (decoding, encoding, search, Feast retrieval) runs in threads, at most
``settings.concurrency`` at a time, so the event loop keeps answering; batches of
unfiltered searches expected to take under 10 ms run on the loop itself
(:class:`~hear_features.api.batching.SearchBatcher`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from feast import FeatureStore
from hear_features.api.batching import EncoderBatcher, SearchBatcher
from hear_features.api.metrics import Metrics
from hear_features.api.settings import ApiSettings
from starlette.concurrency import run_in_threadpool

from hear_features.encoders import HearEncoder
from hear_features.errors import ConfigError, Overloaded
from hear_features.featurestore import runtime
from hear_features.featurestore.config import EncoderSettings, audio_sources
from hear_features.featurestore.repo import open_store
from hear_features.featurestore.search import ClipSearch, Filter, Match
from hear_features.schema import EMBEDDING

log = logging.getLogger(__name__)
T = TypeVar("T")


class Slot(StrEnum):
    """Kinds of work with slots of their own."""

    lookup = "look-up"
    """Searches, clip look-ups, clip media, maps."""
    upload = "upload"
    """Decoding uploaded audio."""
    training = "training-set"
    """Building training sets (Feast's offline retrieval)."""


class Worker:
    """The resources of one worker process and whether it is ready to use them."""

    def __init__(self, settings: ApiSettings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.store: FeatureStore = open_store(settings.repo)
        # Searches of concurrent requests run side by side, one OpenMP thread each.
        self.search = ClipSearch(self.store, threads=1)
        self.encoder: HearEncoder | None = None
        self.encoder_batcher: EncoderBatcher | None = None
        self.search_batcher = SearchBatcher(
            self._search_unfiltered, in_loop_ok=self.search.is_fresh
        )
        self.index_vectors = 0
        self.ready = False
        self.detail: str | None = "starting"
        self.feast_lock = threading.Lock()  # Feast's DuckDB retrieval is not re-entrant
        self.slots = WorkSlots(settings)
        self._refresher: asyncio.Task[None] | None = None

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        await self.refresh()
        if self.settings.load_encoder:
            settings = EncoderSettings.from_repo_config(self.store.config)
            self.encoder = await run_in_threadpool(runtime.encoder_for, settings)
            self.encoder_batcher = EncoderBatcher(
                self.encoder,
                max_batch=settings.batch_size,
                wait_ms=self.settings.batch_wait_ms,
                on_batch=self.metrics.batch_size.observe,
            )
            self.encoder_batcher.start()
        self.search_batcher.start()
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_forever())
        self.ready = True
        self.detail = None

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        if self.encoder_batcher is not None:
            await self.encoder_batcher.stop()
        await self.search_batcher.stop()

    async def refresh(self) -> None:
        """Apply what other processes (``feast materialize``) wrote since the last look.

        The index swaps in changes under its lock, so a search sees the index before or
        after an update, never half of one.
        """
        self.index_vectors = await run_in_threadpool(self.search.refresh)
        self.metrics.index_size.set(self.index_vectors)

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.refresh_s)
            try:
                await self.refresh()
            except Exception:  # keep serving the last good index
                log.exception("index refresh failed; still serving the previous index")

    @functools.cached_property
    def audio_roots(self) -> tuple[Path, ...]:
        """The store's audio roots (``audio_roots`` / ``HEAR_AUDIO_ROOTS``): responses give
        paths relative to them. None usable: no paths are given."""
        try:
            return audio_sources(self.store.config).roots
        except ConfigError as exc:
            log.warning("no relative paths in responses: %s", exc)
            return ()

    # ---- shared work --------------------------------------------------------------------

    async def run(self, fn: Callable[..., T], *args: Any, slot: Slot = Slot.lookup) -> T:
        """Run blocking work in a thread, in a work slot of its kind (:class:`WorkSlots`)."""
        return await self.slots.run(fn, *args, slot=slot)

    def require_encoder(self) -> tuple[HearEncoder, EncoderBatcher]:
        if self.encoder is None or self.encoder_batcher is None:
            raise ConfigError("this server was started without an encoder (load_encoder: false)")
        return self.encoder, self.encoder_batcher

    async def nearest(
        self,
        vectors: np.ndarray,
        k: int,
        filters: Filter | None = None,
        include_embedding: bool = False,
    ) -> list[list[Match]]:
        """The ``k`` stored clips nearest to each row of ``vectors`` (routes check ``k``
        against the caller's limit first, :meth:`~hear_features.api.auth.Caller.check_k`)."""
        if filters is None and not include_embedding and len(vectors) == 1:
            # The common case: one unfiltered query, batched with those arriving with it.
            return [await self.search_batcher.nearest(vectors[0], k)]
        hit = self.search.hit_features
        features = [*hit, EMBEDDING] if include_embedding else hit
        return await self.run(
            lambda: self.search.search(vectors, k, filters=filters, features=features)
        )

    def _search_unfiltered(self, queries: np.ndarray, k: int) -> list[list[Match]]:
        return self.search.search(queries, k)


class WorkSlots:
    """Blocking work in threads, in slots per kind of work, each request with a budget.

    Each kind has its own slots (``concurrency``, ``upload_concurrency``,
    ``training_concurrency``), so uploads cannot starve look-ups. A request that waits
    longer than ``slot_wait_s`` for a slot, or whose work runs past ``time_budget_s``, is
    answered 503 (:class:`Overloaded`); work already running in a thread cannot be
    stopped from here, so its slot stays taken until it ends (decoding stops itself at
    the same budget, :class:`~hear_features.audio.AudioLimits`).
    """

    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings
        self._slots = {
            Slot.lookup: asyncio.Semaphore(settings.concurrency),
            Slot.upload: asyncio.Semaphore(settings.upload_concurrency),
            Slot.training: asyncio.Semaphore(settings.training_concurrency),
        }

    async def run(self, fn: Callable[..., T], *args: Any, slot: Slot = Slot.lookup) -> T:
        settings = self.settings
        slots = self._slots[slot]
        try:
            await asyncio.wait_for(slots.acquire(), settings.slot_wait_s)
        except TimeoutError:
            raise Overloaded(
                f"all {slot} work slots stayed busy for {settings.slot_wait_s:g} s; "
                "try again shortly"
            ) from None
        work = asyncio.ensure_future(run_in_threadpool(fn, *args))
        work.add_done_callback(lambda done: _release(slots, done))
        try:
            return await asyncio.wait_for(asyncio.shield(work), settings.time_budget_s)
        except TimeoutError:
            raise Overloaded(
                f"the request's work took more than its budget of {settings.time_budget_s:g} s"
            ) from None


def _release(slots: asyncio.Semaphore, done: asyncio.Future[Any]) -> None:
    slots.release()
    if not done.cancelled():
        done.exception()  # retrieved, so an abandoned failure is not reported as unhandled
