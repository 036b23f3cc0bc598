"""What the explorer's routes need in a worker: clip audio, spectrograms, the map.

Built on first use from the worker's :class:`~hear_features.api.worker.Worker` (its
feature store and search service) and kept on ``app.state``; the work itself lives in
:mod:`hear_features.explorer`. Routers get it through :data:`ExplorerDep`.
"""

from __future__ import annotations

import math
from typing import Annotated

import numpy as np
from fastapi import Depends, Request
from feast import FeatureView
from feast.repo_config import RepoConfig
from hear_features.api.deps import WorkerDep
from hear_features.api.models import (
    EmbeddingMapPage,
    MapColumn,
    MapColumnInfo,
    MapInfo,
    MapPending,
)
from hear_features.api.worker import Worker

from hear_features.errors import MapComputationFailed, MapError, UnknownClipError
from hear_features.explorer.clip_audio import ClipAudio, registered_clip, wav_bytes
from hear_features.explorer.embedding_map import (
    UMAP_MIN_POINTS,
    EmbeddingMap,
    MapMethod,
    MapStore,
    align_column,
)
from hear_features.explorer.spectrogram import spectrogram_png
from hear_features.featurestore.config import audio_sources
from hear_features.featurestore.online.scan import AttributeSummary
from hear_features.featurestore.online.store import HearOnlineStore
from hear_features.featurestore.repo import views

#: How long a client waits before asking again for a map computed in the background.
RETRY_AFTER_S = 5.0
#: Columns with at most this many distinct values have them listed (filter choices).
LISTED_VALUES = 200


class ExplorerState:
    """Clip media and maps over one worker's store."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        store = worker.store
        self.registrations: FeatureView = store.get_feature_view(views(store).registrations)
        self.audio = ClipAudio(audio_sources(store.config))
        online, config, view = worker.search.online, store.config, worker.search.view
        self.maps = MapStore(
            online.derived_folder(config, view),
            snapshot=lambda: online.vector_snapshot(config, view),
            generation=lambda: online.generation(config, view),
        )
        self._columns: dict[tuple[int, str], MapColumn] = {}
        self._columns_summary: tuple[int, list[AttributeSummary]] | None = None

    # ---- clip media -----------------------------------------------------------------

    def window(self, clip_id: str) -> np.ndarray:
        """The registered clip's 2 s window, from its verified source file."""
        clip = registered_clip(
            self.worker.search.online, self.worker.store.config, self.registrations, clip_id
        )
        if clip is None:
            raise UnknownClipError(f"unknown clip id (never registered): {clip_id}")
        return self.audio.window(clip)

    def wav(self, clip_id: str) -> bytes:
        return wav_bytes(self.window(clip_id))

    def spectrogram(self, clip_id: str) -> bytes:
        return spectrogram_png(self.window(clip_id))

    # ---- the map --------------------------------------------------------------------

    def info(self) -> MapInfo:
        generation = self.maps.generation()
        columns = [
            MapColumnInfo(
                name=name,
                kind="category" if is_text else "number",
                distinct=distinct,
                values=values,
            )
            for name, is_text, distinct, values in self._summary(generation)
        ]
        return MapInfo(
            generation=generation,
            points=self.worker.index_vectors,
            columns=columns,
            maps={str(m): str(self.maps.status(m)) for m in MapMethod},
        )

    def page(
        self, method: MapMethod, columns: list[str], offset: int, limit: int
    ) -> EmbeddingMapPage | MapPending:
        """A page of the current map; for UMAP, :class:`MapPending` while it is computed."""
        known = {name for name, *_ in self._summary(self.maps.generation())}
        unknown = [c for c in columns if c not in known]
        if unknown:
            raise MapError(
                f"unknown map column(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        if method is MapMethod.pca:
            embedding_map = self.maps.get_or_compute(method)
        else:
            cached = self.maps.cached(method)
            if cached is None:
                return self._pending(method)
            embedding_map = cached
        end = min(len(embedding_map), offset + limit)
        return EmbeddingMapPage.model_construct(
            method=str(embedding_map.method),
            generation=embedding_map.generation,
            total=len(embedding_map),
            offset=offset,
            count=max(0, end - offset),
            clip_ids=embedding_map.entity_ids[offset:end].tolist(),
            x=np.round(embedding_map.xy[offset:end, 0].astype(np.float64), 5).tolist(),
            y=np.round(embedding_map.xy[offset:end, 1].astype(np.float64), 5).tolist(),
            columns={c: self._column(embedding_map, c, offset, end) for c in columns},
            seconds=round(embedding_map.seconds, 3),
        )

    def _pending(self, method: MapMethod) -> MapPending:
        failure = self.maps.failure(method)
        if failure is not None:  # tried again when the store changes
            raise MapComputationFailed(f"computing the {method} map failed: {failure}")
        if method is MapMethod.umap and self.worker.index_vectors < UMAP_MIN_POINTS:
            raise MapError(
                f"a UMAP map needs at least {UMAP_MIN_POINTS} stored clips, the store has "
                f"{self.worker.index_vectors}; use method=pca"
            )
        status = self.maps.start(method)
        return MapPending(
            method=str(method),
            generation=self.maps.generation(),
            status=str(status),
            retry_after_s=RETRY_AFTER_S,
        )

    def _online(self) -> tuple[HearOnlineStore, RepoConfig, FeatureView]:
        search = self.worker.search
        return search.online, search.config, search.view

    def _summary(self, generation: int) -> list[AttributeSummary]:
        """The view's metadata columns (a full scan of the attribute table: cached)."""
        held = self._columns_summary
        if held is None or held[0] != generation:
            online, config, view = self._online()
            held = (generation, online.attribute_summary(config, view, LISTED_VALUES))
            self._columns_summary = held
        return held[1]

    def _column(self, embedding_map: EmbeddingMap, name: str, start: int, end: int) -> MapColumn:
        key = (embedding_map.generation, name)
        column = self._columns.get(key)
        if column is None:
            online, config, view = self._online()
            ids, values = online.attribute_column(config, view, name)
            aligned = align_column(embedding_map.ids, ids, values)
            if aligned.codes is not None:
                column = MapColumn(
                    kind="category", categories=aligned.categories, codes=aligned.codes.tolist()
                )
            else:
                assert aligned.values is not None
                column = MapColumn(
                    kind="number",
                    values=[None if math.isnan(v) else v for v in aligned.values.tolist()],
                )
            self._columns = {k: v for k, v in self._columns.items() if k[0] == key[0]}
            self._columns[key] = column
        if column.codes is not None:
            return MapColumn(
                kind=column.kind, categories=column.categories, codes=column.codes[start:end]
            )
        assert column.values is not None
        return MapColumn(kind=column.kind, values=column.values[start:end])


async def get_explorer(request: Request, worker: WorkerDep) -> ExplorerState:
    explorer: ExplorerState | None = getattr(request.app.state, "explorer", None)
    if explorer is None or explorer.worker is not worker:
        explorer = ExplorerState(worker)
        request.app.state.explorer = explorer
    return explorer


ExplorerDep = Annotated[ExplorerState, Depends(get_explorer)]
