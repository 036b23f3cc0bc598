"""What a worker holds: the feature store, its vector index, the encoder.

Built in the app's lifespan, i.e. inside each uvicorn worker after it has forked: a
process that forks after FAISS or OpenMP work can hang, so nothing of this exists
before. Routers reach it through :func:`hear_features.api.dependencies.get_state`.

Blocking work (decoding, encoding, search, Feast retrieval) runs in threads, at most
``settings.concurrency`` at a time, so the event loop keeps answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from feast import FeatureStore, FeatureView
from feast.filter_models import ComparisonFilter, CompoundFilter
from feast.infra.key_encoding_utils import deserialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import feast_value_type_to_python_type
from hear_features.api.batching import EncoderBatcher, SearchBatcher
from hear_features.api.metrics import Metrics
from hear_features.api.models import (
    Aggregation,
    ClipResponse,
    Filters,
    Neighbour,
    RecordingMatch,
    WindowResult,
    WindowStrategy,
)
from hear_features.api.settings import ApiSettings
from starlette.concurrency import run_in_threadpool

from hear_features.audio import AudioLimits, WindowConfig, iter_windows
from hear_features.encoders import HearEncoder
from hear_features.errors import AudioError, HearFeaturesError, InputShapeError
from hear_features.featurestore import runtime
from hear_features.featurestore.online_store import HearOnlineStore, Hit
from hear_features.featurestore.repo import EMBEDDINGS_VIEW, open_store
from hear_features.featurestore.settings import EncoderSettings
from hear_features.featurestore.training import UnknownClipError, more_like_these, training_set

log = logging.getLogger(__name__)
T = TypeVar("T")

NEIGHBOUR_FEATURES = [
    "label",
    "subject_id",
    "dataset",
    "device",
    "recording_id",
    "offset_s",
    "audio_uri",
    "model_id",
]


class ModelMismatch(HearFeaturesError):
    http_status = 409


class ServiceState:
    """Everything the routers need, created once per worker."""

    def __init__(self, settings: ApiSettings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.store: FeatureStore = open_store(settings.repo)
        online = self.store._get_provider().online_store
        if not isinstance(online, HearOnlineStore):
            raise HearFeaturesError(
                "the API needs the repository's online store to be HearOnlineStore"
            )
        self.online: HearOnlineStore = online
        self.view: FeatureView = self.store.get_feature_view(EMBEDDINGS_VIEW)
        self.encoder: HearEncoder | None = None
        self.batcher: EncoderBatcher | None = None
        self.searches = SearchBatcher(self._search_plain)
        self.index_vectors = 0
        self.ready = False
        self.detail: str | None = "starting"
        self._limit = asyncio.Semaphore(settings.concurrency)
        self._feast_lock = threading.Lock()  # Feast's DuckDB retrieval is not re-entrant
        self._refresher: asyncio.Task[None] | None = None

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        await self.refresh()
        if self.settings.load_encoder:
            settings = EncoderSettings.from_repo_config(self.store.config)
            self.encoder = await run_in_threadpool(runtime.encoder_for, settings)
            self.batcher = EncoderBatcher(
                self.encoder,
                max_batch=settings.batch_size,
                wait_ms=self.settings.batch_wait_ms,
                on_batch=self.metrics.batch_size.observe,
            )
            self.batcher.start()
        self.searches.start()
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_forever())
        self.ready = True
        self.detail = None

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        if self.batcher is not None:
            await self.batcher.stop()
        await self.searches.stop()

    async def refresh(self) -> None:
        """Apply what other processes (``feast materialize``) wrote since the last look.

        The index handle swaps in changes under its lock, so a search sees the index
        before or after an update, never half of one.
        """
        self.index_vectors = await run_in_threadpool(
            self.online.refresh, self.store.config, self.view
        )
        self.metrics.index_size.set(self.index_vectors)

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.refresh_s)
            try:
                await self.refresh()
            except Exception:  # keep serving the last good index
                log.exception("index refresh failed; still serving the previous index")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking work in a thread, at most ``concurrency`` at a time."""
        async with self._limit:
            return await run_in_threadpool(fn, *args)

    # ---- search -------------------------------------------------------------------------

    @property
    def store_model_id(self) -> str:
        return self.online.model_id(self.store.config, self.view)

    def check_k(self, k: int) -> None:
        if not 1 <= k <= self.settings.max_k:
            raise InputShapeError(f"k must be between 1 and {self.settings.max_k}, got {k}")

    async def search(
        self, vectors: np.ndarray, k: int, filters: Filters | None, include_embedding: bool = False
    ) -> list[list[Neighbour]]:
        self.check_k(k)
        if filters is None and not include_embedding and len(vectors) == 1:
            # The common case: one unfiltered query, batched with those arriving with it.
            return [[self._neighbour(h) for h in await self.searches.nearest(vectors[0], k)]]
        features = NEIGHBOUR_FEATURES + (["embedding"] if include_embedding else [])
        hits = await self.run(
            lambda: self.online.search(
                self.store.config,
                self.view,
                vectors,
                k,
                filters=to_feast(filters),
                features=features,
                threads=1,  # searches of concurrent requests run side by side
                plain=True,
            )
        )
        return [[self._neighbour(h) for h in row] for row in hits]

    def _search_plain(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        return self.online.search(
            self.store.config,
            self.view,
            queries,
            k,
            features=NEIGHBOUR_FEATURES,
            threads=1,
            plain=True,
        )

    def _neighbour(self, hit: Hit) -> Neighbour:
        # Plain values straight from our own store: built without re-validation.
        return Neighbour.model_construct(
            clip_id=self.clip_id_of(hit.key), score=hit.score, distance=hit.distance, **hit.features
        )

    def clip_id_of(self, key: bytes) -> str:
        return _clip_id(key, self.store.config.entity_key_serialization_version)

    async def clip(self, clip_id: str, include_embedding: bool) -> ClipResponse:
        key = EntityKeyProto(join_keys=["clip_id"], entity_values=[ValueProto(string_val=clip_id)])
        ((event_ts, values),) = await self.run(
            self.online.online_read, self.store.config, self.view, [key], None
        )
        if values is None:
            raise UnknownClipError(f"unknown clip id: {clip_id}")
        fields = {name: python_value(v) for name, v in values.items()}
        if not include_embedding:
            fields.pop("embedding", None)
        return ClipResponse(clip_id=clip_id, event_timestamp=event_ts, **fields)

    async def similar_to_clip(self, clip_id: str, k: int) -> list[Neighbour]:
        self.check_k(k)
        clip = await self.clip(clip_id, include_embedding=True)
        assert clip.embedding is not None
        (row,) = await self.search(np.asarray([clip.embedding], np.float32), k + 1, None)
        return [n for n in row if n.clip_id != clip_id][:k]

    # ---- audio --------------------------------------------------------------------------

    async def search_audio(
        self,
        data: bytes,
        name: str,
        k: int,
        filters: Filters | None,
        strategy: WindowStrategy,
        aggregation: Aggregation,
    ) -> tuple[list[WindowResult] | None, list[RecordingMatch] | None]:
        self.check_k(k)
        if self.encoder is None or self.batcher is None:
            raise HearFeaturesError(
                "this server was started without an encoder (load_encoder: false)"
            )
        if self.encoder.model_id != self.store_model_id and self.index_vectors:
            raise ModelMismatch(
                f"the server's encoder is {self.encoder.model_id} but the store holds vectors of "
                f"{self.store_model_id}; configure the same model"
            )
        offsets, clips = await self.run(self._windows, data, name, strategy)
        vectors = await self.batcher.encode(clips)
        per_window = await self.search(vectors, k, filters)
        if aggregation is Aggregation.window:
            return [
                WindowResult(offset_s=o, results=r)
                for o, r in zip(offsets, per_window, strict=True)
            ], None
        return None, by_recording(offsets, per_window, k)

    def _windows(
        self, data: bytes, name: str, strategy: WindowStrategy
    ) -> tuple[list[float], np.ndarray]:
        buffer = io.BytesIO(data)
        buffer.name = name
        config = WindowConfig(mode="event" if strategy is WindowStrategy.strongest else "fixed")
        windows = list(
            iter_windows(buffer, config, AudioLimits(max_duration_s=self.settings.max_audio_s))
        )
        if not windows:
            raise AudioError(name, "has no window louder than -50 dBFS to search with")
        if strategy is WindowStrategy.strongest:
            windows = [max(windows, key=lambda w: w.rms_db)]
        return [w.offset_s for w in windows], np.stack([w.samples for w in windows])

    # ---- training sets -------------------------------------------------------------------

    async def training_rows(
        self, entities: pd.DataFrame | None, seeds: list[str] | None, k: int
    ) -> pd.DataFrame:
        self.check_k(k)

        def build() -> pd.DataFrame:
            with self._feast_lock:
                if entities is not None:
                    return training_set(self.store, entities)
                return more_like_these(self.store, seed_ids=seeds or [], k=k)

        return await self.run(build)


def to_feast(filters: Filters | None) -> ComparisonFilter | CompoundFilter | None:
    """API filters -> a Feast filter (all fields must match; a list means any of)."""
    if filters is None:
        return None
    parts: list[ComparisonFilter | CompoundFilter] = [
        ComparisonFilter(type="in", key=name, value=values)
        if len(values) > 1
        else ComparisonFilter(type="eq", key=name, value=values[0])
        for name, values in filters.active().items()
    ]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else CompoundFilter(type="and", filters=parts)


_SCALARS = {"string_val", "double_val", "float_val", "int32_val", "int64_val", "bool_val"}


@functools.lru_cache(maxsize=1 << 18)
def _clip_id(key: bytes, version: int) -> str:
    """The clip id in a serialized entity key (cached: hits repeat, parsing them does not)."""
    proto = deserialize_entity_key(key, entity_key_serialization_version=version)
    return str(proto.entity_values[0].string_val)


def python_value(value: ValueProto) -> Any:
    """A Feast value as plain Python (scalars directly: this runs ~10 times per hit)."""
    kind = value.WhichOneof("val")
    if kind is None:
        return None
    if kind in _SCALARS:
        return getattr(value, kind)
    converted = feast_value_type_to_python_type(value)
    return converted.tolist() if isinstance(converted, np.ndarray) else converted


def by_recording(
    offsets: list[float], per_window: list[list[Neighbour]], k: int
) -> list[RecordingMatch]:
    """Stored recordings ranked by their best-matching clip over all query windows."""
    best: dict[str, RecordingMatch] = {}
    for offset, row in zip(offsets, per_window, strict=True):
        for n in row:
            recording = n.recording_id or n.clip_id
            if recording not in best or n.distance < best[recording].distance:
                best[recording] = RecordingMatch(
                    recording_id=recording,
                    best_clip_id=n.clip_id,
                    distance=n.distance,
                    score=n.score,
                    query_offset_s=offset,
                    label=n.label,
                    subject_id=n.subject_id,
                    dataset=n.dataset,
                    audio_uri=n.audio_uri,
                )
    return sorted(best.values(), key=lambda m: m.distance)[:k]
