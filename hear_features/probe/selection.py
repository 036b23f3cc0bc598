"""Which units a probe runs on: embedded clips from the store, metadata as of one time.

Vectors come from the embeddings table the repository's Feast config points to (the
newest row of each clip; a clip's vector depends only on its audio and the store's one
model). Everything else (labels, subject, dataset, sample rate, any column a view gains
later such as study metadata, and every feature of any other view on the ``clip``
entity, such as a label view of a study) comes from Feast's ``get_historical_features``
at one point in time, so a label corrected after that time, or a clip registered after
it, cannot leak into the probe. ``--where`` conditions and the recording level are
applied afterwards, on whatever columns the views returned.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from feast import FeatureStore
from feast.errors import FeastObjectNotFoundException

from hear_features import where as where_mod
from hear_features.errors import ProbeError
from hear_features.featurestore.forget import pending
from hear_features.featurestore.repo import tables, views
from hear_features.featurestore.tables import reading
from hear_features.featurestore.training import latest_embeddings, refuse_while_materializing
from hear_features.schema import EMBEDDING, ENTITY, EVENT_TIMESTAMP

log = logging.getLogger(__name__)

#: Column naming the unit a row stands for: the clip id, or the recording id.
UNIT = "unit_id"
#: Columns of the clips behind each unit that the acoustic baseline reads audio from.
AUDIO_COLUMNS = ("clip_id", "audio_uri", "offset_s", "content_hash")


@dataclass
class Selection:
    """The units of a probe: one metadata row and one vector per unit, in the same order.

    ``frame`` has a :data:`UNIT` column and every metadata column; ``vectors`` is float32
    ``[n_units, dim]``. ``clips`` lists the clips behind the units (``clip_id``,
    :data:`UNIT`, and the audio columns when known). ``counts`` says how many clips were
    stored and why some were left out; ``source`` where they came from.
    """

    frame: pd.DataFrame
    vectors: np.ndarray
    model_id: str
    level: str = "clip"
    clips: pd.DataFrame = field(default_factory=pd.DataFrame)
    counts: dict[str, int] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def columns(self) -> list[str]:
        return [c for c in self.frame.columns if c != UNIT]


def from_frame(
    frame: pd.DataFrame,
    vectors: np.ndarray,
    *,
    model_id: str,
    source: dict[str, Any] | None = None,
) -> Selection:
    """A clip-level selection from a metadata frame (with ``clip_id``) and its vectors.

    For data that is not in a feature store (an exported training set, a benchmark).
    Without a ``recording_id`` column every clip is its own recording.
    """
    if "clip_id" not in frame.columns:
        raise ProbeError("the metadata frame needs a clip_id column")
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim != 2 or len(matrix) != len(frame):
        raise ProbeError(
            f"{len(frame)} metadata rows but vectors of shape {list(np.shape(vectors))}"
        )
    if not np.isfinite(matrix).all():
        raise ProbeError("the vectors contain NaN or infinite values")
    if frame["clip_id"].duplicated().any():
        raise ProbeError("clip ids repeat in the metadata frame; give one row per clip")
    frame = frame.reset_index(drop=True).copy()
    frame["clip_id"] = frame["clip_id"].astype(str)
    if "recording_id" not in frame.columns:
        frame["recording_id"] = frame["clip_id"]
    frame[UNIT] = frame["clip_id"]
    clips = frame[[c for c in ("clip_id", UNIT, *AUDIO_COLUMNS[1:]) if c in frame.columns]]
    counts = {"clips_stored": len(frame), "clips_selected": len(frame)}
    return Selection(frame, matrix, model_id, "clip", clips.copy(), counts, dict(source or {}))


def from_store(store: FeatureStore, at: dt.datetime | None = None) -> Selection:
    """Every clip with a stored vector, with its metadata as of ``at`` (default: now).

    Clips not yet registered or embedded at ``at`` are left out (and counted).
    """
    at = at or dt.datetime.now(dt.UTC)
    where = tables(store)
    ids, matrix, model_ids = latest_embeddings(where, pending(store.config))
    if not ids:
        raise ProbeError(f"no embedded clips in {where.embeddings}: run `feast materialize` first")
    if len(model_ids) > 1:
        raise ProbeError(
            f"{where.embeddings} holds vectors of several models ({', '.join(sorted(model_ids))})"
        )
    metadata, read_views = _metadata_at(store, ids, at)
    # No registration valid at `at` (recording_id is always set), or no vector yet.
    known = metadata["recording_id"].notna() & metadata["model_id"].notna()
    order = np.argsort(np.asarray(ids))
    frame = metadata.iloc[order][known.to_numpy()[order]].reset_index(drop=True)
    keep = order[known.to_numpy()[order]]
    if frame.empty:
        raise ProbeError(
            f"none of the {len(ids)} stored clips was registered and embedded by "
            f"{at.isoformat()}; choose a later --at"
        )
    frame[UNIT] = frame["clip_id"]
    clips = frame[[c for c in ("clip_id", UNIT, *AUDIO_COLUMNS[1:]) if c in frame.columns]]
    counts = {
        "clips_stored": len(ids),
        "clips_not_yet_registered_or_embedded": int((~known).sum()),
        "clips_selected": len(frame),
    }
    source = {
        "repo": str(store.repo_path),
        "embeddings_table": str(where.embeddings),
        "as_of": at.isoformat(),
        "views": read_views,
    }
    return Selection(
        frame, matrix[keep], next(iter(model_ids)), "clip", clips.copy(), counts, source
    )


def _metadata_at(
    store: FeatureStore, ids: list[str], at: dt.datetime
) -> tuple[pd.DataFrame, list[str]]:
    """Every feature (but the vector) of every view keyed by clip, point in time.

    The two views of the project come first; any other feature view on the ``clip``
    entity (a label view a study adds, say) follows, in name order. A feature name
    already taken by an earlier view is not requested again. Returns one row per id,
    in the order of ``ids``, and the views read.
    """
    names_of = views(store)
    own = (names_of.registrations, names_of.embeddings)
    try:
        first = [store.get_feature_view(name) for name in own]
    except FeastObjectNotFoundException as exc:
        raise ProbeError(
            f"the feature views are not registered: run `feast apply` ({exc})"
        ) from exc
    others = sorted(
        (v for v in store.list_feature_views() if ENTITY in v.entities and v.name not in own),
        key=lambda v: v.name,
    )
    read = [*first, *others]
    features: list[str] = []
    taken = {EMBEDDING}
    for view in read:
        for f in view.features:
            if f.name not in taken:
                taken.add(f.name)
                features.append(f"{view.name}:{f.name}")
    entities = pd.DataFrame(
        {"clip_id": ids, EVENT_TIMESTAMP: pd.Timestamp(at).tz_convert("UTC")}
    ).astype({EVENT_TIMESTAMP: "datetime64[us, UTC]"})
    refuse_while_materializing(store, [v.name for v in read])
    where = tables(store)
    with reading(where.registrations), reading(where.embeddings):
        frame = store.get_historical_features(entity_df=entities, features=features).to_df()
    frame = frame.drop(columns=[EVENT_TIMESTAMP]).drop_duplicates("clip_id")
    return frame.set_index("clip_id").reindex(ids).reset_index(), [v.name for v in read]


def filtered(selection: Selection, conditions: list[str]) -> Selection:
    """The units that meet every ``--where`` condition (see :mod:`where`)."""
    if not conditions:
        return selection
    parsed = [where_mod.parse(c) for c in conditions]
    mask = where_mod.apply(selection.frame, parsed)
    if not mask.any():
        raise ProbeError(
            f"no clip meets --where {' AND '.join(conditions)} "
            f"(of {len(selection)} selected before filtering)"
        )
    counts = {**selection.counts, "clips_filtered_out": int((~mask).sum())}
    counts["clips_selected"] = int(mask.sum())
    return replace(subset(selection, mask), counts=counts)


def subset(selection: Selection, mask: np.ndarray) -> Selection:
    """The units where ``mask`` is true, with their vectors and clips."""
    kept = set(selection.frame.loc[mask, UNIT])
    return replace(
        selection,
        frame=selection.frame[mask].reset_index(drop=True),
        vectors=selection.vectors[mask],
        clips=selection.clips[selection.clips[UNIT].isin(kept)].reset_index(drop=True),
    )


def to_recordings(selection: Selection, must_agree: list[str]) -> Selection:
    """One unit per recording: the mean of its window vectors, its first metadata row.

    Columns in ``must_agree`` (the target and the group) must hold one value per
    recording; otherwise averaging would mix labels.
    """
    frame = selection.frame
    codes, recordings = pd.factorize(frame["recording_id"], sort=True)
    for column in must_agree:
        if column in frame.columns:
            varying = frame.groupby("recording_id", dropna=False)[column].nunique(dropna=False)
            bad = varying[varying > 1]
            if len(bad):
                raise ProbeError(
                    f"--level recording: column {column!r} differs between the windows of "
                    f"{len(bad)} recording(s), e.g. {bad.index[0]}; probe at --level clip"
                )
    sums = np.zeros((len(recordings), selection.vectors.shape[1]), dtype=np.float64)
    np.add.at(sums, codes, selection.vectors)
    sizes = np.bincount(codes, minlength=len(recordings))
    vectors = (sums / sizes[:, None]).astype(np.float32)
    first = pd.Series(np.arange(len(frame))).groupby(codes).min().to_numpy()
    rows = frame.iloc[first].reset_index(drop=True)
    rows[UNIT] = rows["recording_id"].astype(str)
    rows["windows"] = sizes
    unit_of_clip = dict(zip(frame[UNIT], frame["recording_id"].astype(str), strict=True))
    clips = selection.clips.copy()
    clips[UNIT] = clips[UNIT].map(unit_of_clip)
    counts = {**selection.counts, "recordings": len(rows)}
    return replace(
        selection, frame=rows, vectors=vectors, level="recording", clips=clips, counts=counts
    )
