"""Training sets: point-in-time correct embeddings and labels, and "more like these".

Every row holds the embedding and metadata that were valid at that row's timestamp: a
clip registered later is absent, a clip re-registered with a new label shows the label of
the time asked for. Rows come from Feast's ``get_historical_features``; a small entity
table whose rows share one timestamp (``more-like``'s neighbours, a one-shot query) is
read instead by :func:`~hear_features.featurestore.offline_rows.rows_at`, one DuckDB
query with the same point-in-time rule, because Feast's join costs seconds of start-up
and a full scan of the table. Rows carry
the study's own columns (:mod:`hear_features.study`) beside the built-in metadata, and
``where`` conditions keep only rows whose values (as of their timestamp) meet them.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from feast import FeatureStore

from hear_features.audio import AudioLimits, WindowConfig
from hear_features.embedding import Encoder
from hear_features.errors import ConfigError, InputShapeError, LockTimeout, UnknownClipError
from hear_features.featurestore.config import study_columns
from hear_features.featurestore.forget import Pending, pending
from hear_features.featurestore.offline_rows import rows_at
from hear_features.featurestore.repo import Tables, tables, views
from hear_features.featurestore.search import ClipSearch, Filter, check_same_model, clip_search
from hear_features.featurestore.tables import newest_per_key, read_table, reading
from hear_features.outputs import write_table
from hear_features.query import audio_query
from hear_features.schema import (
    CREATED,
    EMBEDDING_DIM,
    EMBEDDING_SCHEMA,
    EVENT_TIMESTAMP,
    JOIN_KEY,
    MODEL_ID,
    TRAINING_FEATURES,
)
from hear_features.timestamps import parse_timestamps

log = logging.getLogger(__name__)

_ROW = "__row__"


def read_entities(path: Path) -> pd.DataFrame:
    """An entity table (CSV or Parquet): ``clip_id``, ``event_timestamp`` and any other columns."""
    if not path.is_file():
        raise ConfigError(f"entity file {path} does not exist")
    try:
        frame = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)
    except Exception as exc:  # pandas raises many parser errors
        raise ConfigError(f"entity file {path} cannot be read: {exc}") from exc
    return validate_entities(frame, str(path))


def validate_entities(frame: pd.DataFrame, name: str = "entities") -> pd.DataFrame:
    """Check the two required columns and parse timestamps with row-level messages
    (:mod:`hear_features.timestamps`: each value on its own, naive values are UTC)."""
    missing = [c for c in ("clip_id", EVENT_TIMESTAMP) if c not in frame.columns]
    if missing:
        raise ConfigError(
            f"{name} lacks column(s) {', '.join(missing)} "
            f"(has: {', '.join(map(str, frame.columns))})"
        )
    if frame.empty:
        raise ConfigError(f"{name} has no rows")
    frame = frame.copy()
    frame["clip_id"] = frame["clip_id"].astype(str)
    parsed = parse_timestamps(
        frame[EVENT_TIMESTAMP], EVENT_TIMESTAMP, where=lambda i: f"{name}, row {i + 1}"
    )
    frame[EVENT_TIMESTAMP] = parsed.set_axis(frame.index)
    return frame


def training_features(store: FeatureStore) -> tuple[str, ...]:
    """The features of a training-set row: the embedding, its model, the built-in
    metadata and the study's own columns."""
    return (*TRAINING_FEATURES, *study_columns(store.config))


def training_set(
    store: FeatureStore, entities: pd.DataFrame, where: Sequence[str] = ()
) -> pd.DataFrame:
    """Embeddings and metadata valid at each entity row's timestamp, in input order.

    Entity columns named like a stored feature (a ``label`` column of your own, say) are
    kept as ``given_<name>``, next to the stored value. Clip ids that were never
    registered are refused (a typo would otherwise come back as a row of nulls); a clip
    registered after a row's timestamp gives nulls in that row, as point-in-time reads do.
    ``where``: ``COLUMN OP VALUE`` conditions (:mod:`hear_features.where`) on the
    result's columns; only rows meeting all of them are kept (a row whose value is
    missing meets none).
    """
    from hear_features.where import apply, parse

    conditions = [parse(text) for text in where]  # malformed ones refused before any work
    entities = validate_entities(entities)
    _refuse_unknown(tables(store), entities["clip_id"], pending(store.config))
    wanted = training_features(store)
    renames = {c: f"given_{c}" for c in entities.columns if c in wanted}
    entity_df = entities.rename(columns=renames).assign(**{_ROW: np.arange(len(entities))})
    frame = _read_features(store, entity_df, wanted)
    frame = frame.sort_values(_ROW).drop(columns=[_ROW]).reset_index(drop=True)
    ordered = [c for c in entity_df.columns if c != _ROW] + [c for c in wanted if c in frame]
    frame = frame[ordered]
    if conditions:
        frame = frame[apply(frame, conditions)].reset_index(drop=True)
    return frame


