"""Training sets: point-in-time correct embeddings and labels, and "more like these".

Both go through Feast's ``get_historical_features``, so every row holds the embedding
and metadata that were valid at that row's timestamp: a clip registered later is absent,
a clip re-registered with a new label shows the label of the time asked for.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from feast import FeatureStore

from hear_features.atomic import atomic_path
from hear_features.audio import AudioLimits, WindowConfig
from hear_features.clips import iter_clips
from hear_features.embedding import Encoder
from hear_features.errors import ConfigError, HearFeaturesError, InputShapeError
from hear_features.featurestore.repo import EMBEDDINGS_VIEW, Tables, tables
from hear_features.featurestore.search import similar_clips
from hear_features.featurestore.tables import EMBEDDING_SCHEMA, read_table

log = logging.getLogger(__name__)

EMBEDDING_FEATURES = (
    "embedding",
    "model_id",
    "recording_id",
    "subject_id",
    "label",
    "dataset",
    "device",
    "audio_uri",
    "offset_s",
)
TIMESTAMP_COLUMN = "event_timestamp"
_ROW = "__row__"


class UnknownClipError(HearFeaturesError):
    """Clip ids that the store has never seen."""

    http_status = 404


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
    """Check the two required columns and parse timestamps (UTC) with row-level messages."""
    missing = [c for c in ("clip_id", TIMESTAMP_COLUMN) if c not in frame.columns]
    if missing:
        raise ConfigError(
            f"{name} lacks column(s) {', '.join(missing)} "
            f"(has: {', '.join(map(str, frame.columns))})"
        )
    if frame.empty:
        raise ConfigError(f"{name} has no rows")
    frame = frame.copy()
    frame["clip_id"] = frame["clip_id"].astype(str)
    parsed = pd.to_datetime(frame[TIMESTAMP_COLUMN], utc=True, errors="coerce", format="ISO8601")
    if parsed.isna().any():
        i = int(parsed.isna().to_numpy().argmax())
        raise ConfigError(
            f"{name}, row {i + 1}: event_timestamp {frame[TIMESTAMP_COLUMN].iloc[i]!r} "
            "is not an ISO 8601 date/time"
        )
    frame[TIMESTAMP_COLUMN] = parsed.astype("datetime64[us, UTC]")
    return frame


def training_set(store: FeatureStore, entities: pd.DataFrame) -> pd.DataFrame:
    """Embeddings and metadata valid at each entity row's timestamp, in input order.

    Entity columns named like a stored feature (a ``label`` column of your own, say) are
    kept as ``given_<name>``, next to the stored value. Clip ids that were never
    registered are refused (a typo would otherwise come back as a row of nulls); a clip
    registered after a row's timestamp gives nulls in that row, as point-in-time reads do.
    """
    entities = validate_entities(entities)
    _refuse_unknown(tables(store), entities["clip_id"])
    renames = {c: f"given_{c}" for c in entities.columns if c in EMBEDDING_FEATURES}
    entity_df = entities.rename(columns=renames).assign(**{_ROW: np.arange(len(entities))})
    features = [f"{EMBEDDINGS_VIEW}:{name}" for name in EMBEDDING_FEATURES]
    frame = store.get_historical_features(entity_df=entity_df, features=features).to_df()
    frame = frame.sort_values(_ROW).drop(columns=[_ROW]).reset_index(drop=True)
    ordered = [c for c in entity_df.columns if c != _ROW] + [
        c for c in EMBEDDING_FEATURES if c in frame
    ]
    return frame[ordered]


def _refuse_unknown(where: Tables, clip_ids: pd.Series) -> None:
    known: set[str] = set()
    for path in (where.registrations, where.embeddings):
        if path.exists():
            known.update(pq.read_table(path, columns=["clip_id"])["clip_id"].to_pylist())
    unknown = sorted(set(clip_ids) - known)
    if unknown:
        shown = ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        raise UnknownClipError(f"{len(unknown)} unknown clip id(s), never registered: {shown}")


def write_training_set(frame: pd.DataFrame, out: Path) -> None:
    """Write a training set to Parquet atomically (embeddings as list<float32>)."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if "embedding" in table.column_names:
        i = table.column_names.index("embedding")
        table = table.set_column(i, "embedding", table["embedding"].cast(pa.list_(pa.float32())))
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def latest_embeddings(tables: Tables) -> tuple[list[str], np.ndarray, set[str]]:
    """The newest stored vector of every clip: (clip ids, float32 matrix, model ids)."""
    emb = read_table(tables.embeddings, EMBEDDING_SCHEMA)
    if emb.num_rows == 0:
        return [], np.zeros((0, 512), dtype=np.float32), set()
    frame = emb.select(["clip_id", TIMESTAMP_COLUMN, "created"]).to_pandas()
    frame["i"] = np.arange(len(frame))
    frame = frame.sort_values([TIMESTAMP_COLUMN, "created"]).drop_duplicates("clip_id", keep="last")
    rows = emb.take(pa.array(frame["i"].to_numpy()))
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
) -> pd.DataFrame:
    """The ``k`` stored clips nearest to each seed, as training-set rows with provenance.

    Seeds are stored clip ids, or the windows of an audio file (embedded with
    ``encoder``, which must be the model the store was built with). Seeds never appear
    among the neighbours; a clip near several seeds appears once, for its nearest seed.
    Neighbours come from the online store's vector index, through Feast.
    """
    if k < 1:
        raise InputShapeError(f"k must be at least 1, got {k}")
    seeds = _stored_seeds(store, seed_ids)
    if audio is not None:
        seeds += _audio_seeds(audio, encoder, window_config, limits)
    if not seeds:
        raise ConfigError("give at least one seed clip id or an audio file")

    excluded = set(seed_ids)
    best: dict[str, tuple[float, str]] = {}  # clip -> (distance, seed)
    for seed, vector in seeds:
        hits = similar_clips(store, vector, k + len(excluded), features=("model_id",))
        if (
            encoder is not None
            and audio is not None
            and hits
            and hits[0]["model_id"] != encoder.model_id
        ):
            raise ConfigError(
                f"the store was built with {hits[0]['model_id']}; "
                f"the audio seed was embedded with {encoder.model_id}"
            )
        for hit in [h for h in hits if h["clip_id"] not in excluded][:k]:
            clip, distance = hit["clip_id"], float(hit["distance"])
            if clip not in best or distance < best[clip][0]:
                best[clip] = (distance, seed)
    ranked = sorted(best.items(), key=lambda item: item[1][0])
    entities = pd.DataFrame(
        {
            "clip_id": [clip for clip, _ in ranked],
            TIMESTAMP_COLUMN: [at or dt.datetime.now(dt.UTC)] * len(ranked),
            "seed_id": [seed for _, (_, seed) in ranked],
            "distance": [distance for _, (distance, _) in ranked],
        }
    )
    entities["rank"] = entities.groupby("seed_id")["distance"].rank(method="first").astype(int)
    return training_set(store, entities)


def _stored_seeds(store: FeatureStore, seed_ids: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    if not seed_ids:
        return []
    found = store.get_online_features(
        features=[f"{EMBEDDINGS_VIEW}:embedding"], entity_rows=[{"clip_id": s} for s in seed_ids]
    ).to_dict()["embedding"]
    unknown = [s for s, v in zip(seed_ids, found, strict=True) if v is None]
    if unknown:
        raise UnknownClipError(f"unknown clip id(s): {', '.join(unknown[:10])}")
    return [(s, np.asarray(v, dtype=np.float32)) for s, v in zip(seed_ids, found, strict=True)]


def _audio_seeds(
    audio: Path,
    encoder: Encoder | None,
    window_config: WindowConfig | None,
    limits: AudioLimits | None,
) -> list[tuple[str, np.ndarray]]:
    if encoder is None:
        raise ConfigError("an audio seed needs an encoder")
    windows = list(iter_clips(audio, window_config, limits))
    if not windows:
        raise ConfigError(f"{audio} has no window loud enough to use as a seed")
    vectors = encoder.encode(np.stack([samples for _, samples in windows]))
    return [
        (f"{audio.name}@{ref.offset_s:.2f}s", v)
        for (ref, _), v in zip(windows, vectors, strict=True)
    ]
