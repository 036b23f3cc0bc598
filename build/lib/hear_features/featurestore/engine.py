"""``HearEngine``: Feast's local compute engine, plus the embedding step.

``feast materialize`` hands every feature view to the batch engine. Other views go
through Feast's local engine unchanged (or, with this project's online store and a plain
Parquet view, through a faster Arrow path). For the embeddings view the engine embeds
what is pending, appends it offline and sends it online
(:mod:`hear_features.featurestore.materialize`), under the table's lock.

Why an engine and not Feast's on-demand view materialisation: Feast runs an on-demand
transformation twice during ``materialize`` and never stores its output offline, so
historical reads would re-embed every clip. Here every vector is computed once and read
back by DuckDB and ``get_historical_features`` like any other column.

This module holds the hooks Feast calls; ``feature_store.yaml`` names it::

    batch_engine:
      type: hear_features.featurestore.engine.HearEngine
      executor: local     # or ray (hear_features.featurestore.ray_executor)

With ``executor: ray`` only the per-recording work (decoding and the encoder) moves to
Ray actors; reading the tables, the append, the online write and the index stay here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from feast import (
    BatchFeatureView,
    Entity,
    FeatureStore,
    FeatureView,
    FileSource,
    OnDemandFeatureView,
    StreamFeatureView,
)
from feast.infra.common.materialization_job import MaterializationJobStatus, MaterializationTask
from feast.infra.compute_engines.local.compute import LocalComputeEngine
from feast.infra.compute_engines.local.job import LocalMaterializationJob
from feast.infra.registry.base_registry import BaseRegistry
from tqdm import tqdm

from hear_features.encoders import HearEncoder, resolve_model
from hear_features.featurestore import forget, runtime
from hear_features.featurestore.config import (
    EncoderSettings,
    HearEngineConfig,
    audio_sources,
    engine_config,
    repo_path,
)
from hear_features.featurestore.materialize import ClipEmbedding, Embedder, LocalEmbedding
from hear_features.featurestore.online.identity import applied_id
from hear_features.featurestore.online.store import HearOnlineStore, view_table
from hear_features.featurestore.online_send import (
    only_clips,
    parquet_table,
    rows_to_send,
    write_online,
)
from hear_features.featurestore.tables import ensure_table
from hear_features.featurestore.watermark import OnlineWatermark
from hear_features.locking import file_lock

__all__ = ["HearEngine", "HearEngineConfig"]  # Feast finds the config class here


class HearEngine(LocalComputeEngine):
    """Feast's local engine with an embedding step for the embeddings view."""

    def __init__(self, **kwargs: Any) -> None:
        own = {k: kwargs.pop(k) for k in list(kwargs) if k in HearEngineConfig.model_fields}
        super().__init__(backend=own.get("backend"), **kwargs)
        self.config = engine_config(self.repo_config)
        self.settings = EncoderSettings.from_repo_config(self.repo_config)
        runtime.activate(self.settings)
        self._encoder: HearEncoder | None = None
        self._forgets_checked = False
        # This run's clips that go online in no view (see :meth:`materialize`).
        self._refused: frozenset[str] = frozenset()
        self._superseded: frozenset[str] = frozenset()
        self.embedder = Embedder(self._clip_embedding(), self._model_id, self.config.study)

    # ---- Feast hooks -------------------------------------------------------------

    def update(
        self,
        project: str,
        views_to_delete: Sequence[BatchFeatureView | StreamFeatureView | FeatureView],
        views_to_keep: Sequence[
            BatchFeatureView | StreamFeatureView | FeatureView | OnDemandFeatureView
        ],
        entities_to_delete: Sequence[Entity],
        entities_to_keep: Sequence[Entity],
    ) -> None:
        """At ``feast apply``: create empty tables so Feast and DuckDB can read them, and
        give existing ones the study columns declared since (null in the rows they hold)."""
        schemas = {
            self.config.embeddings_view: self.embedder.embedding_schema,
            self.config.registrations_view: self.embedder.registration_schema,
        }
        for view in views_to_keep:
            if view.name in schemas:
                with self._lock(view, "table"):
                    ensure_table(_source_path(view), schemas[view.name])

    def teardown_infra(
        self,
        project: str,
        fvs: Sequence[BatchFeatureView | StreamFeatureView | FeatureView],
        entities: Sequence[Entity],
    ) -> None:
        """At ``feast teardown`` the online store is emptied: forget what was sent there."""
        for view in fvs:
            if isinstance(getattr(view, "batch_source", None), FileSource):
                OnlineWatermark(_source_path(view)).forget()

    @property
    def supports_batch(self) -> bool:
        """Feast hands every view of a run to :meth:`materialize` at once."""
        return True

    def materialize(
        self,
        registry: BaseRegistry,
        tasks: MaterializationTask | list[MaterializationTask],
        **kwargs: Any,
    ) -> list[Any]:
        """Materialise the views of one run, the embeddings view first, whatever order
        Feast lists them in: the clips whose recording the embedding step refuses (outside
        the audio roots, changed since registered, unreadable) then go online in no view,
        and the run fails naming them, after the other views are done."""
        tasks = [tasks] if isinstance(tasks, MaterializationTask) else list(tasks)
        first = sorted(tasks, key=lambda t: t.feature_view.name != self.config.embeddings_view)
        self._refused = self._superseded = frozenset()
        jobs = {id(task): self._materialize_one(registry, task, **kwargs) for task in first}
        return [jobs[id(task)] for task in tasks]

    def _materialize_one(
        self, registry: BaseRegistry, task: MaterializationTask, **kwargs: Any
    ) -> Any:
        self._complete_forgets()
        view = task.feature_view
        if view.name == self.config.embeddings_view:
            return self._materialize_embeddings(registry, task)
        # The registration table's lock: a forget running meanwhile must not see its
        # clips written back online from a table read before it.
        locked = view.name == self.config.registrations_view
        with self._lock(view, "registration table") if locked else contextlib.nullcontext():
            table = parquet_table(self.online_store, task)
            if table is None:
                return super()._materialize_one(registry, task, **kwargs)
            watermark = OnlineWatermark(_source_path(view), self._online_id(task))
            held = only_clips(table, self._refused) if locked and self._refused else None
            rows = rows_to_send(table, task, watermark, view.join_keys[0])
            if locked and (self._refused or self._superseded):
                rows = only_clips(rows, self._refused | self._superseded, keep=False)
            written = write_online(self.online_store, self.repo_config, registry, task, rows)
            watermark.advance(table, task.end_time, held_back=held)
            watermark.save()
        tqdm.write(f"{view.name}: {written} rows written online")
        return _job(task)

    def _online_id(self, task: MaterializationTask) -> str | None:
        """The online database's id (:func:`~.online.identity.applied_id`: refuses, saying
        to run ``feast apply``, when it was removed); None for other online stores."""
        if isinstance(self.online_store, HearOnlineStore):
            view = task.feature_view
            return applied_id(view_table(self.repo_config, view), view.name)
        return None

    def _complete_forgets(self) -> None:
        """Finish a ``hear-features forget`` that was interrupted, before anything could
        send its clips online again (once per run; one query when there is none)."""
        if self._forgets_checked:
            return
        self._forgets_checked = True
        if forget.unfinished(self.repo_config):
            store = FeatureStore(
                repo_path=str(repo_path(self.repo_config)), config=self.repo_config
            )
            for forget_id in forget.resume(store, lock_timeout_s=self.config.lock_timeout_s):
                tqdm.write(f"completed the interrupted forget {forget_id}")

    def _lock(self, view: Any, what: str) -> contextlib.AbstractContextManager[None]:
        path = _source_path(view)
        return file_lock(path, timeout_s=self.config.lock_timeout_s, what=f"{what} {path}")

    def _materialize_embeddings(self, registry: BaseRegistry, task: MaterializationTask) -> Any:
        table_path = _source_path(task.feature_view)
        registrations = registry.get_feature_view(self.config.registrations_view, task.project)
        online_id = self._online_id(task)  # before any work: the database must be there
        with self._lock(task.feature_view, "embeddings table"):
            result = self.embedder.embed_pending(
                _source_path(registrations), table_path, task.end_time, task.tqdm_builder
            )
            stats, emb = result.stats, result.table
            self._refused, self._superseded = result.refused, result.superseded
            watermark = OnlineWatermark(table_path, online_id)
            try:
                rows = rows_to_send(emb, task, watermark)
                stats.sent_online = write_online(
                    self.online_store, self.repo_config, registry, task, rows
                )
                watermark.advance(emb, task.end_time)
            finally:  # the counters are true even when the online write failed
                watermark.save(stats)
        tqdm.write(result.summary(self.config.embeddings_view))
        return _job(task, result.refusal())

    # ---- the executor and the encoder ---------------------------------------------

    def _clip_embedding(self) -> ClipEmbedding:
        """Where clips are decoded and embedded: ``executor:`` in ``feature_store.yaml``."""
        sources = audio_sources(self.repo_config)
        if self.config.executor == "ray":
            from hear_features.featurestore.ray_executor import RayEmbedding

            return RayEmbedding(self.settings, sources, self.config, self._model_id)
        return LocalEmbedding(self._load_encoder, sources, self.settings.batch_size)

    def _load_encoder(self) -> HearEncoder:
        """Loaded on first use: a run with nothing new to embed never loads TensorFlow."""
        if self._encoder is None:
            self._encoder = runtime.encoder_for(self.settings)
        return self._encoder

    def _model_id(self) -> str:
        """The model id of the configured encoder, without loading it."""
        if self._encoder is not None:
            return self._encoder.model_id
        return resolve_model(self.settings.model, revision=self.settings.revision).model_id


def _job(task: MaterializationTask, error: Exception | None = None) -> LocalMaterializationJob:
    """A finished job; Feast records the run for the view unless ``error``."""
    return LocalMaterializationJob(
        job_id=f"{task.feature_view.name}-{task.start_time}-{task.end_time}",
        status=MaterializationJobStatus.ERROR if error else MaterializationJobStatus.SUCCEEDED,
        error=error,
    )


def _source_path(view: Any) -> Path:
    return Path(view.batch_source.path)
