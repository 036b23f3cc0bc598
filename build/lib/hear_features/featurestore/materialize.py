"""The work behind ``feast materialize``: embed what is pending, append it, send it online.

For the embeddings view (:func:`materialize_embeddings`):

1. read both tables and refuse to mix models (a table made by another model);
2. for each registration row without an embeddings row as new as itself (same clip and
   event timestamp, created later: a registration corrected in place, with the same
   timestamp, needs a new row), reuse the vector already computed for that clip, or
   embed it: once per (audio content, model). The new row carries the registration's
   metadata and study columns;
3. append the new rows to the embeddings Parquet atomically;
4. (:mod:`~hear_features.featurestore.online_send`) write to the online store the rows
   of the task's window and every row not yet confirmed online
   (:mod:`~hear_features.featurestore.watermark`), straight from memory rather than
   reading the Parquet back, and move the watermark.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hear_features.audio import windows_at
from hear_features.audio.sources import AudioSources
from hear_features.clips import ClipRef, content_hash
from hear_features.embedding import Encoder, embed_recordings
from hear_features.embeddings_file import embedding_column
from hear_features.errors import (
    AudioError,
    MaterializationError,
    ModelMismatchError,
    SourceRefused,
)
from hear_features.featurestore.tables import append_rows, read_table
from hear_features.featurestore.watermark import EmbedStats
from hear_features.schema import (
    CLIP_FIELDS,
    CREATED,
    EMBEDDING,
    EMBEDDING_SCHEMA,
    EVENT_TIMESTAMP,
    JOIN_KEY,
    MODEL_ID,
    REGISTRATION_SCHEMA,
    SAMPLE_RATE,
)
from hear_features.study import StudyColumns

log = logging.getLogger(__name__)

#: (uri, problem) of a recording that could not be embedded.
Problem = tuple[str, str]


#: The registration columns the embedding step reads, per clip.
CLIP_COLUMNS = (JOIN_KEY, "recording_id", "audio_uri", "offset_s", "content_hash")


class ClipEmbedding(Protocol):
    """Where the embedding step runs (``executor:`` in ``feature_store.yaml``).

    Called with one dict per clip (:data:`CLIP_COLUMNS`) and a progress callback that
    takes the number of clips just embedded; returns clip id -> float32 vector [512] for
    every clip that could be embedded, and the recordings that could not.
    """

    def __call__(
        self, rows: list[dict[str, Any]], on_batch: Callable[[int], Any] | None
    ) -> tuple[dict[str, np.ndarray], list[Problem]]: ...


class LocalEmbedding:
    """Executor ``local``: the clips are decoded and embedded in this process."""

    def __init__(
        self, encoder: Callable[[], Encoder], sources: AudioSources, batch_size: int
    ) -> None:
        """``encoder`` is called only when something needs embedding (a run with nothing
        new never loads TensorFlow)."""
        self.encoder = encoder
        self.sources = sources
        self.batch_size = batch_size

    def __call__(
        self, rows: list[dict[str, Any]], on_batch: Callable[[int], Any] | None
    ) -> tuple[dict[str, np.ndarray], list[Problem]]:
        return embed_clip_rows(rows, self.encoder(), self.sources, self.batch_size, on_batch)


@dataclass(frozen=True)
class EmbedResult:
    """What :meth:`Embedder.embed_pending` did."""

    stats: EmbedStats
    #: The recordings that could not be embedded, with the reason.
    problems: list[Problem]
    #: The whole embeddings table after the append.
    table: pa.Table
    #: Clip ids registered but refused (their recording is in ``problems``): no view may
    #: send them online.
    refused: frozenset[str] = frozenset()
    #: Clips of a file registered again since, with other content: the file no longer
    #: holds them, so they are never embedded nor sent online.
    superseded: frozenset[str] = frozenset()

    def summary(self, view: str) -> str:
        """One line for the ``feast materialize`` output."""
        s = self.stats
        return (
            f"{view}: embedded {s.embedded} clips with {s.model_id} (reused {s.reused}, "
            f"already stored {s.already_stored}, failed {s.failed}"
            f"{f', superseded {s.superseded}' if s.superseded else ''}); "
            f"{s.sent_online} rows written online"
        )

    def refusal(self) -> MaterializationError | None:
        """The error that fails the run when recordings could not be embedded."""
        if not self.problems:
            return None
        listing = "; ".join(f"{uri}: {problem}" for uri, problem in self.problems[:10])
        return MaterializationError(
            f"{len(self.problems)} recording(s) could not be embedded; their "
            f"{len(self.refused)} clip(s) went online in no view "
            f"(the other clips were stored): {listing}"
        )


class Embedder:
    """Embeds the registration rows that have no vector yet, and appends them."""

    def __init__(
        self,
        embedding: ClipEmbedding,
        model_id: Callable[[], str],
        study: StudyColumns = StudyColumns(),
    ) -> None:
        """``embedding`` does the per-recording work (:class:`LocalEmbedding`, or Ray's);
        ``model_id`` names the model without loading it; ``study``: the declared study
        columns, copied from registrations to embeddings."""
        self.embedding = embedding
        self.model_id = model_id
        self.study = study
        self.registration_schema = study.extend(REGISTRATION_SCHEMA)
        self.embedding_schema = study.extend(EMBEDDING_SCHEMA)

    def embed_pending(
        self,
        registrations: Path,
        embeddings: Path,
        until: dt.datetime,
        bar: Callable[[int], Any] | None = None,
    ) -> EmbedResult:
        """Append an embeddings row for every registration row (up to ``until``) lacking one.

        Returns what was done, the recordings that failed and their clips, and the whole
        embeddings table as it now is. ``bar(total)`` makes a progress bar (Feast's tqdm
        builder).
        """
        reg = read_table(registrations, self.registration_schema)
        ts = reg[EVENT_TIMESTAMP]
        reg = reg.filter(pc.less_equal(ts, pa.scalar(until, ts.type)))
        emb = read_table(embeddings, self.embedding_schema)
        model_id = self.model_id()
        stats = EmbedStats(model_id=model_id)
        _refuse_other_models(emb, model_id, embeddings)

        pending = reg.filter(_lacking_embeddings(reg, emb))
        stats.already_stored = reg.num_rows - pending.num_rows
        if pending.num_rows == 0:
            return EmbedResult(stats, [], emb)

        vectors = _vectors_by_clip(emb)
        superseded = _superseded(reg) - vectors.keys()
        missing = {
            row[JOIN_KEY]: row
            for row in pending.select(list(CLIP_COLUMNS)).to_pylist()
            if row[JOIN_KEY] not in vectors and row[JOIN_KEY] not in superseded
        }
        problems: list[Problem] = []
        if missing:
            progress = bar(len(missing)) if bar is not None else None
            try:
                computed, problems = self.embedding(
                    list(missing.values()), progress.update if progress is not None else None
                )
            finally:
                if progress is not None:
                    progress.close()
            vectors.update(computed)
            stats.embedded = len(computed)
        pending_ids = pending[JOIN_KEY].to_pylist()
        ready = pending.filter(pa.array([c in vectors for c in pending_ids]))
        stats.superseded = sum(c in superseded for c in pending_ids)
        stats.failed = pending.num_rows - ready.num_rows - stats.superseded
        # Rows that got a vector without an encoder call of their own: a stored clip
        # registered again, or a clip with several registrations in this run.
        stats.reused = ready.num_rows - stats.embedded
        if ready.num_rows:
            rows = _embedding_rows(ready, vectors, model_id, self.study)
            emb = append_rows(embeddings, rows, self.embedding_schema)
        refused = frozenset(pending_ids) - vectors.keys() - superseded
        return EmbedResult(stats, problems, emb, refused, frozenset(superseded))


def embed_clip_rows(
    rows: list[dict[str, Any]],
    encoder: Encoder,
    sources: AudioSources,
    batch_size: int,
    on_batch: Callable[[int], Any] | None = None,
) -> tuple[dict[str, np.ndarray], list[Problem]]:
    """Decode and embed registered clips (one dict per clip, :data:`CLIP_COLUMNS`).

    The per-recording work of every executor: each recording is checked against the
    audio location policy and its registered content hash, decoded once, and cut at the
    registered offsets; encoder batches of ``batch_size`` clips span recordings. Returns
    clip id -> float32 vector [512], and (registered URI, problem) for each recording
    that failed (its clips get no vector).
    """
    by_uri: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_uri[row["audio_uri"]].append(row)
    uri_of: dict[str, str] = {}  # local path -> registered URI
    problems: list[Problem] = []
    for uri in by_uri:
        try:
            uri_of[str(sources.local_path(uri))] = uri
        except SourceRefused as exc:
            problems.append((uri, exc.problem))

    def clips_of(path: Path) -> Iterable[tuple[ClipRef, np.ndarray]]:
        clips = by_uri[uri_of[str(path)]]
        if content_hash(path) not in {r["content_hash"] for r in clips}:
            raise AudioError(
                path,
                "changed since it was registered (content hash differs); register it again",
            )
        by_start = {round(r["offset_s"] * SAMPLE_RATE): r for r in clips}
        for window in windows_at(path, list(by_start)):
            row = by_start[window.start]
            ref = ClipRef(row[JOIN_KEY], row["recording_id"], row["audio_uri"], row["offset_s"])
            yield ref, window.samples

    computed: dict[str, np.ndarray] = {}
    for rec in embed_recordings(
        [Path(p) for p in uri_of],
        encoder,
        batch_size=batch_size,
        clips_of=clips_of,
        on_batch=on_batch,
    ):
        uri = uri_of[rec.source]
        if rec.error is not None:
            problems.append((uri, str(getattr(rec.error, "problem", rec.error))))
            continue
        for ref, vec in zip(rec.clips, rec.vectors, strict=True):
            if vec is not None:
                computed[ref.clip_id] = vec
        if {r[JOIN_KEY] for r in by_uri[uri]} - computed.keys():
            problems.append((uri, "is shorter than when it was registered"))
    return computed, problems


def _refuse_other_models(emb: pa.Table, model_id: str, path: Path) -> None:
    others = sorted(set(emb[MODEL_ID].to_pylist()) - {model_id})
    if others:
        raise ModelMismatchError(
            f"the embeddings table {path} holds vectors of {', '.join(others)}, but the configured "
            f"encoder is {model_id}. Vectors of different models cannot be compared: configure "
            "the same model, or start a new feature repository (or move the table away) "
            "for the new one."
        )


def _lacking_embeddings(reg: pa.Table, emb: pa.Table) -> pa.Array:
    """Which registration rows need an embeddings row: the newest registration of each
    (clip, event time), unless an embeddings row of that clip and event time was created
    after it. (A registration corrected in place, with the same event time, supersedes
    the earlier one, whose embeddings row is older than the correction.)"""

    def newest(table: pa.Table) -> dict[tuple[Any, Any], Any]:
        found: dict[tuple[Any, Any], Any] = {}
        for clip, ts, created in zip(
            table[JOIN_KEY].to_pylist(),
            table[EVENT_TIMESTAMP].to_pylist(),
            table[CREATED].to_pylist(),
            strict=True,
        ):
            if found.get((clip, ts), created) <= created:
                found[(clip, ts)] = created
        return found

    embedded, latest = newest(emb), newest(reg)
    rows = zip(
        reg[JOIN_KEY].to_pylist(),
        reg[EVENT_TIMESTAMP].to_pylist(),
        reg[CREATED].to_pylist(),
        strict=True,
    )
    return pa.array(
        [
            latest[(c, t)] == created and ((made := embedded.get((c, t))) is None or made < created)
            for c, t, created in rows
        ],
        pa.bool_(),
    )


def _superseded(reg: pa.Table) -> frozenset[str]:
    """Clips whose file was registered again later with other content (the file changed
    and the user registered it again, as the error message asks): the file at that
    location no longer holds them."""
    columns = [reg[c].to_pylist() for c in (JOIN_KEY, "audio_uri", "content_hash", CREATED)]
    newest: dict[str, tuple[Any, str]] = {}
    for _, uri, digest, created in zip(*columns, strict=True):
        if uri not in newest or newest[uri][0] <= created:
            newest[uri] = (created, digest)
    return frozenset(
        clip for clip, uri, digest, _ in zip(*columns, strict=True) if newest[uri][1] != digest
    )


def _vectors_by_clip(emb: pa.Table) -> dict[str, np.ndarray]:
    """clip_id -> its stored vector (all rows of a clip share one, for one model)."""
    if emb.num_rows == 0:
        return {}
    matrix = np.stack(emb[EMBEDDING].to_numpy(zero_copy_only=False)).astype(np.float32)
    return dict(zip(emb[JOIN_KEY].to_pylist(), matrix, strict=True))


def _embedding_rows(
    ready: pa.Table, vectors: dict[str, np.ndarray], model_id: str, study: StudyColumns
) -> pa.Table:
    ids = ready[JOIN_KEY].to_pylist()
    now = dt.datetime.now(dt.UTC)
    return pa.table(
        {
            **{f.name: ready[f.name] for f in (*CLIP_FIELDS, *study.fields)},
            EMBEDDING: embedding_column(np.stack([vectors[c] for c in ids])),
            MODEL_ID: pa.array([model_id] * len(ids), pa.string()),
            EVENT_TIMESTAMP: ready[EVENT_TIMESTAMP],
            CREATED: pa.array([now] * len(ids), EMBEDDING_SCHEMA.field(CREATED).type),
        }
    )