#: Entity tables up to this size whose rows share one timestamp are read with
#: :func:`~hear_features.featurestore.offline_rows.rows_at` (``more-like``'s neighbours).
ONE_TIME_MAX_ROWS = 10_000


def _read_features(
    store: FeatureStore, entity_df: pd.DataFrame, wanted: Sequence[str]
) -> pd.DataFrame:
    """``entity_df`` with the view's ``wanted`` features valid at each row's timestamp."""
    times = entity_df[EVENT_TIMESTAMP]
    if len(entity_df) <= ONE_TIME_MAX_ROWS and times.nunique() == 1:
        found = rows_at(store, entity_df[JOIN_KEY].tolist(), times.iloc[0].to_pydatetime(), wanted)
        if found is not None:
            frame = entity_df.merge(found.to_pandas(), on=JOIN_KEY, how="left")
            for name in found.column_names:  # a clip without a row: None, as Feast gives
                if name != JOIN_KEY and frame[name].dtype == object:
                    frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
            return frame
    view = views(store).embeddings
    features = [f"{view}:{name}" for name in wanted]
    table = tables(store).embeddings
    if not table.exists():  # Feast would fail deep in DuckDB with "No files found"
        raise ConfigError(
            f"the embeddings table {table} does not exist (was it deleted or moved?): "
            "there are no training rows to read"
        )
    refuse_while_materializing(store, [view])
    with reading(table):
        return store.get_historical_features(entity_df=entity_df, features=features).to_df()


def refuse_while_materializing(store: FeatureStore, view_names: Sequence[str]) -> None:
    """Feast serves no rows of a view it marks as being materialised, offline ones
    included; say so in the project's words (:class:`LockTimeout`) before asking it,
    instead of its ``ValueError`` from inside the read."""
    from feast.feature_view import FeatureViewState

    for view in view_names:
        state = getattr(store.registry.get_feature_view(view, store.project), "state", None)
        if state == FeatureViewState.MATERIALIZING:
            raise LockTimeout(
                f"feature view {view} is being materialised (`feast materialize` is "
                "running, or was killed: then run it again), and Feast reads no rows of a "
                "view in that state; try again when it has finished. Training rows that "
                "all share one timestamp are read without Feast and are not held up."
            )


def _refuse_unknown(where: Tables, clip_ids: pd.Series, forgotten: Pending) -> None:
    """Refuse ids the tables do not hold, and those of an interrupted forget
    (:func:`~hear_features.featurestore.forget.pending_clips`) that they may still hold."""
    ids = sorted(set(clip_ids))
    storable = [c for c in ids if _is_utf8(c)]  # no stored id is anything else
    unknown = sorted(set(ids) - set(storable))
    wanted = pa.array(storable, pa.string())
    known = np.zeros(len(wanted), dtype=bool)
    for path in (where.registrations, where.embeddings):
        if path.exists():  # membership in Arrow: no Python string per stored row
            stored = pq.read_table(path, columns=["clip_id"])["clip_id"].combine_chunks()
            found = pc.is_in(wanted, value_set=stored.cast(pa.string()))
            known |= found.to_numpy(zero_copy_only=False)
    unknown += [c for c, k in zip(storable, known, strict=True) if not k or c in forgotten]
    if unknown:
        printable = [c.encode("utf-8", "backslashreplace").decode() for c in unknown[:10]]
        shown = ", ".join(printable) + (" ..." if len(unknown) > 10 else "")
        raise UnknownClipError(
            f"{len(unknown)} unknown clip id(s), never registered (or forgotten): {shown}"
        )


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, from a badly decoded file name, say
        return False
    return True


