"""What earlier registrations say about a new one, for ``hear-features register``.

Unchanged (nothing to append), the same audio moving to another subject (it would sit
in train and test at once for a grouped split), or a file that held other audio when
it was registered before (changed in place: its earlier clips stay stored and
searchable until forgotten).
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc

from hear_features.featurestore.tables import newest_per_key
from hear_features.schema import CREATED, EVENT_TIMESTAMP, JOIN_KEY


def state_of(row: dict[str, object], columns: Iterable[str]) -> tuple[object, ...]:
    return tuple(row.get(c) for c in columns)


def other_subject(
    rows: list[dict[str, object]],
    latest: dict[str, tuple[object, ...]],
    columns: tuple[str, ...],
) -> str | None:
    """Why registering ``rows`` moves audio from one subject to another, if it does: the
    same audio (same clip ids) registered before from another file for another subject.
    Such a copy would sit in train and test at once for a grouped split, so say it."""
    before = latest.get(str(rows[0][JOIN_KEY])) if rows else None
    if before is None:
        return None
    was = dict(zip(columns, before, strict=True))
    now = rows[0]
    if was["audio_uri"] == now["audio_uri"] or was["subject_id"] in (None, now["subject_id"]):
        return None
    return (
        f"has the same audio content as {was['audio_uri']}, registered for subject "
        f"{was['subject_id']}; it now belongs to subject {now['subject_id']} (the newest "
        "registration wins)"
    )


def latest_state(table: pa.Table, columns: tuple[str, ...]) -> dict[str, tuple[object, ...]]:
    """For each clip, the metadata (``columns``) of its newest registration."""
    latest = newest_per_key(table, JOIN_KEY, EVENT_TIMESTAMP, CREATED)
    return {
        row[JOIN_KEY]: tuple(row[c] for c in columns)
        for row in latest.select([JOIN_KEY, *columns]).to_pylist()
    }


def recordings_by_uri(existing: pa.Table) -> dict[str, list[str]]:
    """audio_uri -> the recording ids (contents) registered from it, by their newest
    registration, oldest first: the last is what the file held when last registered."""
    table = existing.take(pc.sort_indices(existing, [(CREATED, "ascending")]))
    held: dict[str, list[str]] = {}
    for uri, rec in zip(
        table["audio_uri"].to_pylist(), table["recording_id"].to_pylist(), strict=True
    ):
        order = held.setdefault(uri, [])
        if rec in order:
            order.remove(rec)
        order.append(rec)
    return held


def replaced_by_other_audio(recordings: Iterable[str]) -> str:
    before = sorted(recordings)
    ids = " ".join(f"--recording {r}" for r in before)
    return (
        f"held other audio when registered before (recording {', '.join(before)}); "
        "those clips stay in the store (and searchable, once materialised): remove them with "
        f"`hear-features forget {ids}`"
    )
