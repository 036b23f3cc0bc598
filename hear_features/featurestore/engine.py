"""``HearEngine``: Feast's local compute engine, plus the embedding step.

``feast materialize`` hands every feature view to the batch engine. Other views go
through Feast's local engine unchanged. For the embeddings view this engine:

1. reads both tables and refuses to mix models (a table made by another model);
2. for each registration row without an embeddings row, reuses the vector already
   computed for that clip, or embeds it: once per (audio content, model);
3. appends the new rows to the embeddings Parquet atomically;
4. writes to the online store the rows of the task's window and every row not yet
   confirmed online (rows stranded by a crash between steps 3 and 4, or registered
   with a timestamp older than the last run), converting them with Feast's own
   Arrow-to-proto code straight from memory rather than reading the Parquet back;
5. records the online watermark (the newest ``created`` confirmed online).

Why an engine and not Feast's on-demand view materialisation: Feast runs an on-demand
transformation twice during ``materialize`` and never stores its output offline, so
historical reads would re-embed every clip. Here every vector is computed once and read
back by DuckDB and ``get_historical_features`` like any other column.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from feast import (
    BatchFeatureView,
    Entity,
    FeatureView,
    FileSource,
    OnDemandFeatureView,
    StreamFeatureView,
)
from feast.infra.common.materialization_job import MaterializationJobStatus, MaterializationTask
from feast.infra.compute_engines.local.compute import LocalComputeEngine
from feast.infra.compute_engines.local.job import LocalMaterializationJob
from feast.infra.registry.base_registry import BaseRegistry
from feast.repo_config import FeastConfigBaseModel
from feast.utils import _convert_arrow_to_proto
from tqdm import tqdm

from hear_features.atomic import atomic_write_bytes
from hear_features.audio import SAMPLE_RATE, windows_at
from hear_features.audio.sources import SourceRefused
from hear_features.clips import ClipRef, content_hash
from hear_features.embedding import embed_recordings
from hear_features.embeddings_file import embedding_column
from hear_features.encoders import HearEncoder, resolve_model
from hear_features.errors import AudioError, HearFeaturesError
from hear_features.featurestore import runtime
from hear_features.featurestore.online_store import HearOnlineStore
from hear_features.featurestore.settings import EncoderSettings, audio_sources
from hear_features.featurestore.tables import (
    EMBEDDING_SCHEMA,
    METADATA_FIELDS,
    REGISTRATION_SCHEMA,
    append_rows,
    ensure_table,
    read_table,
)
from hear_features.locking import file_lock

log = logging.getLogger(__name__)

#: Rows per online write: bounds the memory of the proto conversion.
_ONLINE_BATCH = 10_000

ENGINE_TYPE: Final = "hear_features.featurestore.engine.HearEngine"


class ModelMismatchError(HearFeaturesError):
    """The store holds vectors of another model; mixing them would make distances meaningless."""

    http_status = 409


class MaterializationError(HearFeaturesError):
    """Some registered clips could not be embedded; the others were stored."""


class HearEngineConfig(FeastConfigBaseModel):
    """The ``batch_engine:`` section of ``feature_store.yaml``."""

    type: Literal["hear_features.featurestore.engine.HearEngine"] = ENGINE_TYPE
    model: str = "google/hear"
    """Encoder: ``standin``, a Hugging Face repo id or a local SavedModel directory
    (``HEAR_MODEL`` overrides it)."""
    revision: str | None = None
    batch_size: int = 64
    device: Literal["auto", "cpu", "gpu"] = "auto"
    embeddings_view: str = "cough_embeddings"
    registrations_view: str = "clip_metadata"
    lock_timeout_s: float = 600.0
    audio_roots: list[str] | None = None
    """Folders audio may be read from (relative: the repo); unset means any local file.
    ``HEAR_AUDIO_ROOTS`` overrides it."""
    backend: str | None = None


@dataclasses.dataclass
class EmbedStats:
    """What one materialisation of the embeddings view did (also in the state file)."""

    embedded: int = 0
    reused: int = 0
    already_stored: int = 0
    failed: int = 0
    sent_online: int = 0
    model_id: str = ""


class HearEngine(LocalComputeEngine):
    """Feast's local engine with an embedding step for the embeddings view."""

    def __init__(self, **kwargs: Any) -> None:
        own = {k: kwargs.pop(k) for k in list(kwargs) if k in HearEngineConfig.model_fields}
        self.config = HearEngineConfig(**own)
        super().__init__(backend=self.config.backend, **kwargs)
        self.settings = EncoderSettings.from_mapping(
            {**self.config.model_dump(), "repo_path": str(self.repo_config.repo_path or "")}
        )
        runtime.activate(self.settings)
        self.sources = audio_sources(self.repo_config)
        self._encoder: HearEncoder | None = None

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
        """At ``feast apply``: create empty tables so Feast and DuckDB can read them."""
        for view in views_to_keep:
            if view.name == self.config.embeddings_view:
                ensure_table(_source_path(view), EMBEDDING_SCHEMA)
            elif view.name == self.config.registrations_view:
                ensure_table(_source_path(view), REGISTRATION_SCHEMA)

    def teardown_infra(
        self,
        project: str,
        fvs: Sequence[BatchFeatureView | StreamFeatureView | FeatureView],
        entities: Sequence[Entity],
    ) -> None:
        """At ``feast teardown`` the online store is emptied: forget what was sent there."""
        for view in fvs:
            if view.name == self.config.embeddings_view:
                _state_path(_source_path(view)).unlink(missing_ok=True)

    def _materialize_one(
        self, registry: BaseRegistry, task: MaterializationTask, **kwargs: Any
    ) -> Any:
        view = task.feature_view
        if view.name == self.config.embeddings_view:
            return self._materialize_embeddings(registry, task)
        if _plain_parquet_view(view) and isinstance(self.online_store, HearOnlineStore):
            return self._materialize_parquet(registry, task)
        return super()._materialize_one(registry, task, **kwargs)

    def _materialize_parquet(self, registry: BaseRegistry, task: MaterializationTask) -> Any:
        """A view over one Parquet file with no transformation: read it with pyarrow and
        write the newest row per entity of the task's window, as Feast's local engine
        would, without the DuckDB round trip and per-value conversions."""
        view = task.feature_view
        source = view.batch_source
        assert isinstance(source, FileSource)  # checked by _plain_parquet_view
        table = pq.read_table(source.path)
        rows = table.filter(_in_window(table, task, source.timestamp_field))
        (join_key,) = view.join_keys
        rows = _newest_per_key(
            rows, join_key, source.timestamp_field, source.created_timestamp_column or None
        )
        renames = {source.timestamp_field: "event_timestamp"}
        if source.created_timestamp_column:
            renames[source.created_timestamp_column] = "created"
        rows = rows.rename_columns([renames.get(c, c) for c in rows.column_names])
        written = self._write_rows(registry, task, rows)
        tqdm.write(f"{view.name}: {written} rows written online")
        return _succeeded(task)

    def _materialize_embeddings(self, registry: BaseRegistry, task: MaterializationTask) -> Any:
        table_path = _source_path(task.feature_view)
        registrations_view = registry.get_feature_view(self.config.registrations_view, task.project)
        with file_lock(
            table_path, timeout_s=self.config.lock_timeout_s, what=f"embeddings table {table_path}"
        ):
            stats, problems, emb = self.embed_pending(
                _source_path(registrations_view), table_path, task.end_time, task
            )
            state = _read_state(table_path)
            state["embedded_total"] = int(state.get("embedded_total", 0)) + stats.embedded
            try:
                stats.sent_online = self._write_online(registry, task, emb, state)
                state["online_watermark"] = _max_created(emb, task.end_time)
            finally:  # the counters are true even when the online write failed
                state["last_run"] = {**dataclasses.asdict(stats), "finished": _now().isoformat()}
                atomic_write_bytes(_state_path(table_path), json.dumps(state, indent=2).encode())
        tqdm.write(
            f"{self.config.embeddings_view}: embedded {stats.embedded} clips with {stats.model_id} "
            f"(reused {stats.reused}, already stored {stats.already_stored}, "
            f"failed {stats.failed}); "
            f"{stats.sent_online} rows written online"
        )
        if problems:
            listing = "; ".join(f"{uri}: {problem}" for uri, problem in problems[:10])
            raise MaterializationError(
                f"{len(problems)} recording(s) could not be embedded "
                f"(the other clips were stored): {listing}"
            )
        return _succeeded(task)

    def _write_online(
        self,
        registry: BaseRegistry,
        task: MaterializationTask,
        emb: pa.Table,
        state: dict[str, Any],
    ) -> int:
        """Write the rows of the task's window, plus every row not yet confirmed online.

        The rows are already in memory, so they go straight to the online store through
        Feast's own Arrow-to-proto conversion, without reading the Parquet back.
        """
        wanted = pc.or_(
            _in_window(emb, task, "event_timestamp"),
            _unsent(emb, task, state.get("online_watermark")),
        )
        rows = _newest_per_key(emb.filter(wanted), "clip_id", "event_timestamp", "created")
        return self._write_rows(registry, task, rows)

    def _write_rows(self, registry: BaseRegistry, task: MaterializationTask, rows: pa.Table) -> int:
        """Write Arrow rows of ``task``'s view to the online store, in bounded batches."""
        if rows.num_rows == 0:
            return 0
        view = task.feature_view
        join_keys = {
            entity.join_key: entity.value_type
            for entity in (registry.get_entity(name, task.project) for name in view.entities)
        }
        bar = task.tqdm_builder(rows.num_rows) if task.tqdm_builder else None
        progress = bar.update if bar is not None else None
        store = self.online_store
        for batch in rows.to_batches(max_chunksize=_ONLINE_BATCH):
            if isinstance(store, HearOnlineStore) and len(join_keys) == 1:
                (join_key,) = join_keys
                store.write_arrow(
                    self.repo_config, view, pa.Table.from_batches([batch]), join_key, progress
                )
            else:
                protos = _convert_arrow_to_proto(batch, view, join_keys)
                store.online_write_batch(self.repo_config, view, protos, progress)
        if isinstance(store, HearOnlineStore):
            store.checkpoint(self.repo_config, view)
        if bar is not None:
            bar.close()
        return rows.num_rows

    # ---- the embedding step --------------------------------------------------------

    @property
    def encoder(self) -> HearEncoder:
        """Loaded on first use: a run with nothing new to embed never loads TensorFlow."""
        if self._encoder is None:
            self._encoder = runtime.encoder_for(self.settings)
        return self._encoder

    def configured_model_id(self) -> str:
        """The model id of the configured encoder, without loading it."""
        if self._encoder is not None:
            return self._encoder.model_id
        return resolve_model(self.settings.model, revision=self.settings.revision).model_id

    def embed_pending(
        self,
        registrations: Path,
        embeddings: Path,
        until: dt.datetime,
        task: MaterializationTask | None = None,
    ) -> tuple[EmbedStats, list[tuple[str, str]], pa.Table]:
        """Append an embeddings row for every registration row (up to ``until``) lacking one.

        Returns what was done, the recordings that failed (uri, problem), and the whole
        embeddings table as it now is.
        """
        reg = read_table(registrations, REGISTRATION_SCHEMA)
        reg = reg.filter(
            pc.less_equal(reg["event_timestamp"], pa.scalar(until, reg["event_timestamp"].type))
        )
        emb = read_table(embeddings, EMBEDDING_SCHEMA)
        model_id = self.configured_model_id()
        stats = EmbedStats(model_id=model_id)
        _refuse_other_models(emb, model_id, embeddings)

        stored = set(
            zip(emb["clip_id"].to_pylist(), emb["event_timestamp"].to_pylist(), strict=True)
        )
        pending_mask = [
            (c, t) not in stored
            for c, t in zip(
                reg["clip_id"].to_pylist(), reg["event_timestamp"].to_pylist(), strict=True
            )
        ]
        pending = reg.filter(pa.array(pending_mask, pa.bool_()))
        stats.already_stored = reg.num_rows - pending.num_rows
        if pending.num_rows == 0:
            return stats, [], emb

        vectors = _latest_vectors(emb)
        missing = _clips_to_compute(pending, vectors)
        problems: list[tuple[str, str]] = []
        if missing:
            computed, problems = self._compute(missing, task)
            vectors.update(computed)
            stats.embedded = len(computed)
        done = pa.array([c in vectors for c in pending["clip_id"].to_pylist()], pa.bool_())
        ready = pending.filter(done)
        stats.failed = pending.num_rows - ready.num_rows
        # Rows that got a vector without an encoder call of their own: a stored clip
        # registered again, or a clip with several registrations in this run.
        stats.reused = ready.num_rows - stats.embedded
        if ready.num_rows:
            emb = append_rows(
                embeddings, _embedding_rows(ready, vectors, model_id), EMBEDDING_SCHEMA
            )
        return stats, problems, emb

    def _compute(
        self, missing: dict[str, dict[str, Any]], task: MaterializationTask | None
    ) -> tuple[dict[str, np.ndarray], list[tuple[str, str]]]:
        """Embed the clips in ``missing`` (clip_id -> registration row), grouped by file."""
        by_uri: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in missing.values():
            by_uri[row["audio_uri"]].append(row)
        bar = task.tqdm_builder(len(missing)) if task is not None and task.tqdm_builder else None

        def clips_of(path: Path) -> Iterable[tuple[ClipRef, np.ndarray]]:
            rows = by_uri[uri_of[str(path)]]
            expected = {r["content_hash"] for r in rows}
            if content_hash(path) not in expected:
                raise AudioError(
                    path,
                    "changed since it was registered (content hash differs); register it again",
                )
            by_start = {round(r["offset_s"] * SAMPLE_RATE): r for r in rows}
            for window in windows_at(path, list(by_start)):
                row = by_start[window.start]
                ref = ClipRef(
                    row["clip_id"], row["recording_id"], row["audio_uri"], row["offset_s"]
                )
                yield ref, window.samples

        computed: dict[str, np.ndarray] = {}
        problems: list[tuple[str, str]] = []
        uri_of: dict[str, str] = {}  # local path -> registered URI
        for uri in by_uri:
            try:
                uri_of[str(self.sources.local_path(uri))] = uri
            except SourceRefused as exc:
                problems.append((uri, exc.problem))
        for rec in embed_recordings(
            [Path(p) for p in uri_of],
            self.encoder,
            batch_size=self.settings.batch_size,
            clips_of=clips_of,
            on_batch=bar.update if bar is not None else None,
        ):
            if rec.error is not None:
                problems.append((rec.source, str(getattr(rec.error, "problem", rec.error))))
                continue
            for ref, vec in zip(rec.clips, rec.vectors, strict=True):
                if vec is not None:
                    computed[ref.clip_id] = vec
            expected_ids = {r["clip_id"] for r in by_uri[uri_of[rec.source]]}
            if len(expected_ids - computed.keys()) > 0:
                problems.append((rec.source, "is shorter than when it was registered"))
        if bar is not None:
            bar.close()
        return computed, problems