def write_training_set(frame: pd.DataFrame, out: Path) -> None:
    """Write a training set atomically, in the format ``out``'s ending names
    (:mod:`hear_features.outputs`: .parquet, .csv or .jsonl); embeddings as list<float32>."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if "embedding" in table.column_names:
        i = table.column_names.index("embedding")
        table = table.set_column(i, "embedding", table["embedding"].cast(pa.list_(pa.float32())))
    write_table(table, out)


def latest_embeddings(
    tables: Tables, forgotten: Pending | None = None
) -> tuple[list[str], np.ndarray, set[str]]:
    """The newest stored vector of every clip: (clip ids, float32 matrix, model ids),
    without the clips of an interrupted forget (``forgotten``)."""
    emb = read_table(tables.embeddings, EMBEDDING_SCHEMA)
    if forgotten:
        emb = emb.filter(pc.invert(forgotten.mask(emb[JOIN_KEY])))
    if emb.num_rows == 0:
        return [], np.zeros((0, EMBEDDING_DIM), dtype=np.float32), set()
    rows = newest_per_key(emb, JOIN_KEY, EVENT_TIMESTAMP, CREATED)
    matrix = np.stack(rows["embedding"].to_numpy(zero_copy_only=False)).astype(np.float32)
    return rows["clip_id"].to_pylist(), matrix, set(rows["model_id"].to_pylist())


def more_like_these(
    store: FeatureStore,
    *,
    seed_ids: Sequence[str] = (),
    audio: Path | None = None,
    encoder: Encoder | None = None,
    k: int = 10,
    at: dt.datetime | None = None,
    window_config: WindowConfig | None = None,
    limits: AudioLimits | None = None,
    search: ClipSearch | None = None,
    filters: Filter | None = None,
) -> pd.DataFrame:
    """The ``k`` stored clips nearest to each seed, as training-set rows with provenance.

    Seeds are stored clip ids, or the windows of an audio file (embedded with
    ``encoder``, which must be the model the store was built with). Neighbours come from
    the online store's vector index (``search``, by default the repository's
    :class:`~hear_features.featurestore.search.ClipSearch`); ``filters`` (Feast filters on
    the view's features, study columns included) restrict them.

    Each clip is one row, so that the result is a training set without duplicates:
    seeds never appear among the neighbours, and a clip among the ``k`` nearest of several
    seeds is listed once, under its nearest seed. ``rank`` is its place (1 = nearest)
    among that seed's neighbours, seeds left out; a rank taken by a clip listed under
    another seed is missing from this seed's rows, so with overlapping seeds a seed can
    have fewer than ``k`` rows, or none. ``frame.attrs["seed_ids"]`` lists every seed
    (an audio file's as ``NAME@OFFSET``) so that callers can say which. Rows are ordered
    by distance; with no neighbour at all (filters that keep nothing) the frame is empty,
    with the same columns.
    """
    if k < 1:  # k + len(seed_ids) is searched for, so the search itself would not notice
        raise InputShapeError(f"k must be at least 1, got {k}")
    search = search or clip_search(store)
    filters = search.check_filters(filters)  # before any seed audio is decoded and embedded
    names = list(seed_ids)
    vectors = [search.vectors_of(seed_ids)] if seed_ids else []
    if audio is not None:
        if encoder is None:
            raise ConfigError("an audio seed needs an encoder")
        query = audio_query(audio, name=audio.name, config=window_config, limits=limits)
        check_same_model(search.model_id, encoder.model_id)
        names += query.ids
        vectors.append(encoder.encode(query.clips))
    if not names:
        raise ConfigError("give at least one seed clip id or an audio file")

    excluded = set(seed_ids)
    matches = search.search(
        np.concatenate(vectors), k + len(excluded), filters=filters, features=[MODEL_ID]
    )
    best: dict[str, tuple[float, str, int]] = {}  # clip -> (distance, seed, rank)
    for seed, row in zip(names, matches, strict=True):
        neighbours = [m for m in row if m.clip_id not in excluded][:k]
        for rank, match in enumerate(neighbours, start=1):
            if match.clip_id not in best or match.distance < best[match.clip_id][0]:
                best[match.clip_id] = (match.distance, seed, rank)
    ranked = sorted(best.items(), key=lambda item: item[1][0])
    entities = pd.DataFrame(
        {
            JOIN_KEY: pd.Series([clip for clip, _ in ranked], dtype=object),
            EVENT_TIMESTAMP: pd.Series(
                [at or dt.datetime.now(dt.UTC)] * len(ranked), dtype="datetime64[ns, UTC]"
            ),
            "seed_id": pd.Series([seed for _, (_, seed, _) in ranked], dtype=object),
            "distance": pd.Series([d for _, (d, _, _) in ranked], dtype=np.float64),
            "rank": pd.Series([r for _, (_, _, r) in ranked], dtype=np.int64),
        }
    )
    if ranked:
        frame = training_set(store, entities)
    else:  # the training set's columns, no rows
        features = pd.DataFrame(columns=list(training_features(store)), dtype=object)
        frame = pd.concat([entities, features], axis=1)
    frame.attrs["seed_ids"] = list(dict.fromkeys(names))
    return frame