# ---- helpers ------------------------------------------------------------------------


def _succeeded(task: MaterializationTask) -> LocalMaterializationJob:
    return LocalMaterializationJob(
        job_id=f"{task.feature_view.name}-{task.start_time}-{task.end_time}",
        status=MaterializationJobStatus.SUCCEEDED,
    )


def _plain_parquet_view(view: Any) -> bool:
    """A plain FeatureView over one Parquet FileSource, as the fast path needs."""
    source = view.batch_source
    return (
        type(view) is FeatureView
        and isinstance(source, FileSource)
        and source.path.endswith(".parquet")
        and not source.field_mapping
        and len(view.join_keys) == 1
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _source_path(view: Any) -> Path:
    return Path(view.batch_source.path)


def _state_path(table_path: Path) -> Path:
    return table_path.with_name(table_path.name + ".state.json")


def _read_state(table_path: Path) -> dict[str, Any]:
    path = _state_path(table_path)
    if not path.exists():
        return {}
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        log.warning("ignoring unreadable state file %s; all rows will be re-sent online", path)
        return {}


def _refuse_other_models(emb: pa.Table, model_id: str, path: Path) -> None:
    others = sorted(set(emb["model_id"].to_pylist()) - {model_id})
    if others:
        raise ModelMismatchError(
            f"the embeddings table {path} holds vectors of {', '.join(others)}, but the configured "
            f"encoder is {model_id}. Vectors of different models cannot be compared: configure "
            "the same model, or start a new feature repository (or move the table away) "
            "for the new one."
        )


def _latest_vectors(emb: pa.Table) -> dict[str, np.ndarray]:
    """clip_id -> its stored vector (all rows of a clip share one, for one model)."""
    if emb.num_rows == 0:
        return {}
    ids = emb["clip_id"].to_pylist()
    matrix = np.stack(emb["embedding"].to_numpy(zero_copy_only=False)).astype(np.float32)
    return dict(zip(ids, matrix, strict=True))


def _clips_to_compute(
    pending: pa.Table, vectors: dict[str, np.ndarray]
) -> dict[str, dict[str, Any]]:
    """Registration rows (one per clip) whose vector we do not have yet."""
    missing: dict[str, dict[str, Any]] = {}
    for row in pending.select(
        ["clip_id", "recording_id", "audio_uri", "offset_s", "content_hash"]
    ).to_pylist():
        if row["clip_id"] not in vectors:
            missing[row["clip_id"]] = row
    return missing


def _embedding_rows(ready: pa.Table, vectors: dict[str, np.ndarray], model_id: str) -> pa.Table:
    ids = ready["clip_id"].to_pylist()
    columns = {f.name: ready[f.name] for f in METADATA_FIELDS}
    return pa.table(
        {
            **columns,
            "embedding": embedding_column(np.stack([vectors[c] for c in ids])),
            "model_id": pa.array([model_id] * len(ids), pa.string()),
            "event_timestamp": ready["event_timestamp"],
            "created": pa.array([_now()] * len(ids), EMBEDDING_SCHEMA.field("created").type),
        }
    )


def _in_window(table: pa.Table, task: MaterializationTask, ts: str) -> pa.ChunkedArray:
    """Rows with ``start <= ts < end`` (every row with ``disable_event_timestamp``)."""
    column = table[ts]
    if task.disable_event_timestamp:
        return pa.chunked_array([pa.array(np.ones(table.num_rows, dtype=bool))])
    after_start = pc.greater_equal(column, pa.scalar(task.start_time, column.type))
    return pc.and_(after_start, pc.less(column, pa.scalar(task.end_time, column.type)))


def _unsent(emb: pa.Table, task: MaterializationTask, watermark: str | None) -> pa.ChunkedArray:
    """Rows before the task's end created after the last confirmed online write: rows
    stranded by a crash after the offline append, or registered with an old timestamp."""
    ts = emb["event_timestamp"]
    before_end = pc.less(ts, pa.scalar(task.end_time, ts.type))
    if not watermark:
        return before_end
    cutoff = pa.scalar(dt.datetime.fromisoformat(watermark), emb["created"].type)
    return pc.and_(pc.greater(emb["created"], cutoff), before_end)


def _newest_per_key(table: pa.Table, key: str, ts: str, created: str | None) -> pa.Table:
    """One row per key: the newest by event timestamp, then created timestamp."""
    if table.num_rows == 0:
        return table
    order = [(key, "ascending"), (ts, "descending")]
    if created:
        order.append((created, "descending"))
    table = table.take(pc.sort_indices(table, order))
    keys = table[key].to_numpy(zero_copy_only=False)
    first = np.ones(len(keys), dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    return table.filter(pa.array(first))


def _max_created(emb: pa.Table, until: dt.datetime) -> str | None:
    """The online watermark after a successful write of every row before ``until``."""
    emb = emb.filter(pc.less(emb["event_timestamp"], pa.scalar(until, emb["event_timestamp"].type)))
    newest = pc.max(emb["created"]).as_py() if emb.num_rows else None
    return newest.isoformat() if newest is not None else None
